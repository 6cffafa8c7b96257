"""ELECTRA's generator: a narrower transformer of the model's depth that reads the model's word embeddings E and
proposes replacements for the masked tokens. Trained alongside the model in pretraining only (docs/objectives.md):
its parameters sit under their own subtree, which fine-tuning, evaluation and export never read.

Width: a share f of the model's heads (at least one, same head size), so d = round(f·H)·Dh, and f of its MLP.
It reads E through a learned projection to its width and keeps its own positions and norms. Its output is
either projected back to E's width (headless, model.head='none': CWT against E[targets]) or fed to a BERT head tied to
E (classical, model.head='tied'): for an ELECTRA model, model.head names the generator's head; the discriminator
has none.
"""
import flax.linen as nn
import jax
import ml_collections

from headless_jax.model.heads import VocabularyHead
from headless_jax.model.layers import dense_init
from headless_jax.model.transformer import Transformer


def generator_config(model_cfg, fraction: float) -> ml_collections.FrozenConfigDict:
    """The generator's body config: `model_cfg` (an encoder's) at `fraction` of its heads and MLP width, unrouted."""
    cfg = ml_collections.ConfigDict(model_cfg.to_dict())  # a copy (a FrozenConfigDict's as_configdict is a view)
    num_heads = max(1, round(fraction * cfg.num_heads))
    cfg.update(num_heads=num_heads, d_model=num_heads * cfg.head_dim, mlp_dim=max(1, round(fraction * cfg.mlp_dim)),
               head="none", electra_generator=0.0, causal=False)
    cfg.routing.kind = "none"
    return ml_collections.FrozenConfigDict(cfg)


class Generator(nn.Module):
    """tokens (indexing `embedding_VxD`) → hidden states [B,L,d], and its head: `project` back to E's width for a
    headless generator (model.head='none'), `decoder` for the classical one (model.head='tied')."""
    cfg: object  # the model's config (the discriminator's)

    def setup(self):
        self.body = Transformer(generator_config(self.cfg, self.cfg.electra_generator))
        if self.cfg.head == "none":  # headless: CWT compares the projection with E[targets]
            self.projection = nn.Dense(self.cfg.d_model, dtype=self.cfg.dtype, name="projection",
                                       kernel_init=dense_init(self.cfg.init_std, ("embed", "act_embed")))
        else:  # classical: BERT's transform to E's width and a decoder tied to E (+ bias)
            self.head = VocabularyHead(self.cfg)

    def __call__(self, tokens_BxL, segment_ids_BxL, positions_BxL, embedding_VxD: jax.Array,
                 deterministic: bool = True) -> jax.Array:
        return self.body(tokens_BxL, segment_ids_BxL, positions_BxL, deterministic, embedding_VxD)

    def project(self, h_NxD: jax.Array) -> jax.Array:
        return self.projection(h_NxD)

    def decoder(self, h_NxD: jax.Array, embedding_VxD: jax.Array):
        return self.head(h_NxD, embedding_VxD)
