"""Token rows for causal-LM evaluation, as pure functions: perplexity windows and last-word examples.

A row is a token sequence (at most seq_len) and the range of its next-token predictions that count: prediction
i of a row predicts row token i + 1. Every text starts with eos as its context token — the training stream puts
each document after the previous one's eos — so that its first token is scored too.
"""
import dataclasses
import re

_TRAILING_NON_WORD = re.compile(r"[\W_]+$")


@dataclasses.dataclass(frozen=True)
class Row:
    tokens: list[int]  # at most seq_len
    first: int  # predictions first..last-1 count (prediction i predicts tokens[i + 1])
    last: int


def perplexity_rows(tokens: list[int], seq_len: int, stride: int) -> list[Row]:
    """Windows over `tokens` in which every token after the first is predicted exactly once.

    The first window predicts tokens 1..seq_len-1; each next window ends `stride` tokens later and predicts only
    its new tokens, with the seq_len - stride tokens before them as extra context.
    """
    if not 0 < stride <= seq_len or seq_len < 2:
        raise ValueError(f"stride={stride} must lie in 1..seq_len={seq_len} (and seq_len >= 2)")
    end = min(seq_len, len(tokens))
    rows = [Row(tokens[:end], 0, end - 1)] if end >= 2 else []
    while end < len(tokens):
        new_end = min(end + stride, len(tokens))
        begin = new_end - seq_len
        rows.append(Row(tokens[begin:new_end], end - 1 - begin, new_end - 1 - begin))
        end = new_end
    return rows


def last_word_start(text: str) -> int:
    """Character index where the last whitespace-separated word of `text` begins (ValueError if none)."""
    stripped = text.rstrip()
    start = max(stripped.rfind(c) for c in " \t\n\r") + 1
    if start == 0 or start == len(stripped):
        raise ValueError(f"last word: {text[:60]!r} has no words before its last word; every passage needs a "
                         "context")
    return start


def last_word_row(pieces: list[tuple[int, int, int]], text: str, eos_id: int, seq_len: int) -> Row | None:
    """The row that predicts the last word of `text` from the words before it.

    pieces: (token id, begin, end) byte offsets in text's UTF-8 of text's tokens, in order. The word's tokens
    are those from the first one that reaches into the word (a leading-space token that also covers the word's
    start belongs to it; zero-width byte-fallback tokens at its start too). The context is cut from the left to
    fit seq_len; None if the word alone does not fit.
    """
    text = text.rstrip()
    word_byte = len(text[:last_word_start(text)].encode("utf-8"))
    tokens = [eos_id] + [token for token, _, _ in pieces]
    first_target = 1 + next(i for i, (_, begin, end) in enumerate(pieces) if end > word_byte or begin >= word_byte)
    begin = max(0, len(tokens) - seq_len)
    if first_target - begin < 1:
        return None
    return Row(tokens[begin:], first_target - 1 - begin, len(tokens) - 1 - begin)


def paragraph_passages(text: str, min_words: int) -> list[str]:
    """LAMBADA-style passages from running text: paragraphs of at least `min_words` words, cut after their last
    word (closing punctuation and quotes removed, so that the target is a word). Line breaks inside a paragraph
    stay: joining hard-wrapped lines would make passages unlike the text the model was trained on."""
    passages = []
    for paragraph in re.split(r"\n\s*\n", text):
        passage = _TRAILING_NON_WORD.sub("", paragraph.strip())
        if len(passage.split()) >= min_words:
            passages.append(passage)
    return passages
