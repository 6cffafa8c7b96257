"""The language model: a transformer body returning hidden states, plus an optional vocabulary head.

Outside this package, parameters are reached through the accessors below, never through tree paths.
"""
import flax.linen as nn
import jax
import ml_collections

from headless_jax.model.heads import VocabularyHead, head_logits
from headless_jax.model.transformer import Transformer

BODY, HEAD = "body", "head"  # a model's two parameter subtrees: the transformer, and its (vocabulary or task) head
DECODER_PATH = (HEAD, "decoder")  # an untied vocabulary head's [V,D] matrix
_EMBEDDING_PATH = (BODY, "embed", "embedding")


class LanguageModel(nn.Module):
    """`__call__` → final hidden states [B,L,D]; `decoder` / `logits` apply the head (classical models only)."""
    config: ml_collections.FrozenConfigDict  # the `model` section of an experiment config

    def setup(self):
        self.body = Transformer(self.config)
        if self.config.head != "none":
            self.head = VocabularyHead(self.config)

    def __call__(self, tokens_BxL, segment_ids_BxL, positions_BxL, deterministic: bool = True,
                 embedding_rows_UxD: jax.Array | None = None, causal: bool | None = None,
                 prefix_BxL: jax.Array | None = None) -> jax.Array:
        """See Transformer.__call__ for the optional arguments."""
        h_BxLxD = self.body(tokens_BxL, segment_ids_BxL, positions_BxL, deterministic, embedding_rows_UxD, causal,
                            prefix_BxL)
        if self.is_initializing() and self.config.head != "none":
            self.decoder(h_BxLxD[:, 0])  # create the head's parameters at init
        return h_BxLxD

    def decoder(self, h_NxD: jax.Array):
        """(features [N,D], weight [V,D], bias [V] | None) of the vocabulary head."""
        if self.config.head == "none":
            raise ValueError("this model is headless (model.head='none'): it has no vocabulary head; "
                             "rank tokens with o·Eᵀ, or set --config.model.head=tied|untied")
        return self.head(h_NxD, embedding_matrix({BODY: self.body.variables["params"]}))

    def logits(self, h_NxD: jax.Array) -> jax.Array:
        return head_logits(*self.decoder(h_NxD))


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


__all__ = ["BODY", "DECODER_PATH", "HEAD", "LanguageModel", "embedding_matrix", "head_logits", "with_embedding",
           "without_embedding"]
