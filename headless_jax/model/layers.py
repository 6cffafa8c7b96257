"""The pieces of a transformer block: norms, attention with rotary positions, MLP.

Every parameter is created with logical axis names (see `headless_jax.config.DEFAULT_AXIS_RULES`), so the
mesh layout is chosen by rules, never here.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from headless_jax.model.attention import dot_product_attention


def dense_init(std: float, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def zeros_init(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


class Norm(nn.Module):
    """LayerNorm or RMSNorm over the last axis, computed in float32."""
    kind: str
    eps: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        ones = nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",))
        scale_D = self.param("scale", ones, (x_BxLxD.shape[-1],))
        x = x_BxLxD.astype(jnp.float32)
        if self.kind == "layernorm":
            x = x - x.mean(-1, keepdims=True)
            y = x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + self.eps) * scale_D
            y = y + self.param("bias", zeros_init(("norm",)), (x.shape[-1],))
        else:  # rmsnorm
            y = x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + self.eps) * scale_D
        return y.astype(self.dtype)


def make_norm(cfg, name: str | None = None) -> Norm:
    return Norm(cfg.norm, cfg.norm_eps, jnp.dtype(cfg.dtype), name=name)


def gelu(cfg, x: jax.Array) -> jax.Array:
    """GELU in the model's form: the tanh approximation, or the exact erf form of HF BERT and Pythia."""
    return nn.gelu(x, approximate=cfg.gelu_approximate)


def rotate(x_BxLxHxK: jax.Array, positions_BxL: jax.Array, fraction: float, base: float) -> jax.Array:
    """GPT-NeoX rotary embedding on the first `fraction` of head dims (the rest pass through)."""
    head_dim = x_BxLxHxK.shape[-1]
    rotary_dim = int(head_dim * fraction) // 2 * 2
    if rotary_dim == 0:
        return x_BxLxHxK
    half = rotary_dim // 2
    inv_freq_R = 1.0 / base ** (jnp.arange(half, dtype=jnp.float32) / half)
    angles_BxLxR = positions_BxL[..., None].astype(jnp.float32) * inv_freq_R
    cos, sin = jnp.cos(angles_BxLxR)[:, :, None], jnp.sin(angles_BxLxR)[:, :, None]
    x_rot, x_pass = x_BxLxHxK[..., :rotary_dim].astype(jnp.float32), x_BxLxHxK[..., rotary_dim:]
    x1, x2 = x_rot[..., :half], x_rot[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxLxHxK.dtype)
    return jnp.concatenate([rotated, x_pass], axis=-1)


class Projection(nn.Module):
    """`einsum(x, kernel) + bias` with a multi-axis kernel (e.g. [D, H, Dh]) named by logical axes."""
    equation: str
    kernel_shape: tuple[int, ...]
    kernel_axes: tuple[str, ...]
    bias_dims: int  # the bias covers the kernel's last `bias_dims` axes
    cfg: object

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        kernel = self.param("kernel", dense_init(cfg.init_std, self.kernel_axes), self.kernel_shape)
        y = jnp.einsum(self.equation, x.astype(dtype), kernel.astype(dtype))
        if cfg.use_bias:
            n = self.bias_dims
            y = y + self.param("bias", zeros_init(self.kernel_axes[-n:]), self.kernel_shape[-n:]).astype(dtype)
        return y


class Attention(nn.Module):
    cfg: object
    causal: bool | None = None  # None: cfg.causal

    @nn.compact
    def __call__(self, x_BxLxD, segment_ids_BxL, positions_BxL, deterministic: bool,
                 prefix_BxL: jax.Array | None = None, visible_keys_BxL: jax.Array | None = None) -> jax.Array:
        cfg = self.cfg
        heads = (cfg.num_heads, cfg.head_dim)

        def project(name):
            return Projection("bld,dhk->blhk", (cfg.d_model, *heads), ("embed", "heads", "kv"), 2, cfg,
                              name=name)(x_BxLxD)

        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = project("query"), project("key"), project("value")
        if cfg.positions == "rotary":
            q_BxLxHxK = rotate(q_BxLxHxK, positions_BxL, cfg.rotary_fraction, cfg.rotary_base)
            k_BxLxHxK = rotate(k_BxLxHxK, positions_BxL, cfg.rotary_fraction, cfg.rotary_base)
        axes = ("batch", "length", "act_heads", "kv")
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = (nn.with_logical_constraint(a, axes) for a in (q_BxLxHxK, k_BxLxHxK, v_BxLxHxK))
        causal = cfg.causal if self.causal is None else self.causal
        out_BxLxHxK = dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, segment_ids_BxL, causal=causal,
                                            implementation=cfg.attention, prefix_BxL=prefix_BxL,
                                            visible_keys_BxL=visible_keys_BxL)
        out_BxLxD = Projection("blhk,hkd->bld", (*heads, cfg.d_model), ("heads", "kv", "embed"), 1, cfg,
                               name="out")(out_BxLxHxK)
        out_BxLxD = nn.Dropout(cfg.dropout_rate)(out_BxLxD, deterministic=deterministic)
        return nn.with_logical_constraint(out_BxLxD, ("batch", "length", "act_embed"))


class Mlp(nn.Module):
    cfg: object

    @nn.compact
    def __call__(self, x_BxLxD, deterministic: bool) -> jax.Array:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)

        def dense(features, axes, name):
            return nn.Dense(features, use_bias=cfg.use_bias, dtype=dtype, name=name,
                            kernel_init=dense_init(cfg.init_std, axes), bias_init=zeros_init(axes[1:]))

        if cfg.activation == "gelu":
            h_BxLxF = gelu(cfg, dense(cfg.mlp_dim, ("embed", "mlp"), "wi")(x_BxLxD))
        else:  # swiglu
            gate_BxLxF = dense(cfg.mlp_dim, ("embed", "mlp"), "wi_gate")(x_BxLxD)
            h_BxLxF = nn.silu(gate_BxLxF) * dense(cfg.mlp_dim, ("embed", "mlp"), "wi_up")(x_BxLxD)
        h_BxLxF = nn.with_logical_constraint(h_BxLxF, ("batch", "length", "act_mlp"))
        out_BxLxD = dense(cfg.d_model, ("mlp", "embed"), "wo")(h_BxLxF)
        out_BxLxD = nn.Dropout(cfg.dropout_rate)(out_BxLxD, deterministic=deterministic)
        return nn.with_logical_constraint(out_BxLxD, ("batch", "length", "act_embed"))
