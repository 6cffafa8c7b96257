"""The transformer body shared by encoders and decoders: embeddings, blocks, final norm → hidden states."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from headless_jax.model.layers import Attention, Mlp, dense_init, make_norm
from headless_jax.model.routing import COLLECTION, SkipRouter, TopkRouter, route_skip, route_topk, routed_layers

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nn.Module):
    """One layer: pre-norm, post-norm (BERT) or parallel-residual (Pythia) wiring of attention and MLP.

    A `routed` block (Learning to Skip) lets its router decide per token whether the whole block, its attention or
    its MLP runs (headless_jax.model.routing); the wiring is written as steps (x, segment_ids, positions) →
    new x so that the router can run a step on a subset of tokens.
    """
    cfg: object
    deterministic: bool
    routed: bool = False
    causal: bool | None = None  # None: cfg.causal (a biphasic CLM → MLM run trains its encoder causally first)

    @nn.compact
    def __call__(self, x_BxLxD, segment_ids_BxL, positions_BxL, prefix_BxL=None, visible_keys_BxL=None):
        cfg = self.cfg
        attention = Attention(cfg, self.causal, name="attention")
        mlp = Mlp(cfg, name="mlp")
        norm_attention, norm_mlp = make_norm(cfg, "norm_attention"), make_norm(cfg, "norm_mlp")
        skipped = cfg.routing.skip if self.routed else None  # block | attention | mlp

        def run(part, step, x, segment_ids, positions):
            """`step` on every token, or on the tokens the router picks where `part` is the routed one."""
            if part != skipped:
                return step(x, segment_ids, positions)
            return self.route(step, x, segment_ids, positions, norm_mlp if part == "mlp" else norm_attention)

        def attend(h, segment_ids, positions):  # (a prefix LM or a BPDec decoder is not routed: validated)
            return attention(h, segment_ids, positions, self.deterministic, prefix_BxL, visible_keys_BxL)

        def feed_forward(h):
            return mlp(h, self.deterministic)

        if cfg.norm_position == "post":
            def attention_step(x, s, p):
                return norm_attention(x + attend(x, s, p))

            def mlp_step(x, s, p):
                return norm_mlp(x + feed_forward(x))
        else:
            def attention_step(x, s, p):
                return x + attend(norm_attention(x), s, p)

            def mlp_step(x, s, p):
                return x + feed_forward(norm_mlp(x))

        x, s, p = x_BxLxD, segment_ids_BxL, positions_BxL
        if cfg.parallel_residual and cfg.norm_position == "pre":  # x + attn(ln1 x) + mlp(ln2 x)
            if skipped == "mlp":
                x = run("mlp", mlp_step, x, s, p) + attend(norm_attention(x), s, p)
            elif skipped == "block":
                x = run("block", lambda x, s, p: attention_step(x, s, p) + feed_forward(norm_mlp(x)), x, s, p)
            else:
                x = run("attention", attention_step, x, s, p) + feed_forward(norm_mlp(x))
        elif skipped == "block":
            x = run("block", lambda x, s, p: mlp_step(attention_step(x, s, p), s, p), x, s, p)
        else:
            x = run("mlp", mlp_step, run("attention", attention_step, x, s, p), s, p)
        x_BxLxD = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
        return x_BxLxD, None  # (carry, per-layer output) so the same block works under nn.scan

    def route(self, step, x_BxLxD, segment_ids_BxL, positions_BxL, norm):
        """Runs `step` on the tokens the router picks; sows the layer's routing statistics."""
        cfg, routing = self.cfg, self.cfg.routing
        # The router reads the layer's normed input: the routed step's own norm (post-norm inputs are normed).
        h_BxLxD = x_BxLxD if cfg.norm_position == "post" else norm(x_BxLxD)
        if routing.kind == "skip":
            rng = None if self.deterministic else self.make_rng("dropout")  # Gumbel noise: a training-only stream
            x_BxLxD, stats = route_skip(SkipRouter(cfg, name="router")(h_BxLxD), rng, routing.temperature, step,
                                        x_BxLxD, segment_ids_BxL, positions_BxL)
        else:
            score_BxL, predictor_BxL = TopkRouter(cfg, name="router")(h_BxLxD)
            use_predictor = cfg.causal and self.deterministic  # causal inference must not look at future tokens
            x_BxLxD, stats = route_topk(score_BxL, predictor_BxL, routing.capacity, use_predictor, step, x_BxLxD,
                                        segment_ids_BxL, positions_BxL)
        for name, value in stats.items():
            self.sow(COLLECTION, name, value)
        return x_BxLxD


class Transformer(nn.Module):
    """tokens [B,L] → final hidden states [B,L,D] (after the final norm: what a classical head would see)."""
    cfg: object

    @nn.compact
    def __call__(self, tokens_BxL, segment_ids_BxL, positions_BxL, deterministic: bool = True,
                 embedding_rows_UxD: jax.Array | None = None, causal: bool | None = None,
                 prefix_BxL: jax.Array | None = None) -> jax.Array:
        """embedding_rows_UxD: rows of E given in its place (a sparse embedding update differentiates them, ELECTRA's
        generator reads the model's E through a projection when narrower); `tokens_BxL` then index those rows.
        causal: overrides cfg.causal for attention (the head keeps the config's layout). prefix_BxL: bool, the tokens of a prefix LM's prefix (bidirectional among themselves)."""
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        if embedding_rows_UxD is None:
            embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, name="embed",
                             embedding_init=dense_init(cfg.init_std, ("vocab", "embed")))
            x_BxLxD = embed(tokens_BxL)
        else:  # the lookup nn.Embed does, in a table of U rows
            x_BxLxD = jnp.take(embedding_rows_UxD.astype(dtype), tokens_BxL, axis=0)
            if embedding_rows_UxD.shape[-1] != cfg.d_model:  # a narrower body reading a wider E (ELECTRA's generator)
                x_BxLxD = nn.Dense(cfg.d_model, use_bias=False, dtype=dtype, name="embed_projection",
                                   kernel_init=dense_init(cfg.init_std, ("embed", "act_embed")))(x_BxLxD)
        if cfg.positions == "learned":
            position_embed = nn.Embed(cfg.max_len, cfg.d_model, dtype=dtype, name="position_embed",
                                      embedding_init=dense_init(cfg.init_std, ("positions", "embed")))
            x_BxLxD = x_BxLxD + position_embed(positions_BxL)
        if cfg.norm_position == "post":  # BERT normalises the embeddings; pre-norm models normalise at the end
            x_BxLxD = make_norm(cfg, "embed_norm")(x_BxLxD)
        x_BxLxD = nn.Dropout(cfg.dropout_rate)(x_BxLxD, deterministic=deterministic)
        x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "act_embed"))

        routed = routed_layers(cfg)
        block = Block
        if cfg.remat != "none":
            block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:  # one block shape for all layers: routing, if any, covers every layer (validated)
            layers = nn.scan(block, variable_axes={"params": 0, COLLECTION: 0},
                             split_rngs={"params": True, "dropout": True},
                             in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                             metadata_params={nn.PARTITION_NAME: "layers"})
            x_BxLxD, _ = layers(cfg, deterministic, bool(routed), causal, name="layers")(
                x_BxLxD, segment_ids_BxL, positions_BxL, prefix_BxL)
        else:
            for i in range(cfg.num_layers):
                x_BxLxD, _ = block(cfg, deterministic, i in routed, causal, name=f"layer_{i}")(
                    x_BxLxD, segment_ids_BxL, positions_BxL, prefix_BxL)
        if cfg.norm_position == "pre":
            x_BxLxD = make_norm(cfg, "final_norm")(x_BxLxD)
        return x_BxLxD
