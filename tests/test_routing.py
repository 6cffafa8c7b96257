"""Learning to Skip: skip and topk routed layers against dense models and hand references."""
import functools
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from headless_jax import bench, objectives
from headless_jax.config import base_config
from headless_jax.model import LanguageModel, routing
from headless_jax.model.transformer import Block
from headless_jax.train import flops
from headless_jax.train.layout import Layout
from headless_jax.validate import ConfigError, validate_config
from tests.train_helpers import random_batches, run_steps, tiny_config

L, VOCAB = 12, 64
WIRINGS = {"pre": {}, "post": dict(norm_position="post"),
           "parallel": dict(parallel_residual=True, positions="rotary", rotary_fraction=0.5)}


def model_config(kind="none", causal=False, wiring="pre", **routing_overrides) -> ml_collections.ConfigDict:
    cfg = base_config().model
    cfg.update(vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=2, head_dim=16, mlp_dim=48, max_len=L,
               causal=causal, **WIRINGS[wiring])
    cfg.routing.update({"kind": kind, "layers": "every:2", **routing_overrides})
    return cfg


def make(cfg) -> LanguageModel:
    return LanguageModel(ml_collections.FrozenConfigDict(cfg))


def inputs(seed=0, batch=2, packed=False):
    tokens = jax.random.randint(jax.random.key(seed), (batch, L), 7, VOCAB)
    if not packed:
        return tokens, jnp.ones_like(tokens), jnp.broadcast_to(jnp.arange(L), (batch, L))
    segments = jnp.array([[1] * 5 + [2] * 5 + [0] * 2, [1] * 8 + [2] * 4][:batch])  # two documents, padding
    starts = jnp.array([[0] * 5 + [5] * 5 + [10] * 2, [0] * 8 + [8] * 4][:batch])
    return tokens, segments, jnp.arange(L)[None] - starts


def init(model, args):
    return nn.unbox(model.init(jax.random.key(1), *args))["params"]


def applier(model, deterministic: bool, jit: bool = True):
    """(params, args) → (hidden states, routing state). Exact-equality tests run eagerly (jit=False): op by op,
    the routed and dense models do the same float32 arithmetic; under jit, XLA fuses the two graphs differently."""
    fn = functools.partial(model.apply, deterministic=deterministic, mutable=["routing"])
    fn = jax.jit(fn) if jit else fn
    return lambda params, args: fn({"params": params}, *args, rngs={"dropout": jax.random.key(2)})


def apply(model, params, args, deterministic=True, jit=True):
    return applier(model, deterministic, jit)(params, args)


def apply_dense(cfg, params, args):
    return make(cfg).apply({"params": without_router(params)}, *args)


def without_router(params):
    """The dense model's params: the routed model's, less the routers (everything else is shared)."""
    body = {name: {k: v for k, v in part.items() if k != "router"} for name, part in params["body"].items()}
    return {**params, "body": body}


@pytest.mark.parametrize("wiring", list(WIRINGS))
@pytest.mark.parametrize("skipped", ["block", "attention", "mlp"])
def test_topk_capacity_one_equals_the_dense_model(wiring, skipped):
    args = inputs(packed=True)
    routed = make(model_config("topk", wiring=wiring, capacity=1.0, skip=skipped))
    params = init(routed, args)
    h_dense = apply_dense(model_config("none", wiring=wiring), params, args)
    h_routed, state = apply(routed, params, args, deterministic=False, jit=False)
    # The same arithmetic in the same order, except the parallel MLP-only route ((x + mlp) + attn vs (x + attn) + mlp).
    if wiring == "parallel" and skipped == "mlp":
        np.testing.assert_allclose(h_routed, h_dense, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(h_routed, h_dense)
    assert float(state["routing"]["body"]["layer_1"]["executed_fraction"][0]) == 1.0


@pytest.mark.parametrize("wiring", list(WIRINGS))
def test_skip_executing_every_token_equals_the_dense_model(wiring):
    args = inputs(packed=True)
    routed = make(model_config("skip", wiring=wiring))
    params = init(routed, args)
    h_dense = apply_dense(model_config("none", wiring=wiring), params, args)
    always = lambda logits, rng, temperature: jnp.ones(logits.shape[:-1])  # noqa: E731
    with mock.patch.object(routing, "skip_gate", always):
        h_routed, state = apply(routed, params, args, deterministic=False, jit=False)
    np.testing.assert_array_equal(h_routed, h_dense)
    assert float(state["routing"]["body"]["layer_1"]["executed_fraction"][0]) == 1.0


def layer_io(model, params, args, deterministic):
    """(input, output) of the routed layer_1 and the normed router input, from captured intermediates."""
    _, state = model.apply({"params": params}, *args, deterministic=deterministic, rngs={"dropout": jax.random.key(2)},
                           capture_intermediates=True, mutable=["intermediates", "routing"])
    inter = state["intermediates"]["body"]
    return inter["layer_0"]["__call__"][0][0], inter["layer_1"]["__call__"][0][0], state


def layernorm64(x, scale, bias, eps=1e-5):
    x = np.asarray(x, np.float64)
    x = x - x.mean(-1, keepdims=True)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * scale + bias


@pytest.mark.parametrize("capacity,k,packed", [(0.5, 6, True), (0.3, 4, False), (0.01, 1, True)])
def test_topk_runs_exactly_k_tokens_of_each_sequence_the_top_scored(capacity, k, packed):
    args = inputs(packed=packed)
    model = make(model_config("topk", capacity=capacity))
    params = init(model, args)
    x_in, x_out, state = layer_io(model, params, args, deterministic=False)
    changed = np.asarray(jnp.any(x_out != x_in, axis=-1))  # the block adds a nonzero residual where it runs
    # Reference: top-k of the float64 router score on the normed input, among real tokens.
    layer = params["body"]["layer_1"]
    h = layernorm64(x_in, layer["norm_attention"]["scale"], layer["norm_attention"]["bias"])
    score = h @ np.asarray(layer["router"]["score"]["kernel"], np.float64)[:, 0]
    score = np.where(np.asarray(args[1]) != 0, score, -np.inf)
    expected = np.zeros_like(changed)
    for b in range(score.shape[0]):
        expected[b, np.argsort(-score[b])[:k]] = True
    np.testing.assert_array_equal(changed, expected)
    assert (changed.sum(1) == k).all()
    real = np.asarray(args[1]) != 0
    np.testing.assert_allclose(float(state["routing"]["body"]["layer_1"]["executed_fraction"][0]),
                               (changed & real).sum() / real.sum(), rtol=1e-6)


def test_topk_block_runs_the_selected_tokens_among_themselves():
    """A routed layer 0 equals the dense block applied to just the top-k tokens (their positions and
    segments), the other tokens passing through: attention sees only the selected tokens."""
    args = inputs(packed=True)
    model = make(model_config("topk", capacity=0.5, layers="0"))
    params = init(model, args)
    layer_0_out, _, _ = layer_io(model, params, args, deterministic=False)
    body, layer = params["body"], params["body"]["layer_0"]
    x = body["embed"]["embedding"][args[0]] + body["position_embed"]["embedding"][args[2]]
    h = layernorm64(x, layer["norm_attention"]["scale"], layer["norm_attention"]["bias"])
    score = np.where(np.asarray(args[1]) != 0, h @ np.asarray(layer["router"]["score"]["kernel"], np.float64)[:, 0],
                     -np.inf)
    block = Block(ml_collections.FrozenConfigDict(model_config("none")), True)
    block_params = {k: v for k, v in layer.items() if k != "router"}
    expected = np.asarray(x).copy()
    for b in range(x.shape[0]):
        idx = np.sort(np.argsort(-score[b])[:6])
        y, _ = block.apply({"params": block_params}, x[b:b + 1, idx], args[1][b:b + 1, idx], args[2][b:b + 1, idx])
        expected[b, idx] = np.asarray(y[0])
    np.testing.assert_allclose(layer_0_out, expected, rtol=0, atol=1e-6)


def test_skip_gate_is_exactly_binary_forward_and_soft_backward():
    logits = jax.random.normal(jax.random.key(0), (4, 50, 2)) * 2
    rng, temperature = jax.random.key(3), 0.7
    gate = routing.skip_gate(logits, rng, temperature)
    assert set(np.unique(np.asarray(gate)).tolist()) == {0.0, 1.0}
    # Backward: the gradient of the Gumbel-softmax probability of "execute" (same noise).
    weights = jax.random.normal(jax.random.key(4), gate.shape)
    grad = jax.grad(lambda z: jnp.sum(weights * routing.skip_gate(z, rng, temperature)))(logits)
    noise = jax.random.gumbel(rng, logits.shape)
    soft_grad = jax.grad(lambda z: jnp.sum(weights * jax.nn.softmax((z + noise) / temperature)[..., 1]))(logits)
    np.testing.assert_allclose(grad, soft_grad, rtol=1e-6)
    assert np.abs(np.asarray(grad)).sum() > 0
    # Evaluation: argmax, no noise.
    np.testing.assert_array_equal(routing.skip_gate(logits, None, temperature), np.argmax(logits, -1))


def test_skip_layer_keeps_each_token_either_unchanged_or_fully_executed():
    args = inputs(packed=True)
    cfg = model_config("skip", layers="0")
    model = make(cfg)
    params = init(model, args)
    layer_out, _, state = layer_io(model, params, args, deterministic=False)
    always = lambda logits, rng, temperature: jnp.ones(logits.shape[:-1])  # noqa: E731
    with mock.patch.object(routing, "skip_gate", always):
        executed_out, _, _ = layer_io(model, params, args, deterministic=False)
    body = params["body"]
    x_in = body["embed"]["embedding"][args[0]] + body["position_embed"]["embedding"][args[2]]
    kept, executed = np.all(layer_out == x_in, -1), np.all(layer_out == executed_out, -1)
    assert (kept ^ executed).all()  # every token exactly one of the two
    assert 0 < kept.sum() < kept.size
    real = np.asarray(args[1]) != 0
    np.testing.assert_allclose(float(state["routing"]["body"]["layer_0"]["executed_fraction"][0]),
                               (executed & real).sum() / real.sum(), rtol=1e-6)


def tiny_experiment(kind: str, task: str = "mlm", loss: str = "cwt", **routing_overrides):
    c = base_config()
    c.model = model_config(kind, causal=task == "clm", **routing_overrides)
    c.model.head = "none" if loss == "cwt" else ("untied" if task == "clm" else "tied")
    c.objective.update(task=task, loss=loss, mask_rate=0.25)
    c.data.seq_len = L
    c.train.global_batch_size = 8
    return c


def objective_and_params(config, seed=0):
    model = make(config.model)
    objective = objectives.build_objective(config, model, objectives.SpecialTokens())
    tokens, segments, positions = inputs(seed, batch=8)
    batch = {"tokens": tokens, "segment_ids": segments, "positions": positions}
    return objective, init(model, (tokens, segments, positions)), batch


@pytest.mark.parametrize("kind,task,loss", [("skip", "mlm", "cwt"), ("topk", "clm", "ce")])
def test_routers_receive_gradients(kind, task, loss):
    config = tiny_experiment(kind, task, loss)
    objective, params, batch = objective_and_params(config)
    grads, metrics = jax.jit(jax.grad(lambda p: objective(p, batch, jax.random.key(0), False), has_aux=True))(params)
    router = grads["body"]["layer_1"]["router"]
    for name, leaf in jax.tree_util.tree_leaves_with_path(router):
        assert float(jnp.abs(leaf).sum()) > 0, f"zero gradient for router {jax.tree_util.keystr(name)}"
    assert "routing/executed_fraction/layer_1" in metrics
    if kind == "topk" and task == "clm":  # the predictor learns from its BCE alone (stop-gradient input)
        assert set(router) == {"score", "predictor_hidden", "predictor_out"}
        assert "routing/predictor_loss" in metrics


def test_causal_topk_inference_does_not_look_at_future_tokens():
    args = inputs(batch=2)
    model = make(model_config("topk", causal=True, capacity=0.5, layers="all"))
    params = init(model, args)
    # Random predictors execute some tokens and skip others (a zero-mean init would pick ~half).
    infer, train = applier(model, deterministic=True), applier(model, deterministic=False)
    h, state = infer(params, args)
    fraction = float(state["routing"]["body"]["layer_0"]["executed_fraction"][0])
    assert 0 < fraction < 1
    h_train, _ = train(params, args)
    leaks = False
    for t in range(L - 1):
        future = args[0].at[:, t + 1:].set((args[0][:, t + 1:] + 5) % (VOCAB - 7) + 7)
        np.testing.assert_array_equal(infer(params, (future, *args[1:]))[0][:, :t + 1], h[:, :t + 1])
        # The training path (top-k over the whole sequence) does look ahead: the check above can fail.
        leaks |= not np.array_equal(train(params, (future, *args[1:]))[0][:, :t + 1], h_train[:, :t + 1])
    assert leaks


@pytest.mark.parametrize("target", [0.1, 0.9])
def test_budget_loss_moves_the_executed_fraction_toward_the_target(target):
    config = tiny_experiment("skip", "mlm", "cwt", target=target, budget_weight=1.0)
    objective, params, batch = objective_and_params(config)
    optimizer = optax.adam(3e-2)

    @jax.jit
    def step(params, opt_state, rng):
        grads, metrics = jax.grad(lambda p: objective(p, batch, rng, False), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, metrics

    @jax.jit
    def eval_fraction(params):
        return objective(params, batch, jax.random.key(0), True)[1]["routing/executed_fraction"]

    start, opt_state = float(eval_fraction(params)), optimizer.init(params)
    for i in range(25):
        params, opt_state, metrics = step(params, opt_state, jax.random.key(i))
    end = float(eval_fraction(params))
    assert abs(end - target) < 0.5 * abs(start - target), (start, end)
    assert float(metrics["routing/budget_loss"]) < (start - target) ** 2


@pytest.mark.parametrize("change,message", [
    (dict(kind="sometimes"), "unknown model.routing.kind 'sometimes'"),
    (dict(kind="skip", skip="head"), "unknown model.routing.skip 'head'"),
    (dict(kind="topk", capacity=0.0), r"capacity=0.0 must be in \(0, 1\]"),
    (dict(kind="topk", capacity=1.5), r"capacity=1.5 must be in \(0, 1\]"),
    (dict(kind="skip", layers="1,4"), "outside 0..1"),
    (dict(kind="skip", layers="every:0"), "every:N"),
    (dict(kind="skip", layers="odd"), "every:N"),
    (dict(kind="skip", target=1.2), "target=1.2"),
    (dict(kind="skip", temperature=0.0), "temperature"),
])
def test_routing_config_errors_name_the_fix(change, message):
    config = tiny_experiment("none")
    config.model.routing.update(change)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, num_devices=8)


def test_causal_topk_needs_the_predictor_and_scan_needs_every_layer_routed():
    config = tiny_experiment("topk", "clm", predictor_dim=0)
    with pytest.raises(ConfigError, match="predictor_dim"):
        validate_config(config, num_devices=8)
    config = tiny_experiment("skip", layers="every:2")
    config.model.scan_layers = True
    with pytest.raises(ConfigError, match="routing.layers=all or --config.model.scan_layers=False"):
        validate_config(config, num_devices=8)
    config.model.routing.layers = "all"
    validate_config(config, num_devices=8)


def test_scanned_rematerialised_routing_equals_dense_at_capacity_one_and_reports_every_layer():
    args = inputs(packed=True)
    scanned = dict(scan_layers=True, remat="full")
    routed_cfg = model_config("topk", capacity=1.0, layers="all")
    routed_cfg.update(scanned)
    dense_cfg = model_config("none")
    dense_cfg.update(scanned)
    routed = make(routed_cfg)
    params = init(routed, args)
    assert params["body"]["layers"]["router"]["score"]["kernel"].shape == (2, 32, 1)
    h, state = apply(routed, params, args, deterministic=False, jit=False)
    np.testing.assert_array_equal(h, apply_dense(dense_cfg, params, args))
    assert sorted(routing.collect_stats(state["routing"]).executed_fraction) == [0, 1]


def test_flops_count_what_topk_executes_by_hand():
    config = tiny_experiment("topk", "clm", "cwt", capacity=0.5, predictor_dim=64)  # layer 1 routed, k = 6 of 12
    dense_layer, dense_scores = 4 * 32 * 32 + 4 * 32 * 32 + 2 * 2 * 32 * 48, 2 * 2 * 12 * 32 * 0.5  # 14336, 768
    routed_layer = 0.5 * dense_layer + 2 * 32 + 2 * (32 * 64 + 64)  # block on half the tokens + router + predictor
    per_sequence = flops.forward_flops_per_sequence(config, 8)
    assert per_sequence["body"] == 12 * (dense_layer + routed_layer)
    assert per_sequence["attention"] == 12 * (dense_scores + 0.25 * dense_scores)  # k queries × k keys
    measured = {"routing/executed_fraction/layer_1": 0.25}  # e.g. the causal predictor at inference
    effective = dense_layer + dense_scores + 0.25 * dense_layer + 2 * 32 + 2 * (32 * 64 + 64) + 0.0625 * dense_scores
    out = flops.routing_flops_metrics(config, measured)
    assert out["routing/effective_flops_per_token"] == effective
    assert out["routing/flops_saving"] == pytest.approx(1 - effective / (2 * (dense_layer + dense_scores)))
    assert flops.routing_flops_metrics(tiny_experiment("none"), measured) == {}


def test_skip_trains_densely_and_saves_only_queries_outputs_scores_and_mlp_at_inference():
    config = tiny_experiment("skip", "mlm", "cwt")
    dense_layer, dense_scores = 14336, 2 * 2 * 12 * 32
    router = 2 * 32 * 2
    assert flops.forward_flops_per_sequence(config, 8)["body"] == 12 * (2 * dense_layer + router)
    out = flops.routing_flops_metrics(config, {"routing/executed_fraction/layer_1": 0.5})
    kept = 4 * 32 * 32 + 0.5 * (4 * 32 * 32 + 2 * 2 * 32 * 48)  # keys/values for every token
    assert out["routing/effective_flops_per_token"] == dense_layer + dense_scores + kept + router + 0.5 * dense_scores


@pytest.mark.parametrize("task,loss,kind", [("clm", "cwt", "topk")])
def test_routed_training_is_the_same_on_a_sharded_mesh(task, loss, kind):
    def config(sizes):
        c = tiny_config(task, loss)
        c.model.routing.update(kind=kind, layers="every:2", capacity=0.5)
        c.mesh.update(data=sizes[0], fsdp=sizes[1], tensor=sizes[2])
        return c

    sgd, batches = optax.sgd(0.5), random_batches(2, 16)  # SGD: see test_train_step.py
    reference_losses, reference_params, _ = run_steps(config((1, 1, 1)), batches, jax.devices()[:1], optimizer=sgd)
    losses, params, state = run_steps(config((2, 2, 2)), batches, optimizer=sgd)
    np.testing.assert_allclose(losses, reference_losses, rtol=2e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, reference_params)
    router_kernel = state["params"]["body"]["layer_1"]["router"]["score" if kind == "topk" else "gate"]["kernel"]
    assert router_kernel.sharding.spec[0] == "fsdp"  # ('embed', 'router') under the default rules


def test_bench_routing_sweep_times_dense_against_topk_unscanned():
    config = tiny_experiment("none")
    config.model.scan_layers = True
    cases = bench.sweep_configs(config, "routing", [0.0, 0.5])
    assert [(c.objective.loss, bench.routing_label(c.model)) for c in cases] == [
        ("cwt", "none"), ("ce", "none"), ("cwt", "topk c=0.5 every:2 block"), ("ce", "topk c=0.5 every:2 block")]
    assert not any(c.model.scan_layers for c in cases)


def test_topk_gathers_and_scatters_stay_on_each_batch_shard():
    """Data parallel over 8 devices: the routed forward compiles with no cross-device data movement."""
    config = tiny_experiment("topk", capacity=0.5, layers="all")
    layout = Layout.from_config(config.mesh)
    model = make(config.model)
    tokens, segments, positions = inputs(batch=8, packed=False)
    params = init(model, (tokens, segments, positions))
    forward = jax.jit(lambda p, t, s, q: model.apply({"params": p}, t, s, q, deterministic=False,
                                                     rngs={"dropout": jax.random.key(0)}),
                      in_shardings=(None,) + (layout.batch_sharding,) * 3)
    with layout.active():
        hlo = forward.lower(params, tokens, segments, positions).compile().as_text()
    for collective in ("all-gather", "all-to-all", "collective-permute", "all-reduce", "reduce-scatter"):
        assert collective not in hlo, collective
