"""The token store: the config's sources tokenised once into many shards, built in parallel, read by ranges.

    <store>/store.json                              what it holds: sources and their units, tokenizer, held-out
                                                    fraction, shard budget, dtype (a store of another config is
                                                    refused)
    <store>/shards/<source>/<unit>-<chunk>.<split>.tokens    raw little-endian tokens, each document + eos
    <store>/shards/<source>/<unit>-<chunk>.<split>.ends      int64 document ends within the shard
    <store>/ledger/<source>/<unit>-<chunk>.json     a finished shard's counts (written after its files)
    <store>/ledger/<source>/<unit>.json             a finished unit: its number of chunks

A source's units (files, books, record ranges: `Source.units`) are dealt to workers round-robin; a unit's
documents are cut into chunks of about `data.shard_chars` characters, so a worker holds one chunk at a time.
Every file is written atomically and the ledger last, so a killed build leaves only complete shards, and a
re-run builds only what the ledger lacks. The token stream of a source and split is its shards in order:
exactly what tokenising its documents one after the other gives.
"""
import dataclasses
import json
import time
from collections.abc import Iterator

import numpy as np
from absl import logging
from etils import epath

from headless_jax.data.cache import cache_key, write_atomically
from headless_jax.data.errors import DataError
from headless_jax.data.sources import Source
from headless_jax.data.split import split_document

SPLITS = ("train", "heldout")
FORMAT = 1
MANIFEST = "store.json"


@dataclasses.dataclass(frozen=True)
class TokenStream:
    tokens: "np.ndarray | ShardedTokens"  # [N]: the documents back to back, each ending in eos
    doc_ends: np.ndarray  # [D] int64: where each document ends in `tokens` (exclusive)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32)


def manifest(sources: list[Source], tokenizer, heldout_fraction: float, shard_chars: int) -> dict:
    """What a store built from `sources` with `tokenizer` holds: equal manifests, interchangeable stores."""
    return {"format": FORMAT, "tokenizer": tokenizer.fingerprint, "heldout_fraction": heldout_fraction,
            "shard_chars": shard_chars, "dtype": token_dtype(tokenizer.vocab_size).name,
            "sources": [{"name": s.name, "fingerprint": s.fingerprint, "units": [u.key for u in s.units()]}
                        for s in sources]}


def store_key(sources: list[Source], tokenizer, heldout_fraction: float, shard_chars: int) -> str:
    """A short name for the store of this data: the automatic store's directory under the cache."""
    return cache_key([s.fingerprint for s in sources], tokenizer.fingerprint, heldout_fraction, shard_chars)


def tokenize_documents(documents: list[str], tokenizer, heldout_fraction: float, dtype) -> dict[str, TokenStream]:
    """Each document's train part and held-out tail tokenised, each followed by eos (empty parts are skipped)."""
    parts_by_split = zip(*(split_document(document, heldout_fraction) for document in documents))
    streams = {}
    for split, parts in zip(SPLITS, parts_by_split):
        docs = [np.array(ids + [tokenizer.eos_id], dtype) for ids in tokenizer.encode_batch([p for p in parts if p])]
        streams[split] = TokenStream(np.concatenate(docs) if docs else np.zeros(0, dtype),
                                     np.cumsum([len(d) for d in docs], dtype=np.int64))
    return streams


def _chunks(documents: Iterator[str], max_chars: int) -> Iterator[list[str]]:
    chunk, chars = [], 0
    for document in documents:
        chunk.append(document)
        chars += len(document)
        if chars >= max_chars:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


class TokenStore:
    """A store directory (local or gs://) of the manifest `expected`."""

    def __init__(self, directory: epath.PathLike, expected: dict):
        self.directory, self.expected = epath.Path(directory), expected
        self.dtype = np.dtype(expected["dtype"])

    def _shard(self, source: str, unit: int, chunk: int, split: str, part: str) -> epath.Path:
        return self.directory / "shards" / source / f"{unit:05d}-{chunk:05d}.{split}.{part}"

    def _ledger(self, source: str, name: str) -> epath.Path:
        return self.directory / "ledger" / source / f"{name}.json"

    def check_manifest(self, create: bool) -> None:
        """Refuses a directory holding another configuration's store; with `create`, claims an empty one."""
        path = self.directory / MANIFEST
        if not path.exists():
            if not create:
                raise DataError(f"data.store={self.directory}: holds no token store ({MANIFEST} missing); build it "
                                "with python -m headless_jax.prepare --config=... --out=" + str(self.directory))
            write_atomically(path, json.dumps(self.expected, indent=1, sort_keys=True).encode())
            return
        found = json.loads(path.read_text())
        if found != self.expected:
            differing = sorted(k for k in set(found) | set(self.expected) if found.get(k) != self.expected.get(k))
            raise DataError(f"{self.directory} holds the token store of another configuration (it differs in "
                            f"{', '.join(differing)}); point data.store / --out at an empty or matching directory")

    def build(self, sources: list[Source], tokenizer, worker: int = 0, workers: int = 1) -> int:
        """Builds this worker's share of the units (unit number n of all sources goes to worker n % workers),
        skipping what the ledger holds; returns the number of shards written."""
        self.check_manifest(create=True)
        written, n = 0, -1
        for source in sources:
            for index, unit in enumerate(source.units()):
                n += 1
                if n % workers == worker and not self._ledger(source.name, f"{index:05d}").exists():
                    written += self._build_unit(source, index, unit, tokenizer)
        return written

    def _build_unit(self, source: Source, index: int, unit, tokenizer) -> int:
        written, chunk = 0, -1
        heldout, max_chars = self.expected["heldout_fraction"], self.expected["shard_chars"]
        for chunk, documents in enumerate(_chunks(unit.documents(), max_chars)):
            ledger = self._ledger(source.name, f"{index:05d}-{chunk:05d}")
            if ledger.exists():
                continue  # built before an interruption
            start = time.perf_counter()
            streams = tokenize_documents(documents, tokenizer, heldout, self.dtype)
            for split, stream in streams.items():
                write_atomically(self._shard(source.name, index, chunk, split, "tokens"), stream.tokens.tobytes())
                write_atomically(self._shard(source.name, index, chunk, split, "ends"), stream.doc_ends.tobytes())
            counts = {split: {"tokens": len(s.tokens), "documents": len(s.doc_ends)} for split, s in streams.items()}
            write_atomically(ledger, json.dumps({"chunk": chunk, "chars": sum(map(len, documents)),
                                                 **counts}).encode())
            logging.info("%s unit %d chunk %d: %s in %.1f s", source.name, index, chunk, counts,
                         time.perf_counter() - start)
            written += 1
        write_atomically(self._ledger(source.name, f"{index:05d}"), json.dumps({"chunks": chunk + 1}).encode())
        return written

    def missing_units(self) -> list[str]:
        return [f"{s['name']} unit {i} ({key})" for s in self.expected["sources"] for i, key in enumerate(s["units"])
                if not self._ledger(s["name"], f"{i:05d}").exists()]

    def streams(self, source: str, split: str, ranges: bool = False) -> TokenStream:
        """The token stream of one source and split, read from its shards (mapped when local, by byte ranges when
        remote or with `ranges`); raises DataError while the store is incomplete."""
        missing = self.missing_units()
        if missing:
            raise DataError(f"token store {self.directory} is incomplete ({len(missing)} units missing, e.g. "
                            f"{missing[0]}); finish it with python -m headless_jax.prepare --config=... "
                            f"--out={self.directory}")
        units = next(s["units"] for s in self.expected["sources"] if s["name"] == source)
        paths, lengths, ends = [], [], [np.zeros(0, np.int64)]
        for index in range(len(units)):
            for chunk in range(json.loads(self._ledger(source, f"{index:05d}").read_text())["chunks"]):
                count = json.loads(self._ledger(source, f"{index:05d}-{chunk:05d}").read_text())[split]
                if not count["tokens"]:
                    continue
                offset, path = sum(lengths), self._shard(source, index, chunk, split, "tokens")
                self._check_size(path, count["tokens"] * self.dtype.itemsize, f"{index:05d}-{chunk:05d}", source)
                paths.append(path)
                lengths.append(count["tokens"])
                ends.append(offset + np.frombuffer(self._shard(source, index, chunk, split, "ends").read_bytes(),
                                                   np.int64))
        return TokenStream(ShardedTokens(paths, lengths, self.dtype, ranges), np.concatenate(ends))


    def _check_size(self, path: epath.Path, expected: int, shard: str, source: str) -> None:
        """A shard whose file does not hold what its ledger entry counts (emptied, truncated) is refused."""
        found = path.stat().length if path.exists() else None
        if found != expected:
            raise DataError(f"{path}: holds {found if found is not None else 'no'} bytes where the ledger counts "
                            f"{expected}: the store is damaged; delete it and {self._ledger(source, shard)} (and "
                            f"{self._ledger(source, shard[:5])}), then re-run headless_jax.prepare to rebuild it")


class ShardedTokens:
    """Many shard files as one read-only token array: `len()` and integer-array indexing, reading only the
    positions asked for (a mapped file, or one byte range per row and shard)."""

    def __init__(self, paths: list[epath.Path], lengths: list[int], dtype: np.dtype, ranges: bool = False):
        self.paths, self.dtype = paths, np.dtype(dtype)
        self.starts = np.cumsum([0] + list(lengths))
        self.ranges = ranges or any("://" in str(p) for p in paths)
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every token (np.asarray): for small stores and tests; training reads rows."""
        return self[np.arange(len(self))].astype(dtype or self.dtype)

    def __getitem__(self, index) -> np.ndarray:
        index = np.asarray(index)
        rows = index.reshape(-1, index.shape[-1]) if index.ndim else index.reshape(1, 1)
        out = np.empty(rows.shape, self.dtype)
        for r, row in enumerate(rows):  # a row is a packed sequence: a contiguous span of few shards
            shard_of = np.searchsorted(self.starts, row, "right") - 1
            for shard in np.unique(shard_of):
                where = shard_of == shard
                out[r, where] = self._read(int(shard), row[where] - self.starts[shard])
        return out.reshape(index.shape)

    def _read(self, shard: int, positions: np.ndarray) -> np.ndarray:
        if not self.ranges:
            if shard not in self._maps:
                self._maps[shard] = np.memmap(self.paths[shard], self.dtype, mode="r")
            return self._maps[shard][positions]
        first, last = int(positions.min()), int(positions.max()) + 1
        with self.paths[shard].open("rb") as f:
            f.seek(first * self.dtype.itemsize)
            span = np.frombuffer(f.read((last - first) * self.dtype.itemsize), self.dtype)
        return span[positions - first]

