"""Tokenizers with the special tokens the objectives rely on, behind one interface (BaseTokenizer):

- `Tokenizer`: a SentencePiece model, trained from the configured sources once and cached, special ids fixed
  at 0..6 (pad, unk, bos, eos, [MASK], [CLS], [SEP]);
- `HFTokenizer`: a Hugging Face tokenizer.json (e.g. Pythia's), special tokens found by their usual names and
  the missing ones added after its vocabulary; the model's vocabulary may be larger than the tokenizer's.
"""
import io
import time
from collections.abc import Sequence

import ml_collections
import sentencepiece as spm
from absl import logging
from etils import epath

from headless_jax.data.cache import cache_key, write_atomically
from headless_jax.data.errors import DataError, MissingDataError
from headless_jax.data.hf_tokenizer import HFTokenizer
from headless_jax.data.sources import Source, no_text_error, parse_sources
from headless_jax.data.split import split_document
from headless_jax.data.tokenizer_base import RUN_HF_TOKENIZER_FILE, RUN_TOKENIZER_FILE, BaseTokenizer

__all__ = ["BaseTokenizer", "HFTokenizer", "RUN_HF_TOKENIZER_FILE", "RUN_TOKENIZER_FILE", "Tokenizer", "load_run_tokenizer",
           "load_tokenizer", "tokenizer_from_file", "train_sentencepiece"]

_WORD_START = ("▁", " ", "\n", "\t", "\r")  # a piece beginning with one of these begins a word
_USER_DEFINED = ("[MASK]", "[CLS]", "[SEP]")  # ids 4, 5, 6: SentencePiece numbers them after the control ids
_MAX_SENTENCE_CHARS = 16384  # longer paragraphs are cut: SentencePiece skips over-long sentences
_TRAINER_OPTIONS = dict(
    model_type="unigram",
    byte_fallback=True,  # unseen characters become bytes, never <unk>
    normalization_rule_name="identity",  # with remove_extra_whitespaces=False: decode(encode(s)) == s
    remove_extra_whitespaces=False,
    # no "▁" before the first word: a text's tokens then hold exactly its bytes, so that token_bytes() sums to
    # len(utf-8) (bits per byte); a dummy prefix would count one byte more per text than decode() gives back
    add_dummy_prefix=False,
    pad_id=0, unk_id=1, bos_id=2, eos_id=3,
    user_defined_symbols=",".join(_USER_DEFINED),
    max_sentence_length=4 * _MAX_SENTENCE_CHARS,  # in bytes
    num_threads=16,  # fixed: the trained model depends on the thread count, and the cache key must not
    minloglevel=2,
)
_FIX = ("retrain it: leave data.tokenizer_model empty and headless_jax trains one, or train yours with "
        "pad_id=0 unk_id=1 bos_id=2 eos_id=3 user_defined_symbols=" + ",".join(_USER_DEFINED))
# The names each special token has in the usual Hugging Face vocabularies, in order of preference; the first
# is the one added when none is there (roles are resolved in this order, so a later role may find an added one).


class Tokenizer(BaseTokenizer):
    """A SentencePiece model whose special tokens sit at the ids 0..6 the objectives rely on."""

    def __init__(self, model_proto: bytes, origin: str, vocab_size: int):
        """`origin` names the model in messages; `vocab_size` is the model.vocab_size it must have."""
        self.processor = spm.SentencePieceProcessor()
        try:
            self.processor.LoadFromSerializedProto(model_proto)
        except RuntimeError as e:
            raise DataError(f"{origin}: not a SentencePiece model ({e}); point data.tokenizer_model at a .model "
                            "file or leave it empty to train one") from None
        self._set_special_ids(range(7))
        self.fingerprint = cache_key(model_proto)
        self._check_special_ids(origin)
        if self.vocab_size != vocab_size:
            raise DataError(f"{origin}: has {self.vocab_size} pieces but model.vocab_size={vocab_size}; "
                            f"set --config.model.vocab_size={self.vocab_size}")

    @staticmethod
    def from_file(path: epath.PathLike, vocab_size: int) -> BaseTokenizer:
        """tokenizer_from_file: a SentencePiece model, or a tokenizer.json as a Hugging Face tokenizer."""
        return tokenizer_from_file(path, vocab_size)

    def _check_special_ids(self, origin: str) -> None:
        sp = self.processor
        found = {"pad": sp.pad_id(), "unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id()}
        for name, want in zip(found, self.special_ids):
            if found[name] != want:
                raise DataError(f"{origin}: {name}_id is {found[name]}, needs {want}; {_FIX}")
        for piece, want in zip(_USER_DEFINED, (self.mask_id, self.cls_id, self.sep_id)):
            if want >= self.vocab_size or sp.id_to_piece(want) != piece:
                raise DataError(f"{origin}: lacks {piece} at id {want}; {_FIX}")

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.processor.encode(list(texts), num_threads=self.threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode([int(i) for i in ids])

    def encode_with_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """SentencePiece's own offsets: the leading byte-fallback pieces of a character are zero-width at its
        start, its last one spans the whole character."""
        encoded = self.processor.encode(text, return_type="proto")
        return [(piece.id, piece.begin, piece.end) for piece in encoded.pieces]

    def save_to_run(self, workdir: epath.PathLike) -> None:
        """Writes the model to `<workdir>/tokenizer.model`."""
        path = epath.Path(workdir) / RUN_TOKENIZER_FILE
        proto = self.processor.serialized_model_proto()
        if not path.exists() or path.read_bytes() != proto:
            write_atomically(path, proto)

    def _starts_word(self, token_id: int) -> bool:
        sp = self.processor
        piece = sp.id_to_piece(token_id)
        if sp.is_byte(token_id):  # byte fallback "<0x09>": whitespace begins a word, other bytes are inside one
            return chr(int(piece[3:5], 16)) in _WORD_START
        return sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id) or piece[:1] in _WORD_START

    def _id_bytes(self, token_id: int) -> int:
        sp = self.processor
        if sp.is_control(token_id) or sp.is_unknown(token_id) or sp.is_unused(token_id):
            return 0
        if sp.is_byte(token_id):
            return 1
        return len(sp.id_to_piece(token_id).replace("▁", " ").encode("utf-8"))


def tokenizer_from_file(path: epath.PathLike, vocab_size: int) -> BaseTokenizer:
    """A `.json` file as a Hugging Face tokenizer, anything else as a SentencePiece model; `vocab_size` is
    the model.vocab_size it must fit."""
    path = epath.Path(path)
    if not path.exists():
        raise MissingDataError(f"data.tokenizer_model: no such file {path}; fix the path, or leave it empty "
                               "to train a tokenizer from data.sources")
    if path.suffix == ".json":
        return HFTokenizer(path.read_text(encoding="utf-8"), str(path), vocab_size)
    return Tokenizer(path.read_bytes(), str(path), vocab_size)


def load_tokenizer(config: ml_collections.ConfigDict, cache_dir: epath.PathLike) -> BaseTokenizer:
    """data.tokenizer_model if set (a tokenizer.json or a SentencePiece model); else the SentencePiece tokenizer
    trained from data.sources, cached in `cache_dir` (and trained now if not there yet)."""
    data, vocab_size = config.data, config.model.vocab_size
    if data.tokenizer_model:
        return tokenizer_from_file(data.tokenizer_model, vocab_size)
    sources = parse_sources(data.sources)
    key = cache_key([s.fingerprint for s in sources], vocab_size, data.heldout_fraction,
                    data.tokenizer_sample_chars, _TRAINER_OPTIONS)
    path = epath.Path(cache_dir) / f"tokenizer_{key}.model"
    if not path.exists():
        start = time.perf_counter()
        write_atomically(path, train_sentencepiece(sources, vocab_size, data.heldout_fraction,
                                                   data.tokenizer_sample_chars))
        logging.info("trained tokenizer %s in %.1f s", path, time.perf_counter() - start)
    return Tokenizer.from_file(path, vocab_size)


def load_run_tokenizer(workdir: epath.PathLike, vocab_size: int) -> BaseTokenizer:
    """The tokenizer a run (or a prepared store) saved in `workdir` with save_to_run."""
    saved = [epath.Path(workdir) / name for name in (RUN_TOKENIZER_FILE, RUN_HF_TOKENIZER_FILE)]
    present = [path for path in saved if path.exists()]
    if not present:
        raise MissingDataError(f"{workdir}: has no {RUN_TOKENIZER_FILE} or {RUN_HF_TOKENIZER_FILE} (a run and a "
                               "prepared store save their tokenizer there); point at a run's workdir or a store")
    if len(present) > 1:  # a workdir reused with the other kind of tokenizer: which one the run used is unknown
        raise DataError(f"{workdir}: has both {RUN_TOKENIZER_FILE} and {RUN_HF_TOKENIZER_FILE}; remove the one "
                        "the run was not trained with")
    return tokenizer_from_file(present[0], vocab_size)


def train_sentencepiece(sources: list[Source], vocab_size: int, heldout_fraction: float, sample_chars: int) -> bytes:
    """A serialized SentencePiece model trained on the train split of `sources` (at most `sample_chars`)."""
    share = sample_chars // len(sources)  # equal per source, so that each source (language) gets vocabulary
    paragraphs = [p for source in sources for p in _training_paragraphs(source, heldout_fraction, share)]
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(paragraphs), model_writer=model,
                                       vocab_size=vocab_size, **_TRAINER_OPTIONS)
    except RuntimeError as e:  # e.g. too little text for the vocabulary size
        reason = " ".join(str(e).split())
        sources_spec = ",".join(s.spec for s in sources)
        raise DataError(f"data.sources={sources_spec}: cannot train a tokenizer of model.vocab_size={vocab_size} "
                        f"({reason}); add text or lower --config.model.vocab_size") from None
    return model.getvalue()


def _training_paragraphs(source: Source, heldout_fraction: float, max_chars: int) -> list[str]:
    """Paragraphs of the train split of `source`, at most `max_chars` in all: SentencePiece's 'sentences'."""
    paragraphs, chars_left = [], max_chars
    for document in source.documents():
        text = split_document(document, heldout_fraction)[0][:chars_left]
        chars_left -= len(text)
        for paragraph in text.split("\n\n"):
            paragraphs += [paragraph[i:i + _MAX_SENTENCE_CHARS]
                           for i in range(0, len(paragraph), _MAX_SENTENCE_CHARS)]
        if chars_left <= 0:
            break
    if not paragraphs:
        raise no_text_error(source)
    return paragraphs
