"""Our models ↔ Hugging Face `transformers` checkpoints: which layout, what it cannot express, tensors both ways.

Encoders go to the BERT layout (headless_jax.interop.bert), decoders to GPT-NeoX (headless_jax.interop.gpt_neox).
What either cannot compute is refused with the reason, never approximated: an export's logits equal ours.
Pretraining-only parts (ELECTRA's generator and detector, BPDec's decoder) are never exported.
"""
import types

import numpy as np

from headless_jax.interop import bert, gpt_neox
from headless_jax.interop.errors import InteropError
from headless_jax.interop.tensors import Path, from_hf, to_hf

# hidden_act ↔ model.gelu_approximate: HF's "gelu" is the exact erf form, "gelu_new" the tanh approximation
EXACT_GELU, TANH_GELU = "gelu", "gelu_new"
_HIDDEN_ACTS = {EXACT_GELU: False, TANH_GELU: True, "gelu_pytorch_tanh": True}
LAYOUTS = {name: module for module in (bert, gpt_neox) for name in module.ARCHITECTURES}


def layout_of(m) -> types.ModuleType:
    return gpt_neox if m.causal else bert


def hidden_act(m) -> str:
    return TANH_GELU if m.gelu_approximate else EXACT_GELU


def check_exportable(m) -> None:
    """Raises InteropError naming every reason the model `m` (a config's model section) has no HF layout."""
    layout = layout_of(m)
    reasons = []
    if m.routing.kind != "none":
        reasons.append(f"it has routed layers (model.routing.kind={m.routing.kind}) and no HF layer skips tokens")
    if m.activation != "gelu":
        reasons.append(f"its MLP is {m.activation} and BERT's and GPT-NeoX's are GELU")
    if m.norm != "layernorm":
        reasons.append(f"its norm is {m.norm} and BERT's and GPT-NeoX's are LayerNorm")
    if not m.use_bias:
        reasons.append("it has no biases (model.use_bias=False) and BERT and GPT-NeoX have them")
    if m.num_heads * m.head_dim != m.d_model:
        reasons.append(f"its heads are num_heads·head_dim = {m.num_heads * m.head_dim} wide, not d_model = "
                       f"{m.d_model}, and HF derives head_dim from d_model")
    reasons += layout.refusals(m)
    if reasons:
        kind = "decoder" if m.causal else "encoder"
        name = layout.architecture(m)
        raise InteropError(f"this {kind} cannot be written as {name}: {'; '.join(reasons)}")


def export_tensors(m, flat_params: dict[Path, np.ndarray], special_roles: dict[str, int],
                   max_len: int) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json, tensors) of the HF checkpoint of the model `m` with flat params `flat_params`."""
    check_exportable(m)
    layout, act = layout_of(m), hidden_act(m)
    name = layout.architecture(m)
    tensors = to_hf(layout.table(m, name), flat_params, m.scan_layers)
    if m.causal:
        config = gpt_neox.hf_config(m, special_roles, act, max_len)
        if m.head != "untied":  # tied or headless: the head is E (o·Eᵀ), as its own tensor
            tensors[gpt_neox.EMBED_OUT] = tensors[gpt_neox.EMBED_IN].copy()
    else:
        config = bert.hf_config(m, special_roles, act)
        tensors.update(bert.extra_tensors(m, tensors))
    return config, tensors


def configured_differences(hf_config: dict, m) -> list[str]:
    """`--config.model.KEY=VALUE` for each model key whose value differs from what the checkpoint implies."""
    architecture = _architecture(hf_config)
    try:
        implied = LAYOUTS[architecture].model_keys(hf_config)
    except (KeyError, ValueError) as error:
        raise InteropError(f"the checkpoint's {architecture} config cannot be read here: {error}") from None
    act = hf_config.get("hidden_act", "gelu")
    if act not in _HIDDEN_ACTS:
        raise InteropError(f"the checkpoint's activation is {act}; headless_jax computes {sorted(_HIDDEN_ACTS)}")
    implied.update(activation="gelu", gelu_approximate=_HIDDEN_ACTS[act])
    return [f"--config.model.{key}={value}" for key, value in implied.items() if m[key] != value]


def import_params(hf_config: dict, tensors: dict[str, np.ndarray], m,
                  shapes: dict[Path, tuple]) -> tuple[dict[Path, np.ndarray], list[str]]:
    """(our flat params shaped as `shapes`, notes on what of the checkpoint was dropped) for the model `m`, whose
    keys configured_differences found to agree."""
    architecture = _architecture(hf_config)
    if not m.causal and m.head != "none" and architecture != bert.MASKED_LM:
        raise InteropError(f"the checkpoint is a {architecture}, which has no MLM head, and this config is "
                           f"classical (model.head={m.head}); set --config.model.head=none (headless) or import a "
                           f"{bert.MASKED_LM}")
    notes = []
    if m.causal:
        tensors = _neox_head(tensors, hf_config, m, notes)
    else:
        tensors = _bert_head(bert.fold_token_types(tensors, architecture), hf_config, m, architecture, notes)
    # our model's parameters only: a headless model has none of the checkpoint's head (noted as dropped above)
    table = [(entry, layer) for entry, layer in LAYOUTS[architecture].table(m, architecture)
             if all(path in shapes for path in entry.ours)]
    missing = [entry.hf for entry, _ in table if entry.hf not in tensors]
    if missing:
        raise InteropError(f"the checkpoint lacks {len(missing)} tensor(s) this model needs ({', '.join(missing[:3])}"
                           f"{', …' if len(missing) > 3 else ''}); is it a complete {architecture}?")
    try:
        flat = from_hf(table, tensors, shapes, m.scan_layers, m.num_layers)
    except ValueError as error:
        raise InteropError(f"the checkpoint does not fit this model: {error}") from None
    return flat, notes


def _neox_head(tensors: dict, hf_config: dict, m, notes: list[str]) -> dict:
    head = tensors.get(gpt_neox.EMBED_OUT)
    tied = hf_config.get("tie_word_embeddings", False) or head is None
    if m.head == "untied":
        return tensors if not tied else {**tensors, gpt_neox.EMBED_OUT: tensors[gpt_neox.EMBED_IN]}
    if not tied and not np.array_equal(head, tensors[gpt_neox.EMBED_IN]):
        if m.head == "tied":
            raise InteropError("the checkpoint's head (embed_out) is not its embedding matrix; set "
                               "--config.model.head=untied to keep it, or none (headless) to drop it")
        notes.append("dropped the checkpoint's untied head (embed_out): a headless decoder scores with o·Eᵀ")
    return tensors


def _bert_head(tensors: dict, hf_config: dict, m, architecture: str, notes: list[str]) -> dict:
    if architecture != bert.MASKED_LM:
        return tensors
    decoder = tensors.get(bert.DECODER)
    tied = hf_config.get("tie_word_embeddings", True) or decoder is None
    embedding = tensors[bert.prefix(architecture) + "embeddings.word_embeddings.weight"]
    if m.head == "none":
        notes.append("dropped the checkpoint's MLM head: a headless encoder has none")
        return tensors
    if m.head == "untied" and tied:
        return {**tensors, bert.DECODER: embedding}
    if m.head == "tied" and not tied and not np.array_equal(decoder, embedding):
        raise InteropError("the checkpoint's MLM decoder is not its embedding matrix; set --config.model.head=untied")
    return tensors


def _architecture(hf_config: dict) -> str:
    names = hf_config.get("architectures") or []
    known = [name for name in names if name in LAYOUTS]
    if not known:
        raise InteropError(f"the checkpoint is a {', '.join(names) or 'model of no named architecture'} "
                           f"({hf_config.get('model_type', 'unknown type')}); headless_jax reads "
                           f"{', '.join(sorted(LAYOUTS))}")
    return known[0]
