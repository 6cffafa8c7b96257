"""The held-out split: the tail of every document is kept out of training, cut at a paragraph boundary."""
import math
import re

_BLANK_LINES = re.compile(r"\n{2,}")


def heldout_start(text: str, fraction: float) -> int:
    """Where the held-out tail of `text` begins.

    The tail is ceil(fraction · len) characters (so any non-empty document holds some out when fraction > 0),
    moved to the nearest paragraph start (after a blank line) within half that length, so that held-out
    passages start whole. Documents with no blank line near the cut are cut mid-text.
    """
    if fraction <= 0 or not text:
        return len(text)
    heldout_chars = math.ceil(fraction * len(text))
    cut = len(text) - heldout_chars
    slack = heldout_chars // 2
    lo, hi = max(0, cut - slack), min(len(text), cut + slack)
    paragraph_starts = [m.end() for m in _BLANK_LINES.finditer(text, lo, hi)]
    paragraph_starts = [start for start in paragraph_starts if start < len(text)]
    return min(paragraph_starts, key=lambda start: abs(start - cut), default=cut)


def split_document(text: str, fraction: float) -> tuple[str, str]:
    """(train, heldout) parts of a document; train + heldout == text."""
    start = heldout_start(text, fraction)
    return text[:start], text[start:]
