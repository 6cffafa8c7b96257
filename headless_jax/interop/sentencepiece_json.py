"""A SentencePiece unigram model as a Hugging Face fast tokenizer (tokenizer.json) that gives the same ids.

SentencePiece segments the whole normalised text with one Viterbi pass over its pieces' scores; a `tokenizers`
Unigram model over the same (piece, score) list does the same once the normalisation is rebuilt: the model's
precompiled character map (empty for the identity rule our tokenizers are trained with), spaces escaped as "▁",
and "▁" put in front when the model adds a dummy prefix. Control and byte pieces are never matched in text by
SentencePiece, so they get a score no segmentation picks; byte fallback emits the byte pieces for characters
outside the vocabulary, as SentencePiece does. User-defined pieces ([MASK] [CLS] [SEP]) are matched whole in
text by both.
"""
import tokenizers
from sentencepiece import sentencepiece_model_pb2
from tokenizers import decoders, normalizers, processors

from headless_jax.interop.errors import InteropError

_TYPE = sentencepiece_model_pb2.ModelProto.SentencePiece.Type
_NEVER_MATCHED = -1e9  # the score of pieces that text never segments into (control, byte, unused)


def sentencepiece_to_json(model_proto: bytes, special_roles: dict[str, int], encoder: bool) -> str:
    """tokenizer.json text of the SentencePiece model `model_proto`.

    special_roles: role (pad, unk, bos, eos, mask, cls, sep) → id. encoder: a post-processor wraps texts as
    `[CLS] a [SEP]` and pairs as `[CLS] a [SEP] b [SEP]` (what our fine-tuning feeds an encoder); decoders get none.
    """
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model_proto)
    _check_expressible(proto)
    vocab = [(p.piece, p.score if p.type in (_TYPE.NORMAL, _TYPE.USER_DEFINED) else _NEVER_MATCHED)
             for p in proto.pieces]
    unk_id = next(i for i, p in enumerate(proto.pieces) if p.type == _TYPE.UNKNOWN)
    tokenizer = tokenizers.Tokenizer(tokenizers.models.Unigram(vocab, unk_id=unk_id,
                                                               byte_fallback=proto.trainer_spec.byte_fallback))
    spec = proto.normalizer_spec
    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    steps.append(normalizers.Replace(" ", "▁"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           *([decoders.Strip(" ", 1, 0)] if spec.add_dummy_prefix else [])])
    specials = sorted(set(special_roles.values()))
    tokenizer.add_special_tokens([tokenizers.AddedToken(proto.pieces[i].piece, special=True, normalized=False)
                                  for i in specials])
    if encoder:
        cls, sep = (proto.pieces[special_roles[role]].piece for role in ("cls", "sep"))
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, special_roles["cls"]), (sep, special_roles["sep"])])
    # once read back, as an import reads it: `tokenizers` parses floats to the nearest few ULPs, so its first reading
    # of our scores may shift their last digit; from then on the text is a fixed point (export → import → export)
    return tokenizers.Tokenizer.from_str(tokenizer.to_str()).to_str()


def tokenizer_config(special_roles: dict[str, int], pieces: list[str], max_length: int) -> dict:
    """tokenizer_config.json for transformers' AutoTokenizer: a fast tokenizer with these special tokens."""
    names = {"pad": "pad_token", "unk": "unk_token", "bos": "bos_token", "eos": "eos_token", "mask": "mask_token",
             "cls": "cls_token", "sep": "sep_token"}
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
            "clean_up_tokenization_spaces": False,
            **{names[role]: pieces[token_id] for role, token_id in special_roles.items()}}


def _check_expressible(proto) -> None:
    trainer, spec = proto.trainer_spec, proto.normalizer_spec
    model_types = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
    problems = []
    if trainer.model_type != 1:
        problems.append(f"its model type is {model_types.get(trainer.model_type, trainer.model_type)}, not unigram")
    if spec.remove_extra_whitespaces:
        problems.append("it collapses runs of spaces (remove_extra_whitespaces), which a tokenizer.json cannot "
                        "reproduce exactly")
    if not spec.escape_whitespaces:
        problems.append("it does not escape spaces as ▁")
    if spec.normalization_rule_tsv:
        problems.append("it has a custom normalisation table")
    if problems:
        raise InteropError(f"the run's SentencePiece model cannot be exported as a tokenizer.json: "
                                   f"{'; '.join(problems)}. Retrain it as headless_jax does (unigram, identity "
                                   "normalisation, remove_extra_whitespaces=False)")
