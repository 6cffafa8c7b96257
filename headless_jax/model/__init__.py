"""The language model: a transformer body returning hidden states, plus an optional vocabulary head.

Outside this package, parameters are reached through the accessors below, never through tree paths.
"""
import flax.linen as nn
import jax
import ml_collections

from headless_jax.model.generator import Generator
from headless_jax.model.heads import ReplacedTokenHead, VocabularyHead, head_logits
from headless_jax.model.mlm_decoder import MlmDecoder
from headless_jax.model.transformer import Transformer

BODY, HEAD = "body", "head"  # a model's two parameter subtrees: the transformer, and its (vocabulary or task) head
# Pretraining-only subtrees, which downstream jobs never read (they read BODY alone): ELECTRA's generator (with the
# vocabulary head, if classical) and replaced-token detector (model.electra_generator > 0), BPDec's MLM decoder
# (model.mlm_decoder_layers > 0)
GENERATOR, DETECTOR, MLM_DECODER = "generator", "detector", "mlm_decoder"
PRETRAINING_ONLY = (GENERATOR, DETECTOR, MLM_DECODER)
DECODER_PATH = (HEAD, "decoder")  # an untied vocabulary head's [V,D] matrix
_EMBEDDING_PATH = (BODY, "embed", "embedding")


class LanguageModel(nn.Module):
    """`__call__` → final hidden states [B,L,D]; `decoder` / `logits` apply the head (classical models only).

    An ELECTRA model (model.electra_generator > 0) is the discriminator: `__call__` is its body, `detect` its
    replaced-token head, and `generate`, `generator_project` (headless) or `generator_decoder` (classical: model.head
    is the generator's) the generator's parts. A BPDec model (model.mlm_decoder_layers > 0) adds `mlm_decode`."""
    config: ml_collections.FrozenConfigDict  # the `model` section of an experiment config

    def setup(self):
        self.body = Transformer(self.config)
        if self.config.electra_generator:
            setattr(self, GENERATOR, Generator(self.config))
            setattr(self, DETECTOR, ReplacedTokenHead(self.config))
        elif self.config.head != "none":
            self.head = VocabularyHead(self.config)
        if self.config.mlm_decoder_layers:
            setattr(self, MLM_DECODER, MlmDecoder(self.config))

    def __call__(self, tokens_BxL, segment_ids_BxL, positions_BxL, deterministic: bool = True,
                 embedding_rows_UxD: jax.Array | None = None, causal: bool | None = None,
                 prefix_BxL: jax.Array | None = None) -> jax.Array:
        """See Transformer.__call__ for the optional arguments."""
        h_BxLxD = self.body(tokens_BxL, segment_ids_BxL, positions_BxL, deterministic, embedding_rows_UxD, causal,
                            prefix_BxL)
        if self.is_initializing():  # create the heads' (and an ELECTRA generator's) parameters at init
            if self.config.electra_generator:
                self.detect(h_BxLxD)
                g_BxLxD = self.generate(tokens_BxL, segment_ids_BxL, positions_BxL)
                (self.generator_project if self.config.head == "none" else self.generator_decoder)(g_BxLxD[:, 0])
            elif self.config.head != "none":
                self.decoder(h_BxLxD[:, 0])
            if self.config.mlm_decoder_layers:
                self.mlm_decode(h_BxLxD, segment_ids_BxL, positions_BxL, segment_ids_BxL == 0)
        return h_BxLxD

    def decoder(self, h_NxD: jax.Array):
        """(features [N,D], weight [V,D], bias [V] | None) of the vocabulary head."""
        if self.config.head == "none" or self.config.electra_generator:
            whose = "an ELECTRA discriminator (its generator holds any vocabulary head)" if (
                self.config.electra_generator) else "headless (model.head='none')"
            raise ValueError(f"this model is {whose}: it has no vocabulary head; rank tokens with o·Eᵀ, or set "
                             "--config.model.head=tied|untied")
        return self.head(h_NxD, self._embedding())

    def logits(self, h_NxD: jax.Array) -> jax.Array:
        return head_logits(*self.decoder(h_NxD))

    def generate(self, tokens_BxL, segment_ids_BxL, positions_BxL, deterministic: bool = True,
                 embedding_rows_UxD: jax.Array | None = None) -> jax.Array:
        """ELECTRA: the generator's hidden states [B,L,d] (d: its width) on `tokens_BxL`, read from E (or the rows
        of it given in its place)."""
        table_UxD = self._embedding() if embedding_rows_UxD is None else embedding_rows_UxD
        return getattr(self, GENERATOR)(tokens_BxL, segment_ids_BxL, positions_BxL, table_UxD, deterministic)

    def generator_project(self, g_NxD: jax.Array) -> jax.Array:
        """ELECTRA, headless generator: its outputs at E's width, scored by CWT against E[targets]."""
        return getattr(self, GENERATOR).project(g_NxD)

    def generator_decoder(self, g_NxD: jax.Array):
        """ELECTRA, classical generator: (features, weight, bias) of its vocabulary head, tied to E."""
        return getattr(self, GENERATOR).decoder(g_NxD, self._embedding())

    def mlm_decode(self, h_BxLxD, segment_ids_BxL, positions_BxL, hidden_BxL, deterministic: bool = True) -> jax.Array:
        """BPDec: the pretraining-only decoder's hidden states on the encoder's `h_BxLxD`; its first block hides the
        keys `hidden_BxL`."""
        return getattr(self, MLM_DECODER)(h_BxLxD, segment_ids_BxL, positions_BxL, hidden_BxL, deterministic)

    def detect(self, h_BxLxD: jax.Array) -> jax.Array:
        """ELECTRA: float32 logits [B,L] that each token was replaced."""
        return getattr(self, DETECTOR)(h_BxLxD)

    def _embedding(self) -> jax.Array:
        return nn.unbox(embedding_matrix({BODY: self.body.variables["params"]}))  # at init, E is still boxed


def embedding_matrix(params) -> jax.Array:
    """The word-embedding matrix E [V,D] from a LanguageModel's params (the CWT targets)."""
    for key in _EMBEDDING_PATH:
        params = params[key]
    return params


def with_embedding(params, table) -> dict:
    """`params` (with or without E) with `table` in E's place: E, or the rows of it a sparse update differentiates."""
    body, embed, leaf = _EMBEDDING_PATH
    return {**params, body: {**params[body], embed: {**params[body].get(embed, {}), leaf: table}}}


def without_embedding(params) -> dict:
    """`params` without E (what the dense optimiser updates when E is updated by rows)."""
    body, embed, _ = _EMBEDDING_PATH  # E is its module's only parameter
    return {**params, body: {name: tree for name, tree in params[body].items() if name != embed}}


__all__ = ["BODY", "DECODER_PATH", "DETECTOR", "GENERATOR", "HEAD", "MLM_DECODER", "PRETRAINING_ONLY", "LanguageModel",
           "embedding_matrix", "head_logits", "with_embedding", "without_embedding"]
