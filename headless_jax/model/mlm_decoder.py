"""BPDec (DrBERT)'s enhanced MLM decoder: transformer blocks on top of the encoder, used only in pretraining
(docs/objectives.md). Their parameters sit under their own subtree, which fine-tuning, evaluation and export never
read, so the downstream model, and its cost, is the plain encoder.

Gradual unmasking: the first decoder block hides the masked positions from every other query (as keys) except a
random share of them, unmasked there; every later block sees all positions. Blocks have the encoder's shape and
wiring; a pre-norm model's decoder ends with its own final norm, as the encoder does.
"""
import flax.linen as nn
import jax

from headless_jax.model.layers import make_norm
from headless_jax.model.transformer import Block


class MlmDecoder(nn.Module):
    """Encoder hidden states [B,L,D] → decoder hidden states [B,L,D], through model.mlm_decoder_layers blocks."""
    cfg: object

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array, segment_ids_BxL: jax.Array, positions_BxL: jax.Array,
                 hidden_BxL: jax.Array, deterministic: bool = True) -> jax.Array:
        """hidden_BxL: bool, the keys the first block hides (the masked positions it does not unmask)."""
        x_BxLxD = h_BxLxD
        for i in range(self.cfg.mlm_decoder_layers):
            visible_keys_BxL = ~hidden_BxL if i == 0 else None
            x_BxLxD, _ = Block(self.cfg, deterministic, causal=False, name=f"layer_{i}")(
                x_BxLxD, segment_ids_BxL, positions_BxL, None, visible_keys_BxL)
        if self.cfg.norm_position == "pre":
            x_BxLxD = make_norm(self.cfg, "final_norm")(x_BxLxD)
        return x_BxLxD
