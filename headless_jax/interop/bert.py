"""Encoders in the Hugging Face BERT layout: post-norm blocks, learned positions, a zero token-type embedding.

A classical encoder is a `BertForMaskedLM` (its head: transform dense + GELU + LayerNorm, decoder tied to E or
not, bias); a headless encoder, or an ELECTRA discriminator, is a `BertModel`, whose last hidden state is ours
(a headless encoder has no transform layer). Our model has no token-type embedding: the export writes zeros,
the import folds a checkpoint's type-0 row into the position table (exact for inputs of type 0, as ours are).
"""
import numpy as np

from headless_jax.interop.tensors import COPY, Entry, dense, layer_norm, layer_path
from headless_jax.model import BODY, HEAD

MASKED_LM, BARE = "BertForMaskedLM", "BertModel"
ARCHITECTURES = (MASKED_LM, BARE)
TOKEN_TYPES = "embeddings.token_type_embeddings.weight"
DECODER = "cls.predictions.decoder.weight"  # an untied head's; a tied one's is the word embeddings


def architecture(m) -> str:
    return BARE if m.head == "none" or m.electra_generator else MASKED_LM


def refusals(m) -> list[str]:
    """Why HF BERT cannot compute this encoder (empty: it can)."""
    reasons = []
    if m.norm_position != "post":
        reasons.append("it is pre-norm (model.norm_position=pre) and HF BERT is post-norm")
    if m.positions != "learned":
        reasons.append(f"its positions are {m.positions} and HF BERT's are learned absolute positions")
    if architecture(m) == MASKED_LM and not m.mlm_head_transform:
        reasons.append("its MLM head has no transform (model.mlm_head_transform=False) and BERT's always has one")
    return reasons


def hf_config(m, special_roles: dict[str, int], hidden_act: str) -> dict:
    return {"architectures": [architecture(m)], "model_type": "bert", "vocab_size": m.vocab_size,
            "hidden_size": m.d_model, "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads,
            "intermediate_size": m.mlp_dim, "hidden_act": hidden_act, "hidden_dropout_prob": m.dropout_rate,
            "attention_probs_dropout_prob": 0.0, "max_position_embeddings": m.max_len, "type_vocab_size": 2,
            "layer_norm_eps": m.norm_eps, "position_embedding_type": "absolute", "initializer_range": m.init_std,
            "pad_token_id": special_roles["pad"], "tie_word_embeddings": m.head != "untied", "dtype": "float32"}


def model_keys(hf: dict) -> dict:
    """The model.* values an HF BERT config implies (activation keys aside: see hf.activation_keys)."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"its position_embedding_type is {hf['position_embedding_type']}, not absolute")
    return {"causal": False, "vocab_size": hf["vocab_size"], "num_layers": hf["num_hidden_layers"],
            "d_model": hf["hidden_size"], "num_heads": hf["num_attention_heads"],
            "head_dim": hf["hidden_size"] // hf["num_attention_heads"], "mlp_dim": hf["intermediate_size"],
            "norm": "layernorm", "norm_position": "post", "norm_eps": hf["layer_norm_eps"], "positions": "learned",
            "max_len": hf["max_position_embeddings"], "parallel_residual": False, "use_bias": True}


def prefix(architecture_name: str) -> str:
    return "bert." if architecture_name == MASKED_LM else ""


_LAYER_DENSE = (  # (HF module, our module, the kernel's input axes)
    ("attention.self.query", ("attention", "query"), 1), ("attention.self.key", ("attention", "key"), 1),
    ("attention.self.value", ("attention", "value"), 1), ("attention.output.dense", ("attention", "out"), 2),
    ("intermediate.dense", ("mlp", "wi"), 1), ("output.dense", ("mlp", "wo"), 1))
_LAYER_NORMS = (("attention.output.LayerNorm", "norm_attention"), ("output.LayerNorm", "norm_mlp"))


def table(m, architecture_name: str) -> list[tuple[Entry, int | None]]:
    """Every HF tensor of `architecture_name` with our parameters (body only for BertModel)."""
    p, scanned = prefix(architecture_name), m.scan_layers
    rows = [(Entry(f"{p}embeddings.word_embeddings.weight", ((BODY, "embed", "embedding"),), COPY), None),
            (Entry(f"{p}embeddings.position_embeddings.weight", ((BODY, "position_embed", "embedding"),), COPY),
             None), *layer_norm(f"{p}embeddings.LayerNorm", (BODY, "embed_norm"), None)]
    for i in range(m.num_layers):
        base = f"{p}encoder.layer.{i}."
        for hf, ours, in_axes in _LAYER_DENSE:
            rows += dense(base + hf, layer_path(scanned, i, *ours), in_axes, i)
        for hf, ours in _LAYER_NORMS:
            rows += layer_norm(base + hf, layer_path(scanned, i, ours), i)
    if architecture_name == MASKED_LM:
        rows += [*dense("cls.predictions.transform.dense", (HEAD, "transform"), 1, None),
                 *layer_norm("cls.predictions.transform.LayerNorm", (HEAD, "transform_norm"), None),
                 (Entry("cls.predictions.bias", ((HEAD, "bias"),), COPY), None)]
        if m.head == "untied":
            rows.append((Entry(DECODER, ((HEAD, "decoder"),), COPY), None))
    return rows


def extra_tensors(m, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the export adds to our `tensors`: the zero token-type embedding; for an untied decoder, its bias under
    the decoder's name too (transformers shares it with cls.predictions.bias only when the decoder is tied)."""
    extra = {prefix(architecture(m)) + TOKEN_TYPES: np.zeros((2, m.d_model), np.float32)}
    if DECODER in tensors:
        extra["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"]
    return extra


def fold_token_types(tensors: dict[str, np.ndarray], architecture_name: str) -> dict[str, np.ndarray]:
    """The import's view of a checkpoint: its type-0 token embedding added to the position table (our inputs are
    all of type 0), so that our model, which has no token types, computes what BERT computes."""
    p = prefix(architecture_name)
    positions, types = f"{p}embeddings.position_embeddings.weight", p + TOKEN_TYPES
    if types not in tensors or not np.any(tensors[types][0]):  # zeros (our exports): positions stay bit-exact
        return tensors
    return {**tensors, positions: tensors[positions] + tensors[types][0]}
