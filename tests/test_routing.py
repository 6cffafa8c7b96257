"""Learning to Skip (DESIGN §1.4): skip and topk routed layers against dense models and hand references."""
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from headless_jax import objectives
from headless_jax.config import base_config
from headless_jax.model import LanguageModel, routing
from headless_jax.model.transformer import Block
from headless_jax.train import flops
from headless_jax.validate import ConfigError, validate_config

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


def apply(model, params, args, deterministic=True, rng=2):
    return model.apply({"params": params}, *args, deterministic=deterministic, rngs={"dropout": jax.random.key(rng)},
                       mutable=["routing"])


def without_router(params):
    """The dense model's params: the routed model's, less the router (everything else is shared)."""
    return jax.tree_util.tree_map(lambda x: x, {**params, "body": {
        name: {k: v for k, v in layer.items() if k != "router"} if isinstance(layer, dict) else layer
        for name, layer in params["body"].items()}})


@pytest.mark.parametrize("wiring", list(WIRINGS))
@pytest.mark.parametrize("skipped", ["block", "attention", "mlp"])
def test_topk_capacity_one_equals_the_dense_model(wiring, skipped):
    args = inputs(packed=True)
    routed = make(model_config("topk", wiring=wiring, capacity=1.0, skip=skipped))
    params = init(routed, args)
    dense = make(model_config("none", wiring=wiring))
    h_dense = dense.apply({"params": without_router(params)}, *args)
    (h_routed, state) = apply(routed, params, args, deterministic=False)
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
    h_dense = make(model_config("none", wiring=wiring)).apply({"params": without_router(params)}, *args)
    always = lambda logits, rng, temperature: jnp.ones(logits.shape[:-1])  # noqa: E731
    with mock.patch.object(routing, "skip_gate", always):
        h_routed, state = apply(routed, params, args, deterministic=False)
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


@pytest.mark.parametrize("capacity,k", [(0.5, 6), (0.3, 4), (0.01, 1)])
@pytest.mark.parametrize("packed", [False, True])
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
