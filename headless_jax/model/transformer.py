"""The transformer body shared by encoders and decoders: embeddings, blocks, final norm → hidden states."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from headless_jax.model.layers import Attention, Mlp, dense_init, make_norm

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nn.Module):
    """One layer: pre-norm, post-norm (BERT) or parallel-residual (Pythia) wiring of attention and MLP."""
    cfg: object
    deterministic: bool

    @nn.compact
    def __call__(self, x_BxLxD, segment_ids_BxL, positions_BxL):
        cfg = self.cfg
        attention = Attention(cfg, name="attention")
        mlp = Mlp(cfg, name="mlp")

        def attend(h):
            return attention(h, segment_ids_BxL, positions_BxL, self.deterministic)

        def feed_forward(h):
            return mlp(h, self.deterministic)

        norm_attention, norm_mlp = make_norm(cfg, "norm_attention"), make_norm(cfg, "norm_mlp")
        if cfg.norm_position == "post":
            x_BxLxD = norm_attention(x_BxLxD + attend(x_BxLxD))
            x_BxLxD = norm_mlp(x_BxLxD + feed_forward(x_BxLxD))
        elif cfg.parallel_residual:
            x_BxLxD = x_BxLxD + attend(norm_attention(x_BxLxD)) + feed_forward(norm_mlp(x_BxLxD))
        else:
            x_BxLxD = x_BxLxD + attend(norm_attention(x_BxLxD))
            x_BxLxD = x_BxLxD + feed_forward(norm_mlp(x_BxLxD))
        x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "act_embed"))
        return x_BxLxD, None  # (carry, per-layer output) so the same block works under nn.scan


class Transformer(nn.Module):
    """tokens [B,L] → final hidden states [B,L,D] (after the final norm: what a classical head would see)."""
    cfg: object

    @nn.compact
    def __call__(self, tokens_BxL, segment_ids_BxL, positions_BxL, deterministic: bool = True) -> jax.Array:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, name="embed",
                         embedding_init=dense_init(cfg.init_std, ("vocab", "embed")))
        x_BxLxD = embed(tokens_BxL)
        if cfg.positions == "learned":
            position_embed = nn.Embed(cfg.max_len, cfg.d_model, dtype=dtype, name="position_embed",
                                      embedding_init=dense_init(cfg.init_std, ("positions", "embed")))
            x_BxLxD = x_BxLxD + position_embed(positions_BxL)
        if cfg.norm_position == "post":  # BERT normalises the embeddings; pre-norm models normalise at the end
            x_BxLxD = make_norm(cfg, "embed_norm")(x_BxLxD)
        x_BxLxD = nn.Dropout(cfg.dropout_rate)(x_BxLxD, deterministic=deterministic)
        x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "act_embed"))

        block = Block
        if cfg.remat != "none":
            block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            layers = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                             in_axes=(nn.broadcast, nn.broadcast), length=cfg.num_layers,
                             metadata_params={nn.PARTITION_NAME: "layers"})
            x_BxLxD, _ = layers(cfg, deterministic, name="layers")(x_BxLxD, segment_ids_BxL, positions_BxL)
        else:
            for i in range(cfg.num_layers):
                x_BxLxD, _ = block(cfg, deterministic, name=f"layer_{i}")(x_BxLxD, segment_ids_BxL, positions_BxL)
        if cfg.norm_position == "pre":
            x_BxLxD = make_norm(cfg, "final_norm")(x_BxLxD)
        return x_BxLxD
