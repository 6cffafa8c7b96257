"""The embedded default corpus: seven public-domain novels shipped in headless_jax/corpus/ (see its README).

Each book is one document; training needs no download.
"""
import importlib.resources
import lzma

from headless_jax.data.split import split_document

_CORPUS = importlib.resources.files("headless_jax") / "corpus"
_SUFFIX = ".txt.xz"


def book_names() -> tuple[str, ...]:
    """Names of the embedded books, sorted (e.g. 'austen_emma'): the order of the embedded documents."""
    return tuple(sorted(f.name.removesuffix(_SUFFIX) for f in _CORPUS.iterdir() if f.name.endswith(_SUFFIX)))


def read_book(name: str) -> str:
    """Full text of one embedded book."""
    return lzma.decompress((_CORPUS / f"{name}{_SUFFIX}").read_bytes()).decode("utf-8")


def split_books(heldout_fraction: float) -> dict[str, tuple[str, str]]:
    """(train, heldout) text of every book by name, split as training splits it: the held-out tails are text
    pretraining never saw, e.g. for a 'which book is this passage from' downstream task."""
    return {name: split_document(read_book(name), heldout_fraction) for name in book_names()}
