"""Objectives: (MLM | CLM) × (cwt | ce | cwt+ce), as pure functions of (params, batch, rng).

Both tasks reduce to the same shape: hidden states o [B,S,D] at S predicted positions per sequence, their
targets [B,S] (always the original tokens) and validity [B,S]. CWT scores o against E[targets] within
negative groups; CE scores it against the vocabulary head. Same body, data and masking for both.

The recipes of the MLM literature are settings of the two tasks (docs/objectives.md): token or span masking
(SpanBERT) at any training and evaluation rate for MLM; for CLM, [MASK]ed inputs with unchanged targets (MEAP)
and a bidirectional prefix (prefix LM); and the biphasic task clm_then_mlm, CLM then MLM in one run, whose
step trains the task `task_at` names.
"""
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from headless_jax.model import embedding_matrix, routing
from headless_jax.objectives.ce import VocabStats, cross_entropy, logits_stats, vocab_stats
from headless_jax.objectives.cwt import cwt_loss
from headless_jax.objectives.masking import SpanMasking, SpecialTokens, mask_tokens
from headless_jax.objectives.reduce import weighted_mean

ACCURACY_VOCAB_CHUNK = 4096  # headless accuracy: vocabulary rows scored at a time

# (params, batch, rng, deterministic) -> (loss, metrics)
ObjectiveFn = Callable[[dict, dict, jax.Array, bool], tuple[jax.Array, dict]]


def next_token_targets(tokens_BxL: jax.Array, segment_ids_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """CLM: targets [B,L-1] = the next tokens, valid where the next token is in the same (non-padding) document."""
    targets_BxS = tokens_BxL[:, 1:]
    valid_BxS = (segment_ids_BxL[:, 1:] != 0) & (segment_ids_BxL[:, 1:] == segment_ids_BxL[:, :-1])
    return targets_BxS, valid_BxS


class Predictions(NamedTuple):
    """What every loss sees: hidden states at the S predicted positions of each sequence, and their targets."""
    hidden_BxLxD: jax.Array  # all positions (for ce_all_positions)
    o_BxSxD: jax.Array
    targets_BxS: jax.Array  # always the original tokens
    valid_BxS: jax.Array  # bool, used as CWT rows and columns and as CE weights
    positions_BxS: jax.Array | None  # MLM: which rows of hidden_BxLxD o comes from
    routing_stats: routing.RoutingStats  # what the routed layers report (empty without routing)


def embedding_index(ids: jax.Array, rows_U: jax.Array | None) -> jax.Array:
    """Where token ids are in the embedding table the objective is given: E itself (rows_U None), or the rows
    `rows_U` of E (sorted ids, as a sparse embedding update passes them)."""
    return ids if rows_U is None else jnp.searchsorted(rows_U, ids)


def switch_step(objective_cfg, num_steps: int) -> int:
    """clm_then_mlm: the first MLM step, round(clm_fraction·num_steps) (halves rounded up)."""
    return math.floor(objective_cfg.clm_fraction * num_steps + 0.5)


def task_at(objective_cfg, step: int, num_steps: int) -> str:
    """The task (mlm | clm) the update from `step` to step+1 trains."""
    if objective_cfg.task != "clm_then_mlm":
        return objective_cfg.task
    return "clm" if step < switch_step(objective_cfg, num_steps) else "mlm"


def final_task(config) -> str:
    """The task a run's last step trains (from a full experiment config): what the objective built by default
    trains and evaluates."""
    return task_at(config.objective, config.train.num_steps - 1, config.train.num_steps)


def trained_tasks(config) -> tuple[str, ...]:
    """The tasks a run trains, in order."""
    return ("clm", "mlm") if config.objective.task == "clm_then_mlm" else (config.objective.task,)


def mask_rate(objective_cfg, deterministic: bool) -> float:
    """The MLM masking rate of a training step (deterministic False) or of a held-out evaluation."""
    return objective_cfg.eval_mask_rate if deterministic and objective_cfg.eval_mask_rate else objective_cfg.mask_rate


def span_masking(objective_cfg) -> SpanMasking | None:
    if objective_cfg.masking != "spans":
        return None
    return SpanMasking(objective_cfg.span_geometric_p, objective_cfg.span_max_length)


class Inputs(NamedTuple):
    """What the body reads for one task: its tokens after any masking, and a prefix LM's prefix."""
    tokens_BxL: jax.Array
    masked: object | None  # MLM: the MaskedTokens
    prefix_BxL: jax.Array | None


def task_inputs(config, special: SpecialTokens, batch: dict, rng: jax.Array, task: str, deterministic: bool = False,
                word_starts_V=None) -> Inputs:
    """The body's inputs for `task`, drawn from the first half of `rng` (dropout uses the second)."""
    obj, tokens_BxL, draw_rng = config.objective, batch["tokens"], jax.random.split(rng)[0]
    if task == "mlm":
        masked = mask_tokens(tokens_BxL, draw_rng, mask_rate(obj, deterministic), special, config.model.vocab_size,
                             span_masking(obj), word_starts_V if obj.span_whole_words else None)
        return Inputs(masked.tokens_BxL, masked, None)
    if obj.meap_mask_rate:  # MEAP: [MASK] in, the original next tokens out
        tokens_BxL = mask_tokens(tokens_BxL, jax.random.fold_in(draw_rng, 0), obj.meap_mask_rate, special,
                                 config.model.vocab_size, corruption=(1.0, 0.0)).tokens_BxL
    prefix_BxL = None
    if obj.prefix_length:  # each document's first N tokens; N fixed, or uniform in 1 … L-1 per row (-1)
        length_B = (jnp.full(tokens_BxL.shape[:1], obj.prefix_length) if obj.prefix_length > 0 else
                    jax.random.randint(jax.random.fold_in(draw_rng, 1), tokens_BxL.shape[:1], 1, tokens_BxL.shape[1]))
        prefix_BxL = batch["positions"] < length_B[:, None]
    return Inputs(tokens_BxL, None, prefix_BxL)


def build_rows_read(config, special: SpecialTokens, task: str | None = None,
                    word_starts_V=None) -> Callable[[dict, jax.Array], jax.Array]:
    """(batch, rng) → the ids of every row of E the objective of `task` (default: the final one) reads for that batch
    and rng, flattened, with repeats: the tokens the model reads (after masking) and the original tokens (the CWT
    targets are among them)."""
    task = task or final_task(config)

    def rows_read(batch: dict, rng: jax.Array) -> jax.Array:
        tokens_N = batch["tokens"].reshape(-1)
        read_BxL = task_inputs(config, special, batch, rng, task, word_starts_V=word_starts_V).tokens_BxL
        if read_BxL is batch["tokens"]:  # nothing masked (plain CLM)
            return tokens_N
        return jnp.concatenate([tokens_N, read_BxL.reshape(-1)])
    return rows_read


def predictions(config, model, special: SpecialTokens, params, batch: dict, rng: jax.Array, deterministic: bool,
                task: str, embedding_rows_U: jax.Array | None = None, word_starts_V=None) -> Predictions:
    dropout_rng = jax.random.split(rng)[1]
    rows_UxD = None if embedding_rows_U is None else embedding_matrix(params)  # E's place holds those rows
    inputs = task_inputs(config, special, batch, rng, task, deterministic, word_starts_V)
    h_BxLxD, state = model.apply({"params": params}, embedding_index(inputs.tokens_BxL, embedding_rows_U),
                                 batch["segment_ids"], batch["positions"], deterministic=deterministic,
                                 embedding_rows_UxD=rows_UxD, causal=task == "clm", prefix_BxL=inputs.prefix_BxL,
                                 rngs={"dropout": dropout_rng}, mutable=[routing.COLLECTION])
    stats = routing.collect_stats(state.get(routing.COLLECTION, {}))
    if task == "mlm":
        masked = inputs.masked
        # Gather first: the losses (and the head, unless ce_all_positions) only see the k selected positions.
        o_BxSxD = jnp.take_along_axis(h_BxLxD, masked.positions_BxK[..., None], axis=1)
        return Predictions(h_BxLxD, o_BxSxD, masked.targets_BxK, masked.valid_BxK, masked.positions_BxK, stats)
    targets_BxS, valid_BxS = next_token_targets(batch["tokens"], batch["segment_ids"])
    if inputs.prefix_BxL is not None:  # a prefix token is seen by the positions before it: it is no target
        valid_BxS &= ~inputs.prefix_BxL[:, 1:]
    return Predictions(h_BxLxD, h_BxLxD[:, :-1], targets_BxS, valid_BxS, None, stats)


def head_stats(config, model, params, pred: Predictions) -> VocabStats:
    """Classical: the vocabulary head's logits at the predicted positions (or at all, then gathered)."""
    variables, dim = {"params": params}, pred.o_BxSxD.shape[-1]
    targets_N = pred.targets_BxS.reshape(-1)
    if config.objective.ce_all_positions:  # the reference's cost: [B,L,V] logits
        logits_NxV = model.apply(variables, pred.hidden_BxLxD.reshape(-1, dim), method="logits")
        logits_BxLxV = logits_NxV.reshape(pred.hidden_BxLxD.shape[:2] + (-1,))
        logits_BxSxV = jnp.take_along_axis(logits_BxLxV, pred.positions_BxS[..., None], axis=1)
        return logits_stats(logits_BxSxV.reshape(targets_N.shape[0], -1), targets_N)
    features_NxD, weight_VxD, bias_V = model.apply(variables, pred.o_BxSxD.reshape(-1, dim), method="decoder")
    return vocab_stats(features_NxD, weight_VxD, bias_V, targets_N, config.objective.ce_vocab_chunk)


def embedding_stats(params, pred: Predictions) -> VocabStats:
    """Headless: the vocabulary ranked by o·E[v]ᵀ, a metric only (no gradient), streamed over vocabulary
    chunks so that a long-sequence evaluation never holds [N,V] logits."""
    embedding_VxD = jax.lax.stop_gradient(embedding_matrix(params))
    o_NxD = jax.lax.stop_gradient(pred.o_BxSxD.reshape(-1, pred.o_BxSxD.shape[-1]))
    chunk = min(ACCURACY_VOCAB_CHUNK, embedding_VxD.shape[0])
    return vocab_stats(o_NxD, embedding_VxD, None, pred.targets_BxS.reshape(-1), chunk)


def bits_per_byte(metrics: dict[str, float]) -> float | None:
    """Σ NLL / (ln 2 · Σ bytes) of the predicted tokens, from averaged `nll` and `bytes_per_prediction` (both means
    over the same predictions): comparable across tokenizers, where per-token loss is not."""
    if "nll" not in metrics or not metrics.get("bytes_per_prediction"):
        return None
    return metrics["nll"] / (math.log(2) * metrics["bytes_per_prediction"])


def build_objective(config, model, special: SpecialTokens, token_bytes_V: np.ndarray | None = None,
                    word_starts_V: np.ndarray | None = None, task: str | None = None) -> ObjectiveFn:
    """The objective of `config` (a full experiment config) for `model` (a headless_jax LanguageModel), training
    `task` (mlm | clm; default the config's final task, which for clm_then_mlm is mlm unless clm_fraction = 1).

    batch: int32 [B,L] arrays `tokens`, `segment_ids` (0 = padding) and `positions`. params: the unboxed
    `variables['params']` of the model; deterministic=True (evaluation) turns dropout off. Metrics: loss,
    cwt_loss / ce_loss, num_predictions (valid predicted positions) and accuracy, the argmax over the whole vocabulary:
    of the head logits, or for a headless model of o·Eᵀ (in training steps only with
    objective.headless_train_accuracy: it costs the vocabulary matmul a headless model otherwise avoids), with
    `nll`, the mean negative log-likelihood of the targets under that softmax, and given the UTF-8 bytes of
    every token (`token_bytes_V`), `bytes_per_prediction` (see bits_per_byte).
    Routed models (model.routing) add their budget / predictor loss and `routing/...` metrics.
    embedding_rows_U (headless training with optim.embedding_update=sparse): params hold the rows `rows_U` of E
    (from build_rows_read's ids) in E's place. word_starts_V: bool [V], the ids that begin a word (span masking
    counts whole words with it). The config is assumed valid (headless_jax.validate).
    """
    obj = config.objective
    terms = obj.loss.split("+")
    task = task or final_task(config)

    def objective_fn(params, batch, rng, deterministic: bool, embedding_rows_U: jax.Array | None = None):
        pred = predictions(config, model, special, params, batch, rng, deterministic, task, embedding_rows_U,
                           word_starts_V)
        targets_N, valid_N = pred.targets_BxS.reshape(-1), pred.valid_BxS.reshape(-1)
        metrics, loss, stats = {}, 0.0, None
        if "cwt" in terms:
            # Target embeddings in the activations' dtype, as the input lookup does; logits accumulate in float32.
            target_rows_BxS = embedding_index(pred.targets_BxS, embedding_rows_U)
            t_BxSxD = embedding_matrix(params)[target_rows_BxS].astype(pred.o_BxSxD.dtype)
            metrics["cwt_loss"] = cwt_loss(pred.o_BxSxD, t_BxSxD, pred.valid_BxS, obj.cwt_group_size,
                                           obj.cwt_temperature, obj.cwt_block_size, obj.cwt_memory_budget_mb)
            loss += obj.cwt_weight * metrics["cwt_loss"]
        if "ce" in terms:
            stats = head_stats(config, model, params, pred)
            metrics["ce_loss"] = cross_entropy(stats, valid_N, obj.z_loss)
            loss += obj.ce_weight * metrics["ce_loss"]
        elif deterministic or obj.headless_train_accuracy:
            stats = embedding_stats(params, pred)
        if stats is not None:
            metrics["accuracy"] = weighted_mean(stats.argmax_N == targets_N, valid_N)
            metrics["nll"] = weighted_mean(stats.logsumexp_N - stats.label_logit_N, valid_N)
            if token_bytes_V is not None:
                metrics["bytes_per_prediction"] = weighted_mean(jnp.asarray(token_bytes_V)[targets_N], valid_N)
        routing_loss, routing_metrics = routing.loss_and_metrics(config.model, pred.routing_stats)
        metrics.update(routing_metrics)
        loss += routing_loss
        metrics["loss"] = loss
        metrics["num_predictions"] = jnp.sum(valid_N.astype(jnp.float32))
        return loss, metrics

    return objective_fn
