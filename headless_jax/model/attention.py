"""Multi-head dot-product attention behind one function, with implementations per backend.

`xla` is the reference (plain einsums, float32 softmax, runs anywhere); `cudnn` is the fused flash kernel
through `jax.nn.dot_product_attention`; `splash` is the Pallas TPU kernel. `auto` picks per backend.
Masking is always causal (optional) ∧ same segment ∧ key not padding (segment id 0 = padding). A prefix LM
adds: a query in the prefix may attend every key of the prefix (of its own segment). A BPDec decoder layer may hide
some keys from every query (`visible_keys_BxL`: its masked positions, gradually unmasked).
"""
import functools

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128  # 256 on Hopper and later; 128 holds on every GPU cuDNN's flash kernel supports
SPLASH_BLOCK = 128  # the kernel's default q/kv tile: the sequence must be a multiple of it
PREFERRED = {"gpu": "cudnn", "tpu": "splash"}  # per backend; xla elsewhere
XLA_CAUSAL_CHUNK = 128  # query rows per chunk of the causal xla path


def unsupported_reason(implementation: str, dtype, length: int, head_dim: int, backend: str,
                       prefix: bool = False) -> str | None:
    """Why `implementation` cannot take [B,length,H,head_dim] inputs of `dtype` on `backend` (None if it can);
    `prefix`: with a per-row mask (a prefix LM's prefix, a BPDec layer's hidden keys)."""
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
        if prefix:
            return ("splash attention's masks are fixed when it is built; a per-row mask (a prefix LM's prefix, BPDec's "
                    "hidden keys) needs xla or cudnn")
        if backend != "tpu":
            return f"splash attention is a TPU kernel; the backend is {backend!r}"
        if length % SPLASH_BLOCK:
            return f"splash attention tiles the sequence in blocks of {SPLASH_BLOCK}; {length} is not a multiple"
    return None


def resolve_implementation(name: str, dtype, length: int, head_dim: int, backend: str | None = None,
                           prefix: bool = False) -> str:
    """The implementation that runs: `auto` is the backend's fused kernel where it can take these inputs
    (cuDNN on GPU for bfloat16/float16, splash on TPU for lengths that are multiples of 128), else `xla`.
    An explicit kernel that cannot take them is an error naming the reason."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {name!r}; use one of {IMPLEMENTATIONS}")
    backend = backend or jax.default_backend()
    if name == "auto":
        preferred = PREFERRED.get(backend, "xla")
        return "xla" if unsupported_reason(preferred, dtype, length, head_dim, backend, prefix) else preferred
    reason = unsupported_reason(name, dtype, length, head_dim, backend, prefix)
    if reason:
        raise ValueError(f"attention implementation {name!r} cannot run here: {reason}. Set "
                         "--config.model.attention=auto (falls back to xla) or change the model")
    return name


def attention_mask(segment_ids_BxL: jax.Array, causal: bool, query_start: int = 0,
                   query_length: int | None = None, prefix_BxL: jax.Array | None = None,
                   visible_keys_BxL: jax.Array | None = None) -> jax.Array:
    """[B,1,Q,T] boolean: query i (rows query_start … query_start+Q of the sequence) may attend key j < T.
    prefix_BxL (causal, whole rows only): also where query and key are both in the prefix. visible_keys_BxL
    (whole rows only): only keys marked True, except that every query still sees itself."""
    query_length = query_length or segment_ids_BxL.shape[1] - query_start
    key_segments_BxT = segment_ids_BxL[:, :query_start + query_length] if causal else segment_ids_BxL
    query_segments_BxQ = segment_ids_BxL[:, query_start:query_start + query_length]
    same_segment_BxQxT = query_segments_BxQ[:, :, None] == key_segments_BxT[:, None, :]
    allowed_BxQxT = same_segment_BxQxT & (key_segments_BxT[:, None, :] != 0)
    if causal:
        query_positions = query_start + jnp.arange(query_length)
        visible_BxQxT = (query_positions[:, None] >= jnp.arange(key_segments_BxT.shape[1])[None, :])[None]
        if prefix_BxL is not None:
            visible_BxQxT = visible_BxQxT | (prefix_BxL[:, :, None] & prefix_BxL[:, None, :])
        allowed_BxQxT &= visible_BxQxT
    if visible_keys_BxL is not None:  # its own key stays: no real query is left with no key at all
        allowed_BxQxT &= visible_keys_BxL[:, None, :] | jnp.eye(segment_ids_BxL.shape[1], dtype=bool)[None]
    return allowed_BxQxT[:, None]


def _softmax_attention(q_BxQxHxK, k_BxTxHxK, v_BxTxHxK, mask_Bx1xQxT) -> jax.Array:
    scale = q_BxQxHxK.shape[-1] ** -0.5
    logits_BxHxQxT = jnp.einsum("bqhk,bthk->bhqt", q_BxQxHxK, k_BxTxHxK, preferred_element_type=jnp.float32)
    logits_BxHxQxT = jnp.where(mask_Bx1xQxT, logits_BxHxQxT * scale, -1e30)
    probs_BxHxQxT = jax.nn.softmax(logits_BxHxQxT, axis=-1).astype(v_BxTxHxK.dtype)
    return jnp.einsum("bhqt,bthk->bqhk", probs_BxHxQxT, v_BxTxHxK)


def xla_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal: bool, prefix_BxL=None,
                  visible_keys_BxL=None, causal_chunk: int = XLA_CAUSAL_CHUNK) -> jax.Array:
    """Plain einsums. Causal and longer than `causal_chunk`: queries go in chunks that only score the keys up
    to their own end, which skips the upper triangle: C chunks do (C+1)/2C of the L² work (16 at L = 2048: 53 %).
    A prefix LM's prefix queries see keys past their own end, so it takes the whole square."""
    length = q_BxLxHxK.shape[1]
    if (not causal or prefix_BxL is not None or visible_keys_BxL is not None or length <= causal_chunk
            or length % causal_chunk):
        mask = attention_mask(segment_ids_BxL, causal, prefix_BxL=prefix_BxL, visible_keys_BxL=visible_keys_BxL)
        return _softmax_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask)
    chunks = []
    for start in range(0, length, causal_chunk):
        end = start + causal_chunk
        mask = attention_mask(segment_ids_BxL, True, start, causal_chunk)
        chunks.append(_softmax_attention(q_BxLxHxK[:, start:end], k_BxLxHxK[:, :end], v_BxLxHxK[:, :end], mask))
    return jnp.concatenate(chunks, axis=1)


def cudnn_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal: bool, prefix_BxL=None,
                    visible_keys_BxL=None) -> jax.Array:
    """cuDNN flash kernel. The segment/padding mask reaches it as a [B,1,L,L] additive bias (large negative
    where masked), so it costs B·L² memory (and JAX's cuDNN backward also forms that bias's unused gradient);
    fully masked (padding) query rows stay finite. Causality goes through the kernel's own flag, except for a
    prefix LM, whose whole pattern is in the mask."""
    with_prefix = prefix_BxL is not None
    mask = attention_mask(segment_ids_BxL, causal=causal and with_prefix, prefix_BxL=prefix_BxL,
                          visible_keys_BxL=visible_keys_BxL)
    return jax.nn.dot_product_attention(
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, mask=mask, is_causal=causal and not with_prefix, implementation="cudnn")


def splash_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal: bool, prefix_BxL=None,
                     visible_keys_BxL=None, interpret: bool = False) -> jax.Array:
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
                          segment_ids_BxL: jax.Array, causal: bool, implementation: str = "auto",
                          prefix_BxL: jax.Array | None = None, visible_keys_BxL: jax.Array | None = None) -> jax.Array:
    """Softmax attention; returns [B,L,H,K]. Queries of padding rows produce unspecified (finite) values.
    prefix_BxL (causal only): bool, the prefix LM's prefix tokens, which attend each other both ways.
    visible_keys_BxL: bool, the keys every query may see (besides itself); None: all."""
    _, length, _, head_dim = q_BxLxHxK.shape
    with_prefix = causal and prefix_BxL is not None
    per_row = with_prefix or visible_keys_BxL is not None
    kernel = _KERNELS[resolve_implementation(implementation, q_BxLxHxK.dtype, length, head_dim, prefix=per_row)]
    return kernel(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal, prefix_BxL if with_prefix else None,
                  visible_keys_BxL)
