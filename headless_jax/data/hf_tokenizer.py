"""A Hugging Face `tokenizers` tokenizer (a tokenizer.json) behind the BaseTokenizer interface."""
import itertools
import json
import re
from collections.abc import Sequence

import tokenizers
from etils import epath

from headless_jax.data.cache import cache_key, write_atomically
from headless_jax.data.errors import DataError
from headless_jax.data.tokenizer_base import RUN_HF_TOKENIZER_FILE, SPECIAL_ROLES, BaseTokenizer

_HF_SPECIAL_NAMES = {
    "pad": ("[PAD]", "<pad>", "<|padding|>", "<|pad|>"),
    "unk": ("[UNK]", "<unk>", "<|unk|>"),
    "bos": ("<s>", "<|endoftext|>", "<|begin_of_text|>", "[CLS]"),
    "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "[SEP]"),
    "mask": ("[MASK]", "<mask>"),
    "cls": ("[CLS]", "<s>"),
    "sep": ("[SEP]", "</s>"),
}
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a byte-fallback token (SentencePiece, Llama-style HF models)


class HFTokenizer(BaseTokenizer):
    """A Hugging Face `tokenizers` tokenizer (tokenizer.json), its missing special tokens added after its
    vocabulary. Encoding adds no bos/eos of its post-processor: the data layer places those itself."""

    def __init__(self, serialized: str, origin: str, vocab_size: int):
        """`serialized`: the tokenizer.json text; `origin` names it in messages; `vocab_size` is the
        model.vocab_size it must fit in (the model's may be larger: Pythia pads 50277 tokens to 50304)."""
        try:
            self._tokenizer = tokenizers.Tokenizer.from_str(serialized)
        except Exception as e:  # tokenizers raises plain Exceptions for malformed files
            raise DataError(f"{origin}: not a Hugging Face tokenizer.json ({_one_line(e)}); point "
                            "data.tokenizer_model at a tokenizer.json or a SentencePiece .model") from None
        # a tokenizer.json may enable padding or truncation: either would silently change documents' tokens
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        _check_fits(self._tokenizer, origin, vocab_size)
        ids = [_special_id(self._tokenizer, role) for role in SPECIAL_ROLES]
        _check_added_fit(self._tokenizer, origin, vocab_size)
        self._added = self._tokenizer.get_added_tokens_decoder()
        self._set_special_ids(ids, [i for i, token in self._added.items() if token.special])
        self.serialized = self._tokenizer.to_str()  # after the additions: what save_to_run writes
        self.fingerprint = cache_key(self.serialized)
        spec = json.loads(self.serialized)
        self._byte_level = _has_component(spec.get("decoder"), "ByteLevel")
        self._wordpiece = (spec.get("model") or {}).get("type") == "WordPiece"

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids])

    def encode_with_offsets(self, text: str) -> list[tuple[int, int, int]]:
        """The tokenizer's character offsets as bytes; the tokens of one character split by byte-level BPE
        each take their own bytes of it."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        spans = _byte_spans(text, encoding.offsets, [int(self._byte_counts[i]) for i in encoding.ids])
        return [(token_id, begin, end) for token_id, (begin, end) in zip(encoding.ids, spans)]

    def save_to_run(self, workdir: epath.PathLike) -> None:
        """Writes the tokenizer, with its added special tokens, to `<workdir>/tokenizer.json`."""
        path = epath.Path(workdir) / RUN_HF_TOKENIZER_FILE
        data = self.serialized.encode("utf-8")
        if not path.exists() or path.read_bytes() != data:
            write_atomically(path, data)

    def _starts_word(self, token_id: int) -> bool:
        token = self._tokenizer.id_to_token(token_id)
        if token_id in self._added or token is None:
            return True
        if self._wordpiece:  # BERT: a word's later pieces are the "##" ones
            return not token.startswith("##")
        if _BYTE_PIECE.fullmatch(token):  # byte fallback: whitespace begins a word
            return chr(int(token[3:5], 16)) in " \n\t\r"
        return token[:1] in (("Ġ", "Ċ", "ĉ", "č") if self._byte_level else ("▁", " ", "\n"))  # byte-level: space \n \t \r

    def _id_bytes(self, token_id: int) -> int:
        added = self._added.get(token_id)
        if added is not None:  # added tokens hold their text as is, never in the byte-level alphabet
            return len(added.content.encode("utf-8"))
        token = self._tokenizer.id_to_token(token_id)
        if token is None:  # a hole in the vocabulary
            return 0
        if self._byte_level:
            return sum(1 if char in _BYTE_LEVEL_ALPHABET else len(char.encode("utf-8")) for char in token)
        return _piece_bytes(token)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def _check_fits(tokenizer: tokenizers.Tokenizer, origin: str, vocab_size: int) -> None:
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if size > vocab_size:
        raise DataError(f"{origin}: has {size} tokens but model.vocab_size={vocab_size}; set "
                        f"--config.model.vocab_size={size} or more")


def _special_id(tokenizer: tokenizers.Tokenizer, role: str) -> int:
    """The id of the first of the role's usual names in the vocabulary; the first name, added, if none is."""
    names = _HF_SPECIAL_NAMES[role]
    found = next((name for name in names if tokenizer.token_to_id(name) is not None), None)
    if found is None:
        found = names[0]
        tokenizer.add_special_tokens([found])
    return tokenizer.token_to_id(found)


def _check_added_fit(tokenizer: tokenizers.Tokenizer, origin: str, vocab_size: int) -> None:
    """The added special tokens (the only ones past the vocabulary, which _check_fits checked) need ids below
    model.vocab_size."""
    too_high = sorted((i, token.content) for i, token in tokenizer.get_added_tokens_decoder().items()
                      if i >= vocab_size)
    if too_high:
        listed = ", ".join(f"{content} (id {i})" for i, content in too_high)
        raise DataError(f"{origin}: lacks special tokens that, added, take ids >= model.vocab_size={vocab_size}: "
                        f"{listed}; raise --config.model.vocab_size to {too_high[-1][0] + 1} or more, or use a "
                        "tokenizer that has them")


def _has_component(spec: object, kind: str) -> bool:
    """Whether the tokenizer.json part `spec` is, or (in a Sequence) holds, a component of type `kind`."""
    if isinstance(spec, dict):
        return spec.get("type") == kind or any(_has_component(value, kind) for value in spec.values())
    if isinstance(spec, list):
        return any(_has_component(item, kind) for item in spec)
    return False


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character → byte: the printable Latin-1 bytes stand for themselves, the
    other 68 (controls, space, DEL, no-break space, soft hyphen) for the code points from 256 on, in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = sorted(set(range(256)) - set(printable))
    return {chr(b): b for b in printable} | {chr(256 + k): b for k, b in enumerate(others)}


_BYTE_LEVEL_ALPHABET = _byte_level_alphabet()


def _piece_bytes(token: str) -> int:
    """Bytes of a token of a tokenizer that is not byte-level: byte fallback is one byte, "▁" (Metaspace) a
    space, and a WordPiece "##" continuation has no space before it (the spaces WordPiece's decoder puts
    between words are not counted)."""
    if _BYTE_PIECE.fullmatch(token):
        return 1
    return len(token.removeprefix("##").replace("▁", " ").encode("utf-8"))


def _byte_spans(text: str, char_spans: Sequence[tuple[int, int]], byte_counts: Sequence[int]) -> list[tuple[int, int]]:
    """Byte spans in text's UTF-8 from a tokenizer's character spans. They are contiguous: a token begins where
    the one before ended (so a space that the offsets leave out goes to the token after it, as with "▁"). A token
    whose character the next token shares (byte-level BPE splitting a multi-byte character) ends after its own
    `byte_counts` bytes."""
    char_to_byte = list(itertools.accumulate((len(char.encode("utf-8")) for char in text), initial=0))
    spans, end = [], 0
    for k, ((_, char_end), count) in enumerate(zip(char_spans, byte_counts)):
        begin, end = end, max(end, char_to_byte[char_end])
        shared = k + 1 < len(char_spans) and char_spans[k + 1][0] < char_end
        if shared and 0 < count < end - begin:
            end = begin + count
        spans.append((begin, end))
    return spans
