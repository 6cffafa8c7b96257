"""The objectives on a tiny model: parameters per head kind, CLM validity, values against manual composition."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from headless_jax.config import base_config
from headless_jax.model import BODY, LanguageModel, embedding_matrix
from headless_jax.objectives import SpecialTokens, build_objective, mask_tokens, next_token_targets
from headless_jax.validate import ConfigError, validate_config
from tests.test_ce import numpy_cross_entropy
from tests.test_cwt import numpy_cwt

VOCAB, L, B = 64, 16, 4
SPECIAL = SpecialTokens()


def config(task="mlm", loss="cwt", head=None, **objective):
    c = base_config()
    head = head or ("none" if loss == "cwt" else "tied")
    c.model.update(causal=task == "clm", vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, head_dim=16,
                   mlp_dim=48, max_len=L, head=head)
    c.objective.update(task=task, loss=loss, mask_rate=0.25, cwt_group_size=2, cwt_temperature=0.5)
    c.objective.update(objective)
    return ml_collections.FrozenConfigDict(c)


def batch():
    """Row 0 full, row 1 padded after 10 tokens, row 2 three packed documents, row 3 only 2 real tokens."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(7, VOCAB, (B, L)).astype(np.int32)
    segments = np.ones((B, L), np.int32)
    segments[1, 10:] = 0
    segments[2, 5:9], segments[2, 9:] = 2, 3
    segments[3, 4:] = 0
    tokens[:, 0], tokens[3, 3] = 5, 6  # [cls] … [sep]
    tokens[segments == 0] = 0
    positions = np.zeros((B, L), np.int32)  # restart at every document
    for j in range(1, L):
        positions[:, j] = np.where(segments[:, j] == segments[:, j - 1], positions[:, j - 1] + 1, 0)
    return {"tokens": jnp.asarray(tokens), "segment_ids": jnp.asarray(segments), "positions": jnp.asarray(positions)}


def objective_for(cfg):
    return jax.jit(build_objective(cfg, LanguageModel(cfg.model), SPECIAL), static_argnums=3)


@functools.cache
def init_params(model_cfg):
    b = batch()
    return nn.unbox(jax.jit(LanguageModel(model_cfg).init)(jax.random.key(1), b["tokens"], b["segment_ids"],
                                                            b["positions"]))["params"]


def setup(cfg):
    return LanguageModel(cfg.model), init_params(cfg.model), batch(), objective_for(cfg)


def test_next_token_targets_exclude_padding_and_document_boundaries():
    tokens = jnp.arange(14).reshape(2, 7)
    segments = jnp.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    targets, valid = next_token_targets(tokens, segments)
    np.testing.assert_array_equal(targets, np.arange(14).reshape(2, 7)[:, 1:])  # the last position predicts nothing
    np.testing.assert_array_equal(valid, [[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 1]])


@pytest.mark.parametrize("task,loss,head,head_params", [
    ("mlm", "cwt", "none", None),
    ("mlm", "ce", "tied", {"bias", "transform", "transform_norm"}),
    ("clm", "ce", "tied", None),
    ("clm", "cwt+ce", "untied", {"decoder"}),
])
def test_head_kind_gives_its_parameters_and_they_all_train(task, loss, head, head_params):
    _, params, b, objective = setup(config(task, loss, head))
    assert set(params) == ({"body"} if head_params is None else {"body", "head"})
    if head_params is not None:
        assert set(params["head"]) == head_params
    grads = jax.jit(jax.grad(lambda p: objective(p, b, jax.random.key(2), True)[0]))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(g)) and np.any(g != 0), jax.tree_util.keystr(path)


def headless_accuracy(o_BxSxD, params, targets, valid):
    scores = np.asarray(o_BxSxD, np.float64) @ np.asarray(embedding_matrix(params), np.float64).T
    return np.sum((scores.argmax(-1) == np.asarray(targets)) * valid) / np.sum(valid)


def test_headless_mlm_is_masking_then_model_then_cwt():
    model, params, b, objective = setup(config("mlm", "cwt"))
    rng = jax.random.key(3)
    loss, metrics = objective(params, b, rng, True)

    masked = mask_tokens(b["tokens"], jax.random.split(rng)[0], 0.25, SPECIAL, VOCAB)
    h = jax.jit(model.apply)({"params": params}, masked.tokens_BxL, b["segment_ids"], b["positions"])
    o = np.take_along_axis(np.asarray(h), np.asarray(masked.positions_BxK)[..., None], axis=1)
    t = np.asarray(embedding_matrix(params))[np.asarray(masked.targets_BxK)]
    valid = np.asarray(masked.valid_BxK)
    assert 0 < valid.sum() < valid.size  # row 3 has fewer eligible tokens than k = 4
    want = numpy_cwt(o, t, valid, 2, 0.5)[0]
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(metrics["cwt_loss"], want, rtol=1e-5)
    assert metrics["num_predictions"] == valid.sum()
    np.testing.assert_allclose(metrics["accuracy"], headless_accuracy(o, params, masked.targets_BxK, valid))


def test_held_out_evaluation_masks_at_its_own_rate():
    """Trained at 0.25 (k = 4 of 16), scored at 0.125 (k = 2): the evaluation is the objective of a run trained at
    0.125, the training step is not."""
    _, params, b, objective = setup(config("mlm", "cwt", eval_mask_rate=0.125))
    _, _, _, objective_at_eval_rate = setup(config("mlm", "cwt", mask_rate=0.125))
    rng = jax.random.key(3)
    for deterministic, rate in ((False, 0.25), (True, 0.125)):
        masked = mask_tokens(b["tokens"], jax.random.split(rng)[0], rate, SPECIAL, VOCAB)
        assert objective(params, b, rng, deterministic)[1]["num_predictions"] == masked.valid_BxK.sum()
    np.testing.assert_array_equal(objective(params, b, rng, True)[0], objective_at_eval_rate(params, b, rng, True)[0])
    assert objective(params, b, rng, False)[0] != objective_at_eval_rate(params, b, rng, False)[0]


def test_headless_clm_predicts_next_tokens_within_documents():
    model, params, b, objective = setup(config("clm", "cwt"))
    loss, metrics = objective(params, b, jax.random.key(4), True)
    h = np.asarray(jax.jit(model.apply)({"params": params}, b["tokens"], b["segment_ids"], b["positions"]))
    targets, valid = np.asarray(b["tokens"])[:, 1:], np.asarray(next_token_targets(b["tokens"], b["segment_ids"])[1])
    t = np.asarray(embedding_matrix(params))[targets]
    want = numpy_cwt(h[:, :-1], t, valid, 2, 0.5)[0]
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert metrics["num_predictions"] == valid.sum() == 15 + 9 + 13 + 3
    np.testing.assert_allclose(metrics["accuracy"], headless_accuracy(h[:, :-1], params, targets, valid))


def test_headless_accuracy_costs_nothing_in_training_unless_asked():
    _, params, b, objective = setup(config("mlm", "cwt"))
    assert "accuracy" not in objective(params, b, jax.random.key(5), False)[1]
    objective = objective_for(config("mlm", "cwt", headless_train_accuracy=True))
    assert "accuracy" in objective(params, b, jax.random.key(5), False)[1]


@pytest.mark.parametrize("task,head,z_loss,variants", [
    ("mlm", "tied", 0.0, [{}, {"ce_all_positions": True}, {"ce_vocab_chunk": 24}]),
    ("clm", "untied", 1e-2, [{"ce_vocab_chunk": 24}]),
])
def test_classical_ce_matches_float64_reference(task, head, z_loss, variants):
    model_cfg = config(task, "ce", head).model
    model, params, b = LanguageModel(model_cfg), init_params(model_cfg), batch()
    rng = jax.random.key(6)
    variables, apply = {"params": params}, jax.jit(model.apply, static_argnames="method")
    if task == "mlm":
        masked = mask_tokens(b["tokens"], jax.random.split(rng)[0], 0.25, SPECIAL, VOCAB)
        h = apply(variables, masked.tokens_BxL, b["segment_ids"], b["positions"])
        o = jnp.take_along_axis(h, masked.positions_BxK[..., None], axis=1)
        targets, valid = masked.targets_BxK, masked.valid_BxK
    else:
        o = apply(variables, b["tokens"], b["segment_ids"], b["positions"])[:, :-1]
        targets, valid = next_token_targets(b["tokens"], b["segment_ids"])
    logits = np.asarray(apply(variables, o.reshape(-1, o.shape[-1]), method=LanguageModel.logits))
    targets, valid = np.asarray(targets).reshape(-1), np.asarray(valid).reshape(-1)
    want = numpy_cross_entropy(logits, targets, valid, z_loss)[0]
    want_accuracy = np.sum((logits.argmax(-1) == targets) * valid) / valid.sum()

    for options in variants:  # dense at the selected positions, at all positions, over vocabulary chunks
        loss, metrics = objective_for(config(task, "ce", head, z_loss=z_loss, **options))(params, b, rng, True)
        np.testing.assert_allclose(loss, want, rtol=1e-5, err_msg=str(options))
        np.testing.assert_allclose(metrics["ce_loss"], want, rtol=1e-5)
        np.testing.assert_allclose(metrics["accuracy"], want_accuracy)


def test_mixed_loss_is_the_weighted_sum():
    _, params, b, mixed = setup(config("clm", "cwt+ce", "untied", cwt_weight=0.3, ce_weight=2.0))
    headless, classical = objective_for(config("clm", "cwt")), objective_for(config("clm", "ce", "untied"))
    rng = jax.random.key(7)
    loss, metrics = mixed(params, b, rng, True)
    cwt = headless({BODY: params[BODY]}, b, rng, True)[0]
    ce = classical(params, b, rng, True)[0]
    np.testing.assert_allclose([metrics["cwt_loss"], metrics["ce_loss"]], [cwt, ce], rtol=1e-6)
    np.testing.assert_allclose(loss, 0.3 * cwt + 2.0 * ce, rtol=1e-6)


@pytest.mark.parametrize("task,loss,head,options,message", [
    ("mlm", "cwt", "none", {"task": "prefix"}, "mlm, clm"),
    ("mlm", "contrastive", "none", {}, "cwt, ce, cwt\\+ce"),
    ("mlm", "ce", "none", {}, "--config.model.head=tied\\|untied"),
    ("clm", "cwt+ce", "none", {}, "--config.model.head=tied\\|untied"),
    ("clm", "ce", "tied", {"ce_all_positions": True}, "ce_all_positions"),
])
def test_config_errors_name_the_fix(task, loss, head, options, message):
    cfg = config(task, loss, head).as_configdict()
    cfg.objective.update(options)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, num_devices=None)


def test_an_evaluation_rate_that_masks_nothing_is_refused_by_name():
    cfg = config("mlm", "cwt", eval_mask_rate=0.01).as_configdict()  # 0.01 · 16 positions: none masked
    cfg.data.seq_len = L
    with pytest.raises(ConfigError, match="--config.objective.eval_mask_rate"):
        validate_config(cfg, num_devices=None)
    cfg.objective.eval_mask_rate = 0.15
    validate_config(cfg, num_devices=None)


def test_task_must_match_the_attention_pattern():
    cfg = config("clm", "cwt").as_configdict()
    cfg.model.causal = False  # a bidirectional model would see the token it predicts
    with pytest.raises(ConfigError, match="--config.model.causal=True"):
        validate_config(cfg, num_devices=None)
