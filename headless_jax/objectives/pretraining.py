"""Objectives: (MLM | CLM) × (cwt | ce | cwt+ce), as pure functions of (params, batch, rng).

Both tasks reduce to the same shape: hidden states o [B,S,D] at S predicted positions per sequence, their
targets [B,S] (always the original tokens) and validity [B,S]. CWT scores o against E[targets] within
negative groups; CE scores it against the vocabulary head. Same body, data and masking for both.

The recipes of the MLM literature are settings of the two tasks (docs/objectives.md): token or span masking
(SpanBERT) at any training and evaluation rate for MLM; for CLM, [MASK]ed inputs with unchanged targets (MEAP)
and a bidirectional prefix (prefix LM); and the biphasic task clm_then_mlm, CLM then MLM in one run, whose
step trains the task `task_at` names. ELECTRA's replaced-token detection has its own objective
(objectives/electra.py), built here too.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from headless_jax.model import embedding_matrix, routing
from headless_jax.objectives.electra import build_electra_objective
from headless_jax.objectives.masking import MaskedTokens, SpecialTokens
from headless_jax.objectives.scoring import Predictions, never_target_bias, prediction_loss
from headless_jax.objectives.tasks import ObjectiveFn, embedding_index, final_task, next_token_targets, task_inputs


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
        if config.model.mlm_decoder_layers:
            h_BxLxD, o_BxSxD = mlm_decoder_outputs(config, model, params, batch, masked, h_BxLxD, o_BxSxD, rng,
                                                   deterministic)
        return Predictions(h_BxLxD, o_BxSxD, masked.targets_BxK, masked.valid_BxK, masked.positions_BxK, stats)
    targets_BxS, valid_BxS = next_token_targets(batch["tokens"], batch["segment_ids"])
    if inputs.prefix_BxL is not None:  # a prefix token is seen by the positions before it: it is no target
        valid_BxS &= ~inputs.prefix_BxL[:, 1:]
    return Predictions(h_BxLxD, h_BxLxD[:, :-1], targets_BxS, valid_BxS, None, stats)


def mlm_decoder_outputs(config, model, params, batch: dict, masked: MaskedTokens, h_BxLxD: jax.Array,
                        encoder_o_BxKxD: jax.Array, rng: jax.Array, deterministic: bool) -> tuple[jax.Array, jax.Array]:
    """BPDec: (the decoder's hidden states, the outputs the loss reads at the masked positions). The first decoder
    block hides the masked positions but a random share mlm_decoder_unmask_rate of them; in training each
    prediction reads the encoder's output instead of the decoder's with probability mlm_decoder_encoder_rate
    (evaluation reads the decoder's)."""
    obj, batch_size = config.objective, h_BxLxD.shape[0]
    draw_rng, dropout_rng = (jax.random.fold_in(half, 2) for half in jax.random.split(rng))  # streams of their own
    unmask_rng, mix_rng = jax.random.split(draw_rng)
    rows_Bx1 = jnp.arange(batch_size)[:, None]
    masked_BxL = jnp.zeros(h_BxLxD.shape[:2], bool).at[rows_Bx1, masked.positions_BxK].set(masked.valid_BxK)
    hidden_BxL = masked_BxL & (jax.random.uniform(unmask_rng, masked_BxL.shape) >= obj.mlm_decoder_unmask_rate)
    d_BxLxD = model.apply({"params": params}, h_BxLxD, batch["segment_ids"], batch["positions"], hidden_BxL,
                          deterministic, method="mlm_decode", rngs={"dropout": dropout_rng})
    o_BxKxD = jnp.take_along_axis(d_BxLxD, masked.positions_BxK[..., None], axis=1)
    if not deterministic:
        from_encoder_BxK = jax.random.uniform(mix_rng, masked.positions_BxK.shape) < obj.mlm_decoder_encoder_rate
        o_BxKxD = jnp.where(from_encoder_BxK[..., None], encoder_o_BxKxD, o_BxKxD)
    return d_BxLxD, o_BxKxD


def bits_per_byte(metrics: dict[str, float]) -> float | None:
    """Σ NLL / (ln 2 · Σ bytes) of the predicted tokens, from averaged `nll` and `bytes_per_prediction` (both means
    over the same predictions): comparable across tokenizers, where per-token loss is not."""
    if "nll" not in metrics or not metrics.get("bytes_per_prediction"):
        return None
    return metrics["nll"] / (math.log(2) * metrics["bytes_per_prediction"])


def build_objective(config, model, special: SpecialTokens, token_bytes_V: np.ndarray | None = None,
                    word_starts_V: np.ndarray | None = None, task: str | None = None) -> ObjectiveFn:
    """The objective of `config` (a full experiment config) for `model` (a headless_jax LanguageModel), training
    `task` (mlm | clm | electra; default the config's final task, which for clm_then_mlm is mlm unless
    clm_fraction = 1).

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
    task = task or final_task(config)
    if task == "electra":
        return build_electra_objective(config, model, special, token_bytes_V, word_starts_V)
    offset_V = never_target_bias(config, special.special_ids, task)

    def objective_fn(params, batch, rng, deterministic: bool, embedding_rows_U: jax.Array | None = None):
        pred = predictions(config, model, special, params, batch, rng, deterministic, task, embedding_rows_U,
                           word_starts_V)
        loss, metrics = prediction_loss(config, model, params, pred, deterministic, embedding_rows_U, token_bytes_V,
                                        offset_V=offset_V)
        routing_loss, routing_metrics = routing.loss_and_metrics(config.model, pred.routing_stats)
        metrics.update(routing_metrics)
        metrics["loss"] = loss + routing_loss
        return metrics["loss"], metrics

    return objective_fn
