"""Multi-head dot-product attention behind one function, with implementations per backend.

`xla` is the reference (plain einsums, float32 softmax, runs anywhere); `cudnn` is the fused flash kernel
through `jax.nn.dot_product_attention`; `splash` is the Pallas TPU kernel. `auto` picks per backend.
Masking is always causal (optional) ∧ same segment ∧ key not padding (segment id 0 = padding).
"""
import functools

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")


def resolve_implementation(name: str, backend: str | None = None) -> str:
    """Maps `auto` to the fastest implementation available on `backend` (default: JAX's default backend)."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {name!r}; use one of {IMPLEMENTATIONS}")
    if name != "auto":
        return name
    backend = backend or jax.default_backend()
    return {"gpu": "cudnn", "tpu": "splash"}.get(backend, "xla")


def attention_mask(segment_ids_BxL: jax.Array, causal: bool) -> jax.Array:
    """[B,1,L,L] boolean: query i may attend key j."""
    same_segment_BxLxL = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
    allowed_BxLxL = same_segment_BxLxL & (segment_ids_BxL[:, None, :] != 0)
    if causal:
        length = segment_ids_BxL.shape[1]
        allowed_BxLxL &= jnp.tril(jnp.ones((length, length), bool))[None]
    return allowed_BxLxL[:, None]


def xla_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal: bool) -> jax.Array:
    scale = q_BxLxHxK.shape[-1] ** -0.5
    logits_BxHxLxL = jnp.einsum("bqhk,bthk->bhqt", q_BxLxHxK, k_BxLxHxK, preferred_element_type=jnp.float32)
    logits_BxHxLxL = jnp.where(attention_mask(segment_ids_BxL, causal), logits_BxHxLxL * scale, -1e30)
    probs_BxHxLxL = jax.nn.softmax(logits_BxHxLxL, axis=-1).astype(v_BxLxHxK.dtype)
    return jnp.einsum("bhqt,bthk->bqhk", probs_BxHxLxL, v_BxLxHxK)


def cudnn_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal: bool) -> jax.Array:
    mask = attention_mask(segment_ids_BxL, causal=False)  # causality goes through the kernel's own flag
    return jax.nn.dot_product_attention(
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask=mask, is_causal=causal, implementation="cudnn")


def splash_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal: bool) -> jax.Array:
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    _, length, num_heads, head_dim = q_BxLxHxK.shape
    base = masks.CausalMask((length, length)) if causal else masks.FullMask((length, length))
    kernel = splash.make_splash_mha(masks.MultiHeadMask([base] * num_heads), head_shards=1, q_seq_shards=1)
    # The kernel takes [H, L, K] per sequence and leaves scaling to the caller.
    to_hlk = functools.partial(jnp.swapaxes, axis1=0, axis2=1)
    segments = jax.vmap(lambda s: splash.SegmentIds(q=s, kv=s))(segment_ids_BxL)
    out_BxHxLxK = jax.vmap(kernel)(
        jax.vmap(to_hlk)(q_BxLxHxK * head_dim ** -0.5), jax.vmap(to_hlk)(k_BxLxHxK), jax.vmap(to_hlk)(v_BxLxHxK),
        segment_ids=segments)
    return jnp.swapaxes(out_BxHxLxK, 1, 2)


_KERNELS = {"xla": xla_attention, "cudnn": cudnn_attention, "splash": splash_attention}


def dot_product_attention(q_BxLxHxK: jax.Array, k_BxLxHxK: jax.Array, v_BxLxHxK: jax.Array,
                          segment_ids_BxL: jax.Array, causal: bool, implementation: str = "auto") -> jax.Array:
    """Softmax attention; returns [B,L,H,K]. Queries of padding rows produce unspecified (finite) values."""
    kernel = _KERNELS[resolve_implementation(implementation)]
    return kernel(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal)
