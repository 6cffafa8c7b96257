"""The tasks an objective trains and what the body reads for each: mlm (masked tokens), clm (next tokens, with
MEAP's [MASK]ed inputs or a prefix LM's prefix), electra (MLM masking feeding a generator; docs/objectives.md),
and the biphasic clm_then_mlm, whose step trains the task `task_at` names."""
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from headless_jax.objectives.masking import MaskedTokens, SpanMasking, SpecialTokens, mask_tokens

# (params, batch, rng, deterministic) -> (loss, metrics)
ObjectiveFn = Callable[[dict, dict, jax.Array, bool], tuple[jax.Array, dict]]
MASKED_TASKS = ("mlm", "electra")  # the tasks whose inputs are MLM-masked, trained on a bidirectional encoder
# (→ [MASK], → random token) shares of the masked positions: BERT's 80/10/10, ELECTRA's 85/0/15
CORRUPTION = {"mlm": (0.8, 0.1), "electra": (0.85, 0.0)}


def next_token_targets(tokens_BxL: jax.Array, segment_ids_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
    """CLM: targets [B,L-1] = the next tokens, valid where the next token is in the same (non-padding) document."""
    targets_BxS = tokens_BxL[:, 1:]
    valid_BxS = (segment_ids_BxL[:, 1:] != 0) & (segment_ids_BxL[:, 1:] == segment_ids_BxL[:, :-1])
    return targets_BxS, valid_BxS


def embedding_index(ids: jax.Array, rows_U: jax.Array | None) -> jax.Array:
    """Where token ids are in the embedding table the objective is given: E itself (rows_U None), or the rows
    `rows_U` of E (sorted ids, as a sparse embedding update passes them)."""
    return ids if rows_U is None else jnp.searchsorted(rows_U, ids)


def switch_step(objective_cfg, num_steps: int) -> int:
    """clm_then_mlm: the first MLM step, round(clm_fraction·num_steps) (halves rounded up)."""
    return math.floor(objective_cfg.clm_fraction * num_steps + 0.5)


def task_at(objective_cfg, step: int, num_steps: int) -> str:
    """The task (mlm | clm | electra) the update from `step` to step+1 trains."""
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
    masked: MaskedTokens | None  # MLM, ELECTRA: the masking
    prefix_BxL: jax.Array | None


def task_inputs(config, special: SpecialTokens, batch: dict, rng: jax.Array, task: str, deterministic: bool = False,
                word_starts_V=None) -> Inputs:
    """The body's inputs for `task`, drawn from the first half of `rng` (dropout uses the second)."""
    obj, tokens_BxL, draw_rng = config.objective, batch["tokens"], jax.random.split(rng)[0]
    if task in MASKED_TASKS:
        masked = mask_tokens(tokens_BxL, draw_rng, mask_rate(obj, deterministic), special, config.model.vocab_size,
                             span_masking(obj), word_starts_V if obj.span_whole_words else None, CORRUPTION[task])
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
