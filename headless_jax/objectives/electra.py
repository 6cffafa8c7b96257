"""ELECTRA's replaced-token detection, headless or classical (docs/objectives.md).

A generator (model.electra_generator: narrower, same depth, reading the model's E) fills the masked positions of an
MLM-masked input (ELECTRA's rule: 85% [MASK], 15% kept, no random tokens) and is trained on them with
objective.loss:
- cwt (headless, model.head='none'): its outputs, projected to E's width, against E[targets] in negative groups;
  it samples each replacement from its own CWT distribution over its group's in-batch targets, so that no
  vocabulary-sized array exists anywhere in the step;
- ce (classical, model.head='tied'): a softmax over the vocabulary, sampled chunk by chunk.
The discriminator (the model's body and its detector head) reads the original tokens with the samples at the
masked positions and classifies every real token as replaced (1) or original (0: a sample equal to the original
is original):

    loss = generator loss + electra_weight · mean BCE over the non-padding tokens      (ELECTRA: λ = 50)

Samples are integers: no gradient reaches the generator through them, and the discriminator's loss reaches the
generator only through the E they share. Only the discriminator is kept (model.GENERATOR, DETECTOR are
pretraining-only).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from headless_jax.model import embedding_matrix, routing
from headless_jax.objectives.ce import vocab_sample
from headless_jax.objectives.cwt import cwt_sample
from headless_jax.objectives.masking import SpecialTokens
from headless_jax.objectives.reduce import weighted_mean
from headless_jax.objectives.scoring import (Predictions, never_target_bias, offset_bias, prediction_loss,
                                             target_embeddings)
from headless_jax.objectives.tasks import ObjectiveFn, embedding_index, task_inputs


def replaced_tokens(tokens_BxL: jax.Array, positions_BxK: jax.Array, sampled_BxK: jax.Array,
                    valid_BxK: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(the discriminator's input: `tokens_BxL` with each valid slot's sample at its position, its labels: bool
    [B,L], True where that input differs from the original token)."""
    rows_Bx1 = jnp.arange(tokens_BxL.shape[0])[:, None]
    placed_BxK = jnp.where(valid_BxK, sampled_BxK, tokens_BxL[rows_Bx1, positions_BxK]).astype(tokens_BxL.dtype)
    corrupted_BxL = tokens_BxL.at[rows_Bx1, positions_BxK].set(placed_BxK, unique_indices=True)
    return corrupted_BxL, corrupted_BxL != tokens_BxL


def build_electra_objective(config, model, special: SpecialTokens, token_bytes_V: np.ndarray | None = None,
                            word_starts_V: np.ndarray | None = None) -> ObjectiveFn:
    """The ELECTRA objective of `config` for `model` (a LanguageModel with model.electra_generator > 0), with the
    signature and metrics of pretraining.build_objective (the generator's: cwt_loss / ce_loss, num_predictions, and
    its vocabulary accuracy where scored) plus rtd_loss, rtd_accuracy (the detector's, at logit 0) and
    replaced_fraction (the share of real tokens replaced)."""
    obj, headless = config.objective, config.model.head == "none"
    offset_V = never_target_bias(config, special.special_ids, "electra")  # left out of loss and sampling alike

    def objective_fn(params, batch, rng, deterministic: bool, embedding_rows_U: jax.Array | None = None):
        masked = task_inputs(config, special, batch, rng, "electra", deterministic, word_starts_V).masked
        generator_rng, discriminator_rng, sample_rng = jax.random.split(jax.random.split(rng)[1], 3)
        variables, segments_positions = {"params": params}, (batch["segment_ids"], batch["positions"])
        rows_UxD = None if embedding_rows_U is None else embedding_matrix(params)  # E's place holds those rows

        g_BxLxD = model.apply(variables, embedding_index(masked.tokens_BxL, embedding_rows_U), *segments_positions,
                              deterministic, rows_UxD, method="generate", rngs={"dropout": generator_rng})
        g_BxKxD = jnp.take_along_axis(g_BxLxD, masked.positions_BxK[..., None], axis=1)
        o_BxKxD = model.apply(variables, g_BxKxD, method="generator_project") if headless else g_BxKxD
        pred = Predictions(g_BxLxD, o_BxKxD, masked.targets_BxK, masked.valid_BxK, masked.positions_BxK,
                           routing.collect_stats({}))
        generator_loss, metrics = prediction_loss(config, model, params, pred, deterministic, embedding_rows_U,
                                                  token_bytes_V, decoder="generator_decoder", offset_V=offset_V)
        if headless:
            sampled_BxK = cwt_sample(o_BxKxD, target_embeddings(params, pred, embedding_rows_U), masked.valid_BxK,
                                     masked.targets_BxK, obj.cwt_group_size, sample_rng, obj.cwt_temperature,
                                     obj.cwt_block_size, obj.cwt_memory_budget_mb)
        else:
            features_NxD, weight_VxD, bias_V = model.apply(variables, o_BxKxD.reshape(-1, o_BxKxD.shape[-1]),
                                                           method="generator_decoder")
            sampled_BxK = vocab_sample(features_NxD, weight_VxD, offset_bias(bias_V, offset_V), sample_rng,
                                       obj.ce_vocab_chunk).reshape(masked.targets_BxK.shape)

        corrupted_BxL, replaced_BxL = replaced_tokens(batch["tokens"], masked.positions_BxK, sampled_BxK,
                                                      masked.valid_BxK)
        h_BxLxD, state = model.apply(variables, embedding_index(corrupted_BxL, embedding_rows_U), *segments_positions,
                                     deterministic=deterministic, embedding_rows_UxD=rows_UxD,
                                     rngs={"dropout": discriminator_rng}, mutable=[routing.COLLECTION])
        logits_BxL = model.apply(variables, h_BxLxD, method="detect")
        real_BxL = batch["segment_ids"] != 0
        bce_BxL = optax.sigmoid_binary_cross_entropy(logits_BxL, replaced_BxL.astype(jnp.float32))
        metrics["rtd_loss"] = weighted_mean(bce_BxL, real_BxL)
        metrics["rtd_accuracy"] = weighted_mean((logits_BxL > 0) == replaced_BxL, real_BxL)
        metrics["replaced_fraction"] = weighted_mean(replaced_BxL, real_BxL)
        routing_loss, routing_metrics = routing.loss_and_metrics(
            config.model, routing.collect_stats(state.get(routing.COLLECTION, {})))
        metrics.update(routing_metrics)
        metrics["loss"] = generator_loss + obj.electra_weight * metrics["rtd_loss"] + routing_loss
        return metrics["loss"], metrics

    return objective_fn
