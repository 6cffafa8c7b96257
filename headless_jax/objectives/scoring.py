"""What every loss sees (hidden states at the predicted positions and their targets) and how the vocabulary
scores them: the classical head's logits, or a headless model's o·Eᵀ, reduced to per-row statistics."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from headless_jax.model import embedding_matrix, routing
from headless_jax.objectives.ce import VocabStats, cross_entropy, logits_stats, vocab_stats
from headless_jax.objectives.cwt import cwt_loss
from headless_jax.objectives.reduce import weighted_mean
from headless_jax.objectives.tasks import MASKED_TASKS, embedding_index

ACCURACY_VOCAB_CHUNK = 4096  # headless accuracy: vocabulary rows scored at a time
_LEFT_OUT = -1e9  # the logit offset of an id left out of the softmax


class Predictions(NamedTuple):
    """What every loss sees: hidden states at the S predicted positions of each sequence, and their targets."""
    hidden_BxLxD: jax.Array  # all positions (for ce_all_positions)
    o_BxSxD: jax.Array
    targets_BxS: jax.Array  # always the original tokens
    valid_BxS: jax.Array  # bool, used as CWT rows and columns and as CE weights
    positions_BxS: jax.Array | None  # MLM: which rows of hidden_BxLxD o comes from
    routing_stats: routing.RoutingStats  # what the routed layers report (empty without routing)


def never_target_bias(config, special_ids: tuple[int, ...], task: str) -> np.ndarray | None:
    """float32 [V]: a logit offset that leaves out of the softmax the ids a masked task never predicts (its special
    ids, never masked), with objective.ce_exclude_special; None otherwise. A large finite offset, not -inf: rows of
    padding (weight 0) may have a special id as target."""
    if not (config.objective.ce_exclude_special and task in MASKED_TASKS):
        return None
    offset_V = np.zeros(config.model.vocab_size, np.float32)
    offset_V[list(special_ids)] = _LEFT_OUT
    return offset_V


def offset_bias(bias_V: jax.Array | None, offset_V: np.ndarray | None) -> jax.Array | None:
    """The head's bias with a never_target_bias offset added (either may be None)."""
    if offset_V is None:
        return bias_V
    return jnp.asarray(offset_V) if bias_V is None else bias_V + offset_V


def head_stats(config, model, params, pred: Predictions, decoder: str = "decoder",
               offset_V: np.ndarray | None = None) -> VocabStats:
    """Classical: the vocabulary head's logits at the predicted positions (or at all, then gathered). `decoder`: the
    model method giving (features, weight, bias) of the head (ELECTRA's generator has its own); `offset_V`: a
    never_target_bias added to the logits."""
    variables, dim = {"params": params}, pred.o_BxSxD.shape[-1]
    targets_N = pred.targets_BxS.reshape(-1)
    if config.objective.ce_all_positions:  # the reference's cost: [B,L,V] logits
        logits_NxV = model.apply(variables, pred.hidden_BxLxD.reshape(-1, dim), method="logits")
        logits_BxLxV = logits_NxV.reshape(pred.hidden_BxLxD.shape[:2] + (-1,))
        logits_BxSxV = jnp.take_along_axis(logits_BxLxV, pred.positions_BxS[..., None], axis=1)
        logits_NxV = logits_BxSxV.reshape(targets_N.shape[0], -1)
        return logits_stats(logits_NxV if offset_V is None else logits_NxV + offset_V, targets_N)
    features_NxD, weight_VxD, bias_V = model.apply(variables, pred.o_BxSxD.reshape(-1, dim), method=decoder)
    return vocab_stats(features_NxD, weight_VxD, offset_bias(bias_V, offset_V), targets_N,
                       config.objective.ce_vocab_chunk)


def embedding_stats(params, pred: Predictions) -> VocabStats:
    """Headless: the vocabulary ranked by o·E[v]ᵀ, a metric only (no gradient), streamed over vocabulary
    chunks so that a long-sequence evaluation never holds [N,V] logits."""
    embedding_VxD = jax.lax.stop_gradient(embedding_matrix(params))
    o_NxD = jax.lax.stop_gradient(pred.o_BxSxD.reshape(-1, pred.o_BxSxD.shape[-1]))
    chunk = min(ACCURACY_VOCAB_CHUNK, embedding_VxD.shape[0])
    return vocab_stats(o_NxD, embedding_VxD, None, pred.targets_BxS.reshape(-1), chunk)


def vocab_metrics(stats: VocabStats, pred: Predictions, token_bytes_V: np.ndarray | None) -> dict[str, jax.Array]:
    """accuracy (argmax over the vocabulary), nll of the targets under that softmax, and given the UTF-8 bytes of
    every token, bytes_per_prediction: means over the valid predictions."""
    targets_N, valid_N = pred.targets_BxS.reshape(-1), pred.valid_BxS.reshape(-1)
    metrics = {"accuracy": weighted_mean(stats.argmax_N == targets_N, valid_N),
               "nll": weighted_mean(stats.logsumexp_N - stats.label_logit_N, valid_N)}
    if token_bytes_V is not None:
        metrics["bytes_per_prediction"] = weighted_mean(jnp.asarray(token_bytes_V)[targets_N], valid_N)
    return metrics


def prediction_loss(config, model, params, pred: Predictions, deterministic: bool,
                    embedding_rows_U: jax.Array | None = None, token_bytes_V: np.ndarray | None = None,
                    decoder: str = "decoder",
                    offset_V: np.ndarray | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The loss terms of objective.loss on `pred` (CWT against E[targets], CE through the head `decoder` names, its
    logits offset by `offset_V`: never_target_bias) and their metrics: cwt_loss / ce_loss, num_predictions, and
    where the vocabulary is scored (always with CE; headless at evaluation, or in training with
    objective.headless_train_accuracy) vocab_metrics."""
    obj, terms = config.objective, config.objective.loss.split("+")
    valid_N = pred.valid_BxS.reshape(-1)
    metrics, loss, stats = {}, 0.0, None
    if "cwt" in terms:
        # Target embeddings in the activations' dtype, as the input lookup does; logits accumulate in float32.
        t_BxSxD = target_embeddings(params, pred, embedding_rows_U)
        metrics["cwt_loss"] = cwt_loss(pred.o_BxSxD, t_BxSxD, pred.valid_BxS, obj.cwt_group_size,
                                       obj.cwt_temperature, obj.cwt_block_size, obj.cwt_memory_budget_mb)
        loss += obj.cwt_weight * metrics["cwt_loss"]
    if "ce" in terms:
        stats = head_stats(config, model, params, pred, decoder, offset_V)
        metrics["ce_loss"] = cross_entropy(stats, valid_N, obj.z_loss)
        loss += obj.ce_weight * metrics["ce_loss"]
    elif deterministic or obj.headless_train_accuracy:
        stats = embedding_stats(params, pred)
    if stats is not None:
        metrics.update(vocab_metrics(stats, pred, token_bytes_V))
    metrics["num_predictions"] = jnp.sum(valid_N.astype(jnp.float32))
    return loss, metrics


def target_embeddings(params, pred: Predictions, embedding_rows_U: jax.Array | None) -> jax.Array:
    """E[targets] [B,S,D] in the activations' dtype (the CWT positives and negatives), from E or from the rows
    `embedding_rows_U` of it that params hold in its place."""
    return embedding_matrix(params)[embedding_index(pred.targets_BxS, embedding_rows_U)].astype(pred.o_BxSxD.dtype)
