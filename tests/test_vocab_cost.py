"""The headless train step's only vocabulary-sized work is on E's own [V,D] arrays (lookup gradient, AdamW):
no [N,V] logits — the o·Eᵀ accuracy is evaluation-only unless asked for. Checked on the compiled step."""
import re

import flax.linen as nn
import jax
import ml_collections
import pytest

from headless_jax import objectives
from headless_jax.model import LanguageModel
from headless_jax.train.optim import learning_rate_schedule, make_optimizer
from headless_jax.train.sharding import axis_rules, global_batch, make_mesh
from headless_jax.train.state import abstract_state
from headless_jax.train.step import build_train_step
from tests.train_helpers import random_batches, tiny_config

VOCAB = 509  # a size no other dimension of the tiny model has


def vocab_shapes(loss: str, **objective) -> set[tuple[int, ...]]:
    """Shapes with a vocabulary-sized dimension in the compiled train step of a tiny CLM."""
    config = tiny_config("clm", loss, batch=8)
    config.model.vocab_size = VOCAB
    config.objective.update(objective)
    mesh, rules = make_mesh(config.mesh, jax.devices()[:1]), axis_rules(config.mesh)
    model = LanguageModel(ml_collections.FrozenConfigDict(config.model))
    optimizer = make_optimizer(config.optim, config.train.num_steps)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state, shardings = abstract_state(model, optimizer, config.data.seq_len, mesh, rules)
        step = build_train_step(objectives.build_objective(config, model, objectives.SpecialTokens()), optimizer,
                                learning_rate_schedule(config.optim, 10), shardings, mesh)
        hlo = step.lower(state, global_batch(random_batches(1, 8)[0], mesh)).compile().as_text()
    shapes = {tuple(int(d) for d in dims.split(",")) for dims in re.findall(r"\[(\d+(?:,\d+)*)\]", hlo)}
    return {s for s in shapes if VOCAB in s}


def test_headless_step_has_no_vocabulary_logits():
    assert vocab_shapes("cwt") <= {(VOCAB, 32)}  # E, its gradient and its AdamW moments only


@pytest.mark.parametrize("loss,objective", [("cwt", {"headless_train_accuracy": True}), ("ce", {})])
def test_the_check_sees_logits_where_they_are(loss, objective):
    # Controls: the training accuracy of a headless model and the classical head both score the vocabulary.
    assert vocab_shapes(loss, **objective) - {(VOCAB, 32), (VOCAB,)}
