"""FLOP accounting for MFU, and device peak FLOP/s.

Training FLOPs per step = 3 × forward FLOPs (the backward pass costs twice the forward), with
forward = tokens · Σ_layers [2·N_layer + attention] + predictions · head, where
- N_layer = matmul weights of one layer: 4·D·H·Dh (q, k, v, out) + 2·D·F (GELU) or 3·D·F (SwiGLU);
- attention = 2 · 2·L·H·Dh per token (scores QKᵀ and the weighted sum AV), halved for causal models;
- head per predicted token: classical 2·D·V (+ 2·D·D for the BERT transform); headless CWT 2·K·D, where K
  is the negative-group size in predicted tokens (the [K,K] logits are the whole "head").
Embedding lookups, norms, softmax and the optimiser are not counted (standard MFU convention).
"""
import time

import jax
import jax.numpy as jnp

from headless_jax.objectives.masking import num_masked

# bf16 dense peak FLOP/s per device (chip), from vendor data sheets.
PEAK_FLOPS = {
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12, "tpu v5e": 197e12,
    "tpu v5p": 459e12, "tpu v5": 459e12,
    "tpu v6 lite": 918e12, "tpu v6e": 918e12,
    "a100": 312e12,
    "h100": 989e12,
    "h200": 989e12,
}


def layer_matmul_params(model_cfg) -> int:
    d, heads = model_cfg.d_model, model_cfg.num_heads * model_cfg.head_dim
    mlp_matrices = 3 if model_cfg.activation == "swiglu" else 2
    return 4 * d * heads + mlp_matrices * d * model_cfg.mlp_dim


def predictions_per_sequence(config) -> int:
    seq_len = config.data.seq_len
    if config.objective.task == "mlm":
        return num_masked(seq_len, config.objective.mask_rate)
    return seq_len - 1


def group_predictions(config, microbatch_rows: int) -> int:
    """K: predicted tokens in one CWT negative group."""
    sequences = config.objective.cwt_group_size or microbatch_rows
    return sequences * predictions_per_sequence(config)


def forward_flops_per_sequence(config, microbatch_rows: int) -> dict[str, float]:
    """Forward FLOPs for one sequence, split into body matmuls, attention scores and head+loss."""
    m, seq_len = config.model, config.data.seq_len
    body = seq_len * m.num_layers * 2 * layer_matmul_params(m)
    attention = seq_len * m.num_layers * 2 * 2 * seq_len * m.num_heads * m.head_dim * (0.5 if m.causal else 1.0)
    predictions = predictions_per_sequence(config)
    head = 0.0
    if config.objective.task == "mlm" and config.objective.ce_all_positions:
        ce_rows = seq_len
    else:
        ce_rows = predictions
    if "ce" in config.objective.loss.split("+"):
        transform = 2 * m.d_model * m.d_model if (not m.causal and m.mlm_head_transform) else 0
        head += ce_rows * (2 * m.d_model * m.vocab_size + transform)
    if "cwt" in config.objective.loss.split("+"):
        head += predictions * 2 * group_predictions(config, microbatch_rows) * m.d_model
    return {"body": float(body), "attention": float(attention), "head": float(head)}


def train_flops_per_step(config) -> dict[str, float]:
    """Training FLOPs of one optimiser step over the global batch, by part and in total."""
    rows = config.train.global_batch_size
    per_sequence = forward_flops_per_sequence(config, rows // config.train.microbatches)
    parts = {k: 3 * rows * v for k, v in per_sequence.items()}
    parts["total"] = sum(parts.values())
    return parts


def measured_peak_flops(size: int = 1024, repeats: int = 5) -> float:
    """A float32 matmul's measured FLOP/s on the default device: the 'peak' for CPUs, which have no table."""
    x = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul(x).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul(x).block_until_ready()
    return repeats * 2 * size ** 3 / (time.perf_counter() - start)


def peak_flops_per_device(configured: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the figure comes from)."""
    if configured > 0:
        return configured, "configured"
    kind = jax.devices()[0].device_kind.lower()
    for name, flops in PEAK_FLOPS.items():
        if name in kind:
            return flops, f"table ({name})"
    return measured_peak_flops(), "measured float32 matmul"
