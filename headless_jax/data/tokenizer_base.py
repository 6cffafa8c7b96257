"""The tokenizer interface the data, objectives and downstream jobs use, whichever kind is behind it."""
import abc
import functools
import os
from collections.abc import Sequence

import numpy as np
from etils import epath

RUN_TOKENIZER_FILE = "tokenizer.model"  # every run keeps its tokenizer in its workdir, for downstream jobs
RUN_HF_TOKENIZER_FILE = "tokenizer.json"  # ... there under this name when it is a Hugging Face tokenizer
SPECIAL_ROLES = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")  # the order of BaseTokenizer's *_id attributes


class BaseTokenizer(abc.ABC):
    """What the data, objectives and downstream jobs use of a tokenizer, whichever kind it is.

    Instances carry the special ids (pad_id, unk_id, bos_id, eos_id, mask_id, cls_id, sep_id), `special_ids`
    (never masked, never a random replacement, no bytes of text) and `fingerprint` (equal fingerprints,
    equal tokenization)."""
    pad_id: int
    unk_id: int
    bos_id: int
    eos_id: int
    mask_id: int
    cls_id: int
    sep_id: int
    special_ids: tuple[int, ...]
    fingerprint: str
    threads: int = os.cpu_count() or 1  # encode_batch's threads (SentencePiece); fewer where processes share a host

    def _set_special_ids(self, ids: Sequence[int], extra: Sequence[int] = ()) -> None:
        """`ids` in the order of SPECIAL_ROLES; `extra`: other special tokens of the vocabulary."""
        (self.pad_id, self.unk_id, self.bos_id, self.eos_id, self.mask_id, self.cls_id,
         self.sep_id) = map(int, ids)
        self.special_ids = tuple(sorted({*map(int, ids), *map(int, extra)}))

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """The tokenizer's own number of ids (at most model.vocab_size)."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """The ids of `text`, without any bos/eos added."""

    @abc.abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """encode() of many texts at once, on several threads."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`. Special tokens give none, except SentencePiece's user-defined [MASK] [CLS] [SEP]."""

    @abc.abstractmethod
    def encode_with_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """(id, begin byte, end byte) of each token of `text`, the bytes in text's UTF-8, in order."""

    @abc.abstractmethod
    def save_to_run(self, workdir: epath.PathLike) -> None:
        """Writes the tokenizer into `workdir` (call from one process), where downstream jobs read it."""

    @abc.abstractmethod
    def _id_bytes(self, token_id: int) -> int:
        """How many bytes of decoded text `token_id` (not a special id) stands for."""

    def token_bytes(self, size: int) -> np.ndarray:
        """int32 [size]: the UTF-8 bytes each id contributes to decoded text, 0 for special and unused ids (and
        ids from vocab_size to `size`, the model's padding), so that the sum over encode(text) is
        len(text.encode("utf-8")): the denominator of bits per byte."""
        if size < self.vocab_size:
            raise ValueError(f"token_bytes({size}): the tokenizer has {self.vocab_size} ids")
        counts = np.zeros(size, np.int32)
        counts[:self.vocab_size] = self._byte_counts
        return counts

    @abc.abstractmethod
    def _starts_word(self, token_id: int) -> bool:
        """Whether `token_id` (not a special id) begins a word: whole-word masking's unit boundary."""

    def word_starts(self, size: int) -> np.ndarray:
        """bool [size]: the ids that begin a word (a piece after a space), special and unused ids included (each
        is a unit of its own), for whole-word span masking."""
        if size < self.vocab_size:
            raise ValueError(f"word_starts({size}): the tokenizer has {self.vocab_size} ids")
        starts = np.ones(size, bool)
        starts[:self.vocab_size] = self._word_start_table
        return starts

    @functools.cached_property
    def _word_start_table(self) -> np.ndarray:
        starts = np.array([self._starts_word(i) for i in range(self.vocab_size)], bool)
        starts[list(self.special_ids)] = True
        return starts

    @functools.cached_property
    def _byte_counts(self) -> np.ndarray:
        counts = np.array([self._id_bytes(i) for i in range(self.vocab_size)], np.int32)
        counts[list(self.special_ids)] = 0
        return counts
