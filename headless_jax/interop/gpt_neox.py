"""Decoders in the Hugging Face GPT-NeoX (Pythia) layout: `GPTNeoXForCausalLM`.

Pre-norm blocks with a fused `query_key_value` whose output holds, per head, its query, key and value rows;
rotary positions on the first `partial_rotary_factor` of each head's dims (GPT-NeoX's rotate-half form, as
ours); sequential or parallel residual. The head `embed_out` is the untied decoder of a classical model, or a
copy of E for a tied or headless one: HF's logits are then exactly the o·Eᵀ a headless decoder is scored with.
"""
from headless_jax.interop.tensors import COPY, FLAT, Entry, dense, layer_norm, layer_path, linear, per_head_interleaved
from headless_jax.model import BODY, HEAD

CAUSAL_LM = "GPTNeoXForCausalLM"
ARCHITECTURES = (CAUSAL_LM,)
EMBED_IN, EMBED_OUT = "gpt_neox.embed_in.weight", "embed_out.weight"


def architecture(m) -> str:
    return CAUSAL_LM


def refusals(m) -> list[str]:
    """Why HF GPT-NeoX cannot compute this decoder (empty: it can)."""
    reasons = []
    if m.positions != "rotary":
        reasons.append(f"its positions are {m.positions} and GPT-NeoX's are rotary")
    if m.norm_position != "pre":
        reasons.append("it is post-norm and GPT-NeoX is pre-norm")
    if int(m.head_dim * m.rotary_fraction) % 2:
        reasons.append(f"it rotates an odd number of dims (head_dim·rotary_fraction = "
                       f"{m.head_dim * m.rotary_fraction:g}), which GPT-NeoX would round differently")
    return reasons


def hf_config(m, special_roles: dict[str, int], hidden_act: str, max_len: int) -> dict:
    return {"architectures": [CAUSAL_LM], "model_type": "gpt_neox", "vocab_size": m.vocab_size,
            "hidden_size": m.d_model, "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads,
            "intermediate_size": m.mlp_dim, "hidden_act": hidden_act,
            "rope_parameters": {"rope_type": "default", "rope_theta": m.rotary_base,
                                "partial_rotary_factor": m.rotary_fraction},
            "rotary_pct": m.rotary_fraction, "rotary_emb_base": m.rotary_base,  # the keys of transformers < 5
            "max_position_embeddings": max_len, "layer_norm_eps": m.norm_eps,
            "use_parallel_residual": m.parallel_residual, "attention_bias": True, "attention_dropout": 0.0,
            "hidden_dropout": m.dropout_rate, "initializer_range": m.init_std, "tie_word_embeddings": False,
            "bos_token_id": special_roles["bos"], "eos_token_id": special_roles["eos"],
            "pad_token_id": special_roles["pad"], "dtype": "float32"}


def model_keys(hf: dict) -> dict:
    """The model.* values an HF GPT-NeoX config implies (activation keys aside: see hf.activation_keys)."""
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"its rotary embedding is of type {rope['rope_type']}, not the default")
    if not hf.get("attention_bias", True):
        raise ValueError("its attention has no biases")
    return {"causal": True, "vocab_size": hf["vocab_size"], "num_layers": hf["num_hidden_layers"],
            "d_model": hf["hidden_size"], "num_heads": hf["num_attention_heads"],
            "head_dim": hf["hidden_size"] // hf["num_attention_heads"], "mlp_dim": hf["intermediate_size"],
            "norm": "layernorm", "norm_position": "pre", "norm_eps": hf["layer_norm_eps"], "positions": "rotary",
            "rotary_fraction": rope.get("partial_rotary_factor", hf.get("rotary_pct", 1.0)),
            "rotary_base": rope.get("rope_theta", hf.get("rotary_emb_base", 10000.0)),
            "parallel_residual": hf.get("use_parallel_residual", True), "use_bias": True}


_LAYER_DENSE = (("attention.dense", ("attention", "out"), 2), ("mlp.dense_h_to_4h", ("mlp", "wi"), 1),
                ("mlp.dense_4h_to_h", ("mlp", "wo"), 1))
_LAYER_NORMS = (("input_layernorm", "norm_attention"), ("post_attention_layernorm", "norm_mlp"))


def table(m, architecture_name: str = CAUSAL_LM) -> list[tuple[Entry, int | None]]:
    """Every HF tensor with our parameters; `embed_out` is listed for an untied head only (see hf.py)."""
    scanned = m.scan_layers
    rows = [(Entry(EMBED_IN, ((BODY, "embed", "embedding"),), COPY), None),
            *layer_norm("gpt_neox.final_layer_norm", (BODY, "final_norm"), None)]
    for i in range(m.num_layers):
        base = f"gpt_neox.layers.{i}."
        qkv = [layer_path(scanned, i, "attention", name) for name in ("query", "key", "value")]
        rows += [(Entry(f"{base}attention.query_key_value.weight", tuple(p + ("kernel",) for p in qkv),
                        per_head_interleaved(linear(1))), i),
                 (Entry(f"{base}attention.query_key_value.bias", tuple(p + ("bias",) for p in qkv),
                        per_head_interleaved(FLAT)), i)]
        for hf, ours, in_axes in _LAYER_DENSE:
            rows += dense(base + hf, layer_path(scanned, i, *ours), in_axes, i)
        for hf, ours in _LAYER_NORMS:
            rows += layer_norm(base + hf, layer_path(scanned, i, ours), i)
    if m.head == "untied":
        rows.append((Entry(EMBED_OUT, ((HEAD, "decoder"),), COPY), None))
    return rows
