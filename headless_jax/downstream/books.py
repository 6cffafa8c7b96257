"""The offline task: which of the embedded novels does a passage come from?

Passages are cut only from each book's held-out tail — exactly the split pretraining kept out (same
`heldout_fraction`), so no passage was seen in pretraining. Each tail is cut into consecutive passages of
`passage_words` words; every book contributes the same number to each split (balanced: chance is 1/7), and
the splits are contiguous stretches of the tail (train, then dev, then test), so neighbouring passages — which
share names and scenes — rarely straddle splits. Fully deterministic.
"""
import ml_collections

from headless_jax.data import book_names, split_books
from headless_jax.data.errors import DataError
from headless_jax.downstream.examples import Example, TaskData

SPLITS = ("train", "dev", "test")


def passages(text: str, passage_words: int) -> list[str]:
    """Consecutive whole passages of `passage_words` words (the incomplete last one is dropped)."""
    words = text.split()
    return [" ".join(words[i:i + passage_words]) for i in range(0, len(words) - passage_words + 1, passage_words)]


def load(heldout_fraction: float, cfg: ml_collections.ConfigDict) -> TaskData:
    """cfg: passage_words, passages_per_book (0: as many as the shortest tail allows), split_fractions,
    train_passages_per_book (0: the whole train stretch; K: its first K, the low-resource setting)."""
    if heldout_fraction <= 0:
        raise DataError("the books task needs held-out text, but the pretraining run held none out "
                        "(data.heldout_fraction=0); pretrain with data.heldout_fraction > 0")
    names = book_names()
    tails = {name: passages(heldout, cfg.passage_words) for name, (_, heldout) in split_books(heldout_fraction).items()}
    available = min(len(p) for p in tails.values())
    per_book = min(cfg.passages_per_book, available) if cfg.passages_per_book else available
    counts = split_counts(per_book, tuple(cfg.split_fractions))
    if min(counts) == 0:
        raise DataError(f"books task: {per_book} passages of {cfg.passage_words} words per book cannot fill the "
                        f"splits {SPLITS} with fractions {tuple(cfg.split_fractions)}; lower "
                        "--config.books.passage_words or pretrain with a larger data.heldout_fraction")
    if cfg.train_passages_per_book < 0:
        raise DataError(f"books task: books.train_passages_per_book={cfg.train_passages_per_book} is negative; give "
                        "K > 0 passages per book, or 0 for all of them")
    if cfg.train_passages_per_book > counts[0]:
        raise DataError(f"books task: books.train_passages_per_book={cfg.train_passages_per_book} exceeds the "
                        f"{counts[0]} training passages per book; lower it (0 uses all of them)")
    splits = {split: [] for split in SPLITS}
    for label, name in enumerate(names):
        start = 0
        for split, count in zip(SPLITS, counts):
            used = cfg.train_passages_per_book if split == "train" and cfg.train_passages_per_book else count
            splits[split] += [Example(text, None, label) for text in tails[name][start:start + used]]
            start += count
    return TaskData("books", "Books", len(names), ("accuracy",), splits["train"],
                    {"dev": splits["dev"], "test": splits["test"]}, ("test",))


def split_counts(total: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Passages per book in (train, dev, test): dev and test rounded down, train takes the rest."""
    dev, test = int(total * fractions[1] / sum(fractions)), int(total * fractions[2] / sum(fractions))
    return total - dev - test, dev, test
