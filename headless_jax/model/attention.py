"""Multi-head dot-product attention behind one function, with implementations per backend.

`xla` is the reference (plain einsums, float32 softmax, runs anywhere); `cudnn` is the fused flash kernel
through `jax.nn.dot_product_attention`; `splash` is the Pallas TPU kernel. `auto` picks per backend.
Masking is always causal (optional) ∧ same segment ∧ key not padding (segment id 0 = padding).
"""
import functools

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128  # 256 on Hopper and later; 128 holds on every GPU cuDNN's flash kernel supports
SPLASH_BLOCK = 128  # the kernel's default q/kv tile: the sequence must be a multiple of it
PREFERRED = {"gpu": "cudnn", "tpu": "splash"}  # per backend; xla elsewhere


def unsupported_reason(implementation: str, dtype, length: int, head_dim: int, backend: str) -> str | None:
    """Why `implementation` cannot take [B,length,H,head_dim] inputs of `dtype` on `backend` (None if it can)."""
    if implementation == "cudnn":
        if backend != "gpu":
            return f"cuDNN attention needs a GPU backend, not {backend!r}"
        if jnp.dtype(dtype) not in CUDNN_DTYPES:
            return f"cuDNN flash attention takes bfloat16 or float16 inputs, not {jnp.dtype(dtype).name}"
        if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
            return f"cuDNN needs a head_dim that is a multiple of 8 and at most {CUDNN_MAX_HEAD_DIM}, not {head_dim}"
        if length % 2:  # the segment mask enters the kernel as a bias, which training needs at even lengths
            return f"cuDNN with a mask needs an even sequence length, not {length}"
    if implementation == "splash":
        if backend != "tpu":
            return f"splash attention is a TPU kernel; the backend is {backend!r}"
        if length % SPLASH_BLOCK:
            return f"splash attention tiles the sequence in blocks of {SPLASH_BLOCK}; {length} is not a multiple"
    return None


def resolve_implementation(name: str, dtype, length: int, head_dim: int, backend: str | None = None) -> str:
    """The implementation that runs: `auto` is the backend's fused kernel where it can take these inputs
    (cuDNN on GPU for bfloat16/float16, splash on TPU for lengths that are multiples of 128), else `xla`.
    An explicit kernel that cannot take them is an error naming the reason."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {name!r}; use one of {IMPLEMENTATIONS}")
    backend = backend or jax.default_backend()
    if name == "auto":
        preferred = PREFERRED.get(backend, "xla")
        return "xla" if unsupported_reason(preferred, dtype, length, head_dim, backend) else preferred
    reason = unsupported_reason(name, dtype, length, head_dim, backend)
    if reason:
        raise ValueError(f"attention implementation {name!r} cannot run here: {reason}. Set "
                         "--config.model.attention=auto (falls back to xla) or change the model")
    return name


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
    """cuDNN flash kernel. The segment/padding mask reaches it as a [B,1,L,L] additive bias (large negative
    where masked), so it costs B·L² memory (and JAX's cuDNN backward also forms that bias's unused gradient);
    fully masked (padding) query rows stay finite."""
    mask = attention_mask(segment_ids_BxL, causal=False)  # causality goes through the kernel's own flag
    return jax.nn.dot_product_attention(
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask=mask, is_causal=causal, implementation="cudnn")


def splash_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal: bool,
                     interpret: bool = False) -> jax.Array:
    """Splash kernel; `interpret=True` runs it through the Pallas interpreter (any backend; for tests only).
    Padding (segment 0) keys are masked for real queries because their segment differs."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    _, length, num_heads, head_dim = q_BxLxHxK.shape
    base = masks.CausalMask((length, length)) if causal else masks.FullMask((length, length))
    kernel = splash.make_splash_mha(masks.MultiHeadMask([base] * num_heads), head_shards=1, q_seq_shards=1,
                                    interpret=interpret)
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
    _, length, _, head_dim = q_BxLxHxK.shape
    kernel = _KERNELS[resolve_implementation(implementation, q_BxLxHxK.dtype, length, head_dim)]
    return kernel(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal)
