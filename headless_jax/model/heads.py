"""Vocabulary heads. A headless model has none; classical baselines and the LM-head fine-tuning use these.

A head is split into `features` (the BERT transform, or identity) and a decoder `weight_VxD` (+ `bias_V`), so
that the loss can either form full logits or stream over vocabulary chunks without materialising them.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from headless_jax.model.layers import dense_init, gelu, make_norm, zeros_init


class VocabularyHead(nn.Module):
    """MLM (BERT): dense + GELU + norm, tied decoder + bias. CLM (Pythia/GPT): tied or untied, no bias."""
    cfg: object

    @nn.compact
    def __call__(self, h_NxD: jax.Array, embedding_VxD: jax.Array):
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        features_NxD = h_NxD
        if not cfg.causal and cfg.mlm_head_transform:
            # The transform's output axis stays unsharded ('act_embed'): sharding it over 'tensor' while E's embed
            # axis is on 'fsdp' gave wrong gradients on a data×fsdp×tensor mesh (tests/test_train_step.py).
            features_NxD = nn.Dense(cfg.d_model, dtype=dtype, name="transform",
                                    kernel_init=dense_init(cfg.init_std, ("embed", "act_embed")),
                                    bias_init=zeros_init(("act_embed",)))(features_NxD)
            features_NxD = make_norm(cfg, "transform_norm")(gelu(cfg, features_NxD))
        if cfg.head == "tied":
            weight_VxD = embedding_VxD
        else:  # untied
            weight_VxD = self.param("decoder", dense_init(cfg.init_std, ("vocab", "embed")),
                                    (cfg.vocab_size, cfg.d_model))
        bias_V = None if cfg.causal else self.param("bias", zeros_init(("vocab",)), (cfg.vocab_size,))
        return features_NxD, weight_VxD, bias_V


def head_logits(features_NxD: jax.Array, weight_VxD: jax.Array, bias_V: jax.Array | None) -> jax.Array:
    """float32 logits [N,V] from head features and decoder."""
    logits_NxV = jnp.einsum("nd,vd->nv", features_NxD, weight_VxD.astype(features_NxD.dtype),
                            preferred_element_type=jnp.float32)
    return logits_NxV if bias_V is None else logits_NxV + bias_V



class ReplacedTokenHead(nn.Module):
    """ELECTRA's discriminator head: per token, dense + GELU + a logit that the token was replaced."""
    cfg: object

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array) -> jax.Array:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        h_BxLxD = gelu(cfg, nn.Dense(cfg.d_model, dtype=dtype, name="dense",
                                      kernel_init=dense_init(cfg.init_std, ("embed", "act_embed")),
                                      bias_init=zeros_init(("act_embed",)))(h_BxLxD))
        logit_BxLx1 = nn.Dense(1, dtype=dtype, name="logit", kernel_init=dense_init(cfg.init_std, ("embed", "classes")),
                               bias_init=zeros_init(("classes",)))(h_BxLxD)
        return logit_BxLx1[..., 0].astype(jnp.float32)
