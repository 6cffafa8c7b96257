"""The headless train step's only vocabulary-sized work is on E's own [V,D] arrays (lookup gradient, AdamW):
no [N,V] logits — the o·Eᵀ accuracy is evaluation-only unless asked for. Checked on the compiled step."""
import re

import jax
import pytest

from headless_jax.experiment import build_experiment
from tests.train_helpers import random_batches, tiny_config

VOCAB = 509  # a size no other dimension of the tiny model has


def vocab_shapes(loss: str, **objective) -> set[tuple[int, ...]]:
    """Shapes with a vocabulary-sized dimension in the compiled train step of a tiny CLM."""
    config = tiny_config("clm", loss, batch=8)
    config.model.vocab_size = VOCAB
    config.objective.update(objective)
    return compiled_vocab_shapes(config)


def compiled_vocab_shapes(config) -> set[tuple[int, ...]]:
    """Shapes with a dimension of model.vocab_size (a size nothing else has) in the config's compiled train step."""
    experiment = build_experiment(config, jax.devices()[:1])
    with experiment.layout.active():
        batch = experiment.layout.global_batch(random_batches(1, config.train.global_batch_size)[0])
        hlo = experiment.train_step.lower(experiment.abstract_state, batch).compile().as_text()
    shapes = {tuple(int(d) for d in dims.split(",")) for dims in re.findall(r"\[(\d+(?:,\d+)*)\]", hlo)}
    return {s for s in shapes if config.model.vocab_size in s}


def test_headless_step_has_no_vocabulary_logits():
    assert vocab_shapes("cwt") <= {(VOCAB, 32)}  # E, its gradient and its AdamW moments only


@pytest.mark.parametrize("loss,objective", [("cwt", {"headless_train_accuracy": True}), ("ce", {})])
def test_the_check_sees_logits_where_they_are(loss, objective):
    # Controls: the training accuracy of a headless model and the classical head both score the vocabulary.
    assert vocab_shapes(loss, **objective) - {(VOCAB, 32), (VOCAB,)}
