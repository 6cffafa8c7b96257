"""ELECTRA's replaced-token detection (docs/objectives.md): the discriminator's labels against brute force, both
generators' draws against their float64 softmax, no gradient through the draws, no vocabulary-sized array in the
headless step, and the discriminator alone left for downstream jobs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from headless_jax.downstream import mlm_eval
from headless_jax.experiment import PretrainedError
from headless_jax.model import BODY, DETECTOR, GENERATOR, LanguageModel
from headless_jax.objectives import SpecialTokens, build_objective, cwt_sample, replaced_tokens, vocab_sample
from headless_jax.train.flops import train_flops_per_step
from headless_jax.train.init_from import start_params
from headless_jax.validate import ConfigError, validate_config
from test_configs import load_config
from test_pretrained import pretrain
from test_vocab_cost import VOCAB, compiled_vocab_shapes
from train_helpers import random_batches, run_steps, tiny_config

DRAWS = 40_000


def electra_config(loss: str = "cwt", **objective):
    config = tiny_config("mlm", loss)
    config.objective.update(task="electra", **objective)
    config.model.electra_generator = 0.5
    return config


def softmax64(logits) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def test_discriminator_labels_match_brute_force():
    rng = np.random.default_rng(0)
    tokens = rng.integers(7, 12, (6, 10)).astype(np.int32)  # few ids: many samples equal the original
    positions = np.stack([rng.permutation(10)[:4] for _ in range(6)]).astype(np.int32)
    sampled = rng.integers(7, 12, (6, 4)).astype(np.int32)
    valid = rng.random((6, 4)) < 0.7
    corrupted, replaced = replaced_tokens(jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(sampled),
                                          jnp.asarray(valid))
    expected = tokens.copy()
    for b in range(6):
        for k in range(4):
            if valid[b, k]:
                expected[b, positions[b, k]] = sampled[b, k]
    np.testing.assert_array_equal(corrupted, expected)
    np.testing.assert_array_equal(replaced, expected != tokens)
    assert 0 < np.sum(replaced) < np.sum(valid)  # some samples were the original: those count as original


@pytest.mark.parametrize("block_size", [0, 2])
def test_headless_generator_draws_from_its_cwt_distribution(block_size):
    """Over its negative group's valid columns (and its own), with the probabilities of the CWT softmax."""
    rng = np.random.default_rng(1)
    o = rng.normal(size=(2, 3, 4)).astype(np.float32)  # 2 sequences × 3 predictions, one group of K = 6
    t = rng.normal(size=(2, 3, 4)).astype(np.float32)
    valid = np.array([[True, True, False], [True, True, True]])
    targets = np.arange(6, dtype=np.int32).reshape(2, 3) + 20  # a column's target names the column
    draw = jax.jit(jax.vmap(lambda key: cwt_sample(jnp.asarray(o), jnp.asarray(t), jnp.asarray(valid),
                                                   jnp.asarray(targets), 0, key, 0.7, block_size)))
    drawn = np.asarray(draw(jax.random.split(jax.random.key(0), DRAWS))).reshape(DRAWS, 6) - 20
    o_K, t_K, valid_K = o.reshape(6, 4), t.reshape(6, 4), valid.reshape(6)
    for row in range(6):
        logits = np.where(valid_K | (np.arange(6) == row), o_K[row] @ t_K.T / 0.7, -np.inf)
        frequencies = np.bincount(drawn[:, row], minlength=6) / DRAWS
        np.testing.assert_allclose(frequencies, softmax64(logits), atol=0.01)
        if row != 2:
            assert frequencies[2] == 0  # the invalid column is never drawn, except by its own row


@pytest.mark.parametrize("chunk", [0, 3])
def test_classical_generator_draws_from_its_vocabulary_softmax(chunk):
    rng = np.random.default_rng(2)
    features, weight, bias = (rng.normal(size=s).astype(np.float32) for s in ((3, 4), (7, 4), (7,)))
    draw = jax.jit(jax.vmap(lambda key: vocab_sample(jnp.asarray(features), jnp.asarray(weight), jnp.asarray(bias),
                                                     key, chunk)))
    drawn = np.asarray(draw(jax.random.split(jax.random.key(1), DRAWS)))
    for row in range(3):
        frequencies = np.bincount(drawn[:, row], minlength=7) / DRAWS
        np.testing.assert_allclose(frequencies, softmax64(weight @ features[row] + bias), atol=0.01)


def flat_grads(config, seed: int = 0) -> dict:
    model = LanguageModel(config.model)
    batch = {k: jnp.asarray(v) for k, v in random_batches(1, 16)[0].items()}
    params = nn.unbox(model.init(jax.random.key(seed), batch["tokens"], batch["segment_ids"],
                                 batch["positions"])["params"])
    objective = build_objective(config, model, SpecialTokens())
    grads = jax.grad(lambda p: objective(p, batch, jax.random.key(3), False)[0])(params)
    return traverse_util.flatten_dict(grads)


@pytest.mark.parametrize("loss", ["cwt", "ce"])
def test_no_gradient_reaches_the_generator_through_its_samples(loss):
    """The generator's own parameters get the same gradient whatever the discriminator's weight: the BCE reaches
    them through no path (E, shared, gets both)."""
    with_detection, without = flat_grads(electra_config(loss, electra_weight=50.0)), flat_grads(
        electra_config(loss, electra_weight=0.0))
    generator_keys = [key for key in with_detection if key[0] == GENERATOR]
    assert generator_keys and all(np.any(np.asarray(with_detection[key]) != 0) for key in generator_keys[:3])
    for key in generator_keys:
        np.testing.assert_array_equal(with_detection[key], without[key], err_msg="/".join(key))
    discriminator_keys = [key for key in with_detection if key[0] in (BODY, DETECTOR) and "embed" not in key]
    assert all(np.all(np.asarray(without[key]) == 0) for key in discriminator_keys)
    assert any(np.any(np.asarray(with_detection[key]) != 0) for key in discriminator_keys)


def vocab_shapes(loss: str) -> set[tuple[int, ...]]:
    config = electra_config(loss)
    config.model.vocab_size = VOCAB
    return compiled_vocab_shapes(config)


def test_the_headless_electra_step_forms_no_vocabulary_sized_array():
    assert vocab_shapes("cwt") <= {(VOCAB, 32)}  # E, its gradient and moments: nothing scores the vocabulary
    assert vocab_shapes("ce") - {(VOCAB, 32), (VOCAB,)}  # control: the classical generator's softmax is seen


@pytest.mark.parametrize("loss", ["cwt", "ce"])
def test_electra_trains_and_leaves_a_plain_encoder_downstream(loss):
    config = electra_config(loss)
    losses, params, _ = run_steps(config, random_batches(1, 16) * 10)  # one batch, learnt by heart
    assert losses[-1] < losses[0]
    plain = tiny_config("mlm", loss)
    plain_params = nn.unbox(LanguageModel(plain.model).init(jax.random.key(0), *(jnp.asarray(v) for v in random_batches(
        1, 16)[0].values()))["params"])
    # downstream jobs read BODY alone: the discriminator's body is exactly a plain encoder's
    assert jax.tree.map(np.shape, params[BODY]) == jax.tree.map(np.shape, plain_params[BODY])
    assert set(params) == {BODY, GENERATOR, DETECTOR}
    with pytest.raises(ValueError, match="ELECTRA discriminator"):
        LanguageModel(config.model).apply({"params": params}, jnp.zeros((1, 32)), method="logits")
    # an encoder started from the ELECTRA run drops the pretraining-only parts; an ELECTRA run from an encoder
    # starts them fresh
    assert set(start_params(plain, plain_params, config, params)) == set(plain_params)
    started = start_params(config, params, plain, plain_params)
    np.testing.assert_array_equal(started[BODY]["embed"]["embedding"], plain_params[BODY]["embed"]["embedding"])


def test_electra_flops_count_the_generator_and_the_detector():
    config, plain = electra_config(), tiny_config("mlm", "cwt")
    electra, mlm = train_flops_per_step(config), train_flops_per_step(plain)
    assert electra["body"] == mlm["body"] and electra["attention"] == mlm["attention"]
    m, rows, seq_len, k = config.model, 16, 16, 4  # the generator: 1 head of 16, MLP 32, 2 layers
    layer = 2 * 2 * 16 * 16 * 2 + 2 * 2 * 16 * 32 + 2 * 2 * seq_len * 16
    generator = seq_len * (m.num_layers * layer + 2 * 32 * 16) + k * (2 * 16 * 32 + 2 * (2 * k) * 32)
    assert electra["generator"] == 3 * rows * generator
    assert electra["sampling"] == rows * k * 2 * (2 * k) * 32  # forward only
    assert electra["head"] == 3 * rows * seq_len * (2 * 32 * 32 + 2 * 32)


@pytest.mark.parametrize("change,message", [
    (lambda c: c.model.update(electra_generator=0.0), "generator exists for objective.task=electra alone"),
    (lambda c: c.objective.update(task="mlm"), "generator exists for objective.task=electra alone"),
    (lambda c: c.model.update(head="tied"), "use loss=cwt with head=none"),
    (lambda c: c.update_from_flattened_dict({"objective.loss": "cwt+ce", "model.head": "tied"}), "use loss=cwt"),
    (lambda c: c.model.update(causal=True), "needs a bidirectional encoder"),
    (lambda c: c.model.update(electra_generator=1.5), r"model.electra_generator=1.5 is out of range"),
    (lambda c: c.objective.update(mask_rate=0.01), "objective.mask_rate"),
    (lambda c: c.objective.update(electra_weight=-1.0), "objective.electra_weight=-1.0 is out of range"),
])
def test_electra_config_errors_name_the_key_and_the_fix(change, message):
    config = electra_config()
    change(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, num_devices=1)


def test_held_out_mlm_scoring_refuses_a_discriminator(tmp_path):
    run = pretrain(tmp_path / "electra", tmp_path, "configs/electra.py:cwt,demo", 1,
                   "--config.mesh.data=4", "--config.mesh.tensor=1")  # the 1-head generator: no tensor split
    config = load_config("mlm_eval", None)
    config.update(pretrained=str(run), batch_size=8, eval_batches=1)
    with pytest.raises(PretrainedError, match="is an ELECTRA discriminator: it has no token scores.*configs/books.py"):
        mlm_eval.run(config, str(tmp_path / "out"))
