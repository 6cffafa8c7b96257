"""The token cache: each source tokenised once per split into one flat array, every document ending in eos."""
import dataclasses
import time
from collections.abc import Iterable, Iterator

import numpy as np
from absl import logging
from etils import epath

from headless_jax.data.cache import cache_key, load_array, save_array
from headless_jax.data.sources import Source, no_text_error
from headless_jax.data.split import split_document
from headless_jax.data.tokenizer import Tokenizer

SPLITS = ("train", "heldout")
_ENCODE_BATCH_CHARS = 1 << 24  # text handed to the tokenizer's threads at once: bounds memory on big sources


@dataclasses.dataclass(frozen=True)
class TokenStream:
    tokens: np.ndarray  # [N] uint16 or int32: the documents back to back, each ending in eos
    doc_ends: np.ndarray  # [D] int64: where each document ends in `tokens` (exclusive)


def tokenize_source(source: Source, tokenizer: Tokenizer, heldout_fraction: float,
                    cache_dir: epath.PathLike) -> dict[str, TokenStream]:
    """The train and heldout TokenStreams of `source`, from `cache_dir` or tokenised (and cached) now.

    Cache files: tokens_<key>_<split>.npy and tokens_<key>_<split>_doc_ends.npy, the key hashing the source's
    fingerprint, the held-out fraction and the tokenizer. The tokens file is written last: it marks the entry
    complete."""
    key = cache_key(source.fingerprint, heldout_fraction, tokenizer.fingerprint)
    paths = {split: (epath.Path(cache_dir) / f"tokens_{key}_{split}.npy",
                     epath.Path(cache_dir) / f"tokens_{key}_{split}_doc_ends.npy") for split in SPLITS}
    if all(tokens_path.exists() for tokens_path, _ in paths.values()):
        return {split: TokenStream(load_array(tokens), load_array(ends)) for split, (tokens, ends) in paths.items()}
    start = time.perf_counter()
    streams = _tokenize(source, tokenizer, heldout_fraction)
    for split, (tokens_path, ends_path) in paths.items():
        save_array(ends_path, streams[split].doc_ends)
        save_array(tokens_path, streams[split].tokens)
    logging.info("tokenised %s: %s in %.1f s", source.spec,
                 {split: len(stream.tokens) for split, stream in streams.items()}, time.perf_counter() - start)
    return streams


def _tokenize(source: Source, tokenizer: Tokenizer, heldout_fraction: float) -> dict[str, TokenStream]:
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    documents = {split: [] for split in SPLITS}  # per split: token arrays, one per non-empty document part
    for batch in _batches_by_chars(source.documents(), _ENCODE_BATCH_CHARS):
        parts_by_split = zip(*(split_document(document, heldout_fraction) for document in batch))
        for split, parts in zip(SPLITS, parts_by_split):
            ids = tokenizer.encode_batch([part for part in parts if part])
            documents[split] += [np.array(doc + [tokenizer.eos_id], dtype) for doc in ids]
    if not documents["train"]:
        raise no_text_error(source)
    return {split: TokenStream(np.concatenate(docs) if docs else np.zeros(0, dtype),
                               np.cumsum([len(doc) for doc in docs], dtype=np.int64))
            for split, docs in documents.items()}


def _batches_by_chars(documents: Iterable[str], max_chars: int) -> Iterator[list[str]]:
    batch, chars = [], 0
    for document in documents:
        batch.append(document)
        chars += len(document)
        if chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch
