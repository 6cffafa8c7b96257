"""Objectives: (MLM | CLM) × (cwt | ce | cwt+ce), as pure functions of (params, batch, rng).

Both tasks reduce to the same shape: hidden states o [B,S,D] at S predicted positions per sequence, their
targets [B,S] (always the original tokens) and validity [B,S]. CWT scores o against E[targets] within
negative groups; CE scores it against the vocabulary head. Same body, data and masking for both.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from headless_jax.model import embedding_matrix
from headless_jax.objectives.ce import cross_entropy, logits_stats, vocab_stats
from headless_jax.objectives.cwt import cwt_loss
from headless_jax.objectives.masking import SpecialTokens, mask_tokens
from headless_jax.objectives.reduce import weighted_mean

TASKS = ("mlm", "clm")
LOSSES = ("cwt", "ce", "cwt+ce")
ACCURACY_VOCAB_CHUNK = 4096  # headless accuracy: vocabulary rows scored at a time

# (params, batch, rng, deterministic) -> (loss, metrics)
ObjectiveFn = Callable[[dict, dict, jax.Array, bool], tuple[jax.Array, dict]]


def next_token_targets(tokens_BxL: jax.Array, segment_ids_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """CLM: targets [B,L-1] = the next tokens, valid where the next token is in the same (non-padding) document."""
    targets_BxS = tokens_BxL[:, 1:]
    valid_BxS = (segment_ids_BxL[:, 1:] != 0) & (segment_ids_BxL[:, 1:] == segment_ids_BxL[:, :-1])
    return targets_BxS, valid_BxS


def check_config(config) -> None:
    """Raises ValueError, naming the fix, for objective settings that cannot work together."""
    obj, model = config.objective, config.model
    if obj.task not in TASKS:
        raise ValueError(f"unknown objective.task {obj.task!r}; use one of {', '.join(TASKS)}")
    if obj.loss not in LOSSES:
        raise ValueError(f"unknown objective.loss {obj.loss!r}; use one of {', '.join(LOSSES)}")
    if obj.task == "clm" and not model.causal:
        raise ValueError("objective.task=clm needs a causal model: set --config.model.causal=True")
    if obj.task == "mlm" and model.causal:
        raise ValueError("objective.task=mlm needs a bidirectional encoder: set --config.model.causal=False")
    if "ce" in obj.loss.split("+") and model.head == "none":
        raise ValueError(f"objective.loss={obj.loss} needs a vocabulary head: set --config.model.head=tied|untied")
    if obj.ce_all_positions and (obj.task != "mlm" or obj.loss == "cwt" or obj.ce_vocab_chunk > 0):
        raise ValueError("objective.ce_all_positions reproduces the reference MLM cost with dense logits: it "
                         "needs task=mlm, a ce loss and ce_vocab_chunk=0")


def build_objective(config, model, special: SpecialTokens) -> ObjectiveFn:
    """The objective of `config` (a full experiment config) for `model` (a headless_jax LanguageModel).

    batch: int32 [B,L] arrays `tokens`, `segment_ids` (0 = padding) and `positions`. params: the unboxed
    `variables['params']` of the model; deterministic=True (evaluation) turns dropout off. Metrics: loss,
    cwt_loss / ce_loss, num_tokens (predictions counted) and accuracy, the argmax over the whole vocabulary:
    of the head logits, or for a headless model of o·Eᵀ (in training steps only with
    objective.headless_train_accuracy, as it costs a vocabulary matmul).
    """
    check_config(config)
    obj = config.objective
    terms = obj.loss.split("+")

    def objective_fn(params, batch, rng, deterministic: bool):
        variables = {"params": params}
        mask_rng, dropout_rng = jax.random.split(rng)

        def hidden(tokens_BxL):
            return model.apply(variables, tokens_BxL, batch["segment_ids"], batch["positions"],
                               deterministic=deterministic, rngs={"dropout": dropout_rng})

        if obj.task == "mlm":
            masked = mask_tokens(batch["tokens"], mask_rng, obj.mask_rate, special, config.model.vocab_size)
            h_BxLxD = hidden(masked.tokens_BxL)
            # Gather first: the loss (and the head, unless ce_all_positions) only sees the k selected positions.
            o_BxSxD = jnp.take_along_axis(h_BxLxD, masked.positions_BxK[..., None], axis=1)
            targets_BxS, valid_BxS = masked.targets_BxK, masked.valid_BxK
        else:
            h_BxLxD = hidden(batch["tokens"])
            o_BxSxD = h_BxLxD[:, :-1]
            targets_BxS, valid_BxS = next_token_targets(batch["tokens"], batch["segment_ids"])
        batch_size, length, dim = o_BxSxD.shape
        o_NxD, targets_N, valid_N = o_BxSxD.reshape(-1, dim), targets_BxS.reshape(-1), valid_BxS.reshape(-1)
        metrics, loss = {}, 0.0

        if "cwt" in terms:
            # Target embeddings in the activations' dtype, as the input lookup does; logits accumulate in float32.
            t_BxSxD = embedding_matrix(params)[targets_BxS].astype(o_BxSxD.dtype)
            metrics["cwt_loss"] = cwt_loss(o_BxSxD, t_BxSxD, valid_BxS, obj.cwt_group_size, obj.cwt_temperature,
                                           obj.cwt_block_size, obj.cwt_memory_budget_mb)
            loss += obj.cwt_weight * metrics["cwt_loss"]
        if "ce" in terms:
            if obj.ce_all_positions:
                logits_BxLxV = model.apply(variables, h_BxLxD.reshape(-1, dim), method="logits").reshape(
                    h_BxLxD.shape[:2] + (-1,))
                logits_BxSxV = jnp.take_along_axis(logits_BxLxV, masked.positions_BxK[..., None], axis=1)
                stats = logits_stats(logits_BxSxV.reshape(batch_size * length, -1), targets_N)
            else:
                features_NxD, weight_VxD, bias_V = model.apply(variables, o_NxD, method="decoder")
                stats = vocab_stats(features_NxD, weight_VxD, bias_V, targets_N, obj.ce_vocab_chunk)
            metrics["ce_loss"] = cross_entropy(stats, valid_N, obj.z_loss)
            loss += obj.ce_weight * metrics["ce_loss"]
            metrics["accuracy"] = weighted_mean(stats.argmax_N == targets_N, valid_N)
        elif deterministic or obj.headless_train_accuracy:
            # A headless model ranks the vocabulary by o·E[v]ᵀ: a metric only (no gradient), and a [N,V]
            # matmul the headless training step otherwise avoids, hence evaluation-only by default. Streamed
            # over vocabulary chunks, so that a long-sequence evaluation never holds [N,V] logits.
            embedding_VxD = jax.lax.stop_gradient(embedding_matrix(params))
            chunk = min(ACCURACY_VOCAB_CHUNK, embedding_VxD.shape[0])
            stats = vocab_stats(jax.lax.stop_gradient(o_NxD), embedding_VxD, None, targets_N, chunk)
            metrics["accuracy"] = weighted_mean(stats.argmax_N == targets_N, valid_N)

        metrics["loss"] = loss
        metrics["num_tokens"] = jnp.sum(valid_N.astype(jnp.float32))
        return loss, metrics

    return objective_fn
