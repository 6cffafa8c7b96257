import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from headless_jax.config import base_config
from headless_jax.model import LanguageModel
from headless_jax.model.attention import dot_product_attention, xla_attention

L = 12


def tiny_model(**overrides) -> LanguageModel:
    cfg = base_config().model
    cfg.update(vocab_size=64, num_layers=2, d_model=32, num_heads=2, head_dim=16, mlp_dim=48, max_len=L)
    cfg.update(overrides)
    return LanguageModel(ml_collections.FrozenConfigDict(cfg))


def inputs(seed=0, batch=2):
    tokens = jax.random.randint(jax.random.key(seed), (batch, L), 7, 64)
    return tokens, jnp.ones_like(tokens), jnp.broadcast_to(jnp.arange(L), (batch, L))


def init_apply(model, tokens, segments, positions):
    variables = nn.unbox(model.init(jax.random.key(1), tokens, segments, positions))
    return variables, model.apply(variables, tokens, segments, positions)


VARIANTS = [
    dict(causal=True, positions="rotary", rotary_fraction=0.25, parallel_residual=True, head="untied"),
    dict(causal=True, activation="swiglu", norm="rmsnorm", scan_layers=True, remat="full"),
    dict(causal=False, norm_position="post", head="tied"),
]


def numpy_attention(q, k, v, segments, causal):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, l, h, d = q.shape
    out = np.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            for i in range(l):
                allowed = [j for j in range(l) if segments[bi, j] == segments[bi, i] and segments[bi, j] != 0
                           and (not causal or j <= i)]
                if not allowed:
                    continue
                s = np.array([q[bi, i, hi] @ k[bi, j, hi] for j in allowed]) / np.sqrt(d)
                p = np.exp(s - s.max()); p /= p.sum()
                out[bi, i, hi] = sum(pj * v[bi, j, hi] for pj, j in zip(p, allowed))
    return out


@pytest.mark.parametrize("causal,causal_chunk", [(False, None), (True, None), (True, 2)])  # 2: three query chunks
def test_xla_attention_matches_float64_reference(causal, causal_chunk):
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 6, 2, 4)) * 3 for i in range(3))
    segments = np.array([[1, 1, 1, 2, 2, 0], [1, 2, 2, 2, 3, 3]])
    if causal_chunk:
        out = xla_attention(q, k, v, jnp.asarray(segments), causal, causal_chunk=causal_chunk)
    else:
        out = dot_product_attention(q, k, v, jnp.asarray(segments), causal, "xla")
    expected = numpy_attention(q, k, v, segments, causal)
    rows = segments != 0
    np.testing.assert_allclose(np.asarray(out)[rows], expected[rows], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides", VARIANTS[:2])
def test_causal_output_ignores_future_tokens(overrides):
    model = tiny_model(**overrides)
    tokens, segments, positions = inputs()
    variables, h = init_apply(model, tokens, segments, positions)
    t = 5
    changed = tokens.at[:, t + 1:].set((tokens[:, t + 1:] + 3) % 64)
    h_changed = model.apply(variables, changed, segments, positions)
    np.testing.assert_allclose(h[:, :t + 1], h_changed[:, :t + 1], atol=1e-6)
    assert not np.allclose(h[:, t + 1:], h_changed[:, t + 1:], atol=1e-3)  # the future does move later outputs


def test_encoder_sees_both_directions():
    model = tiny_model(causal=False)
    tokens, segments, positions = inputs()
    variables, h = init_apply(model, tokens, segments, positions)
    h_changed = model.apply(variables, tokens.at[:, -1].set(8), segments, positions)
    assert not np.allclose(h[:, 0], h_changed[:, 0], atol=1e-4)


@pytest.mark.parametrize("overrides", VARIANTS)
def test_segment_ids_stop_attention_across_documents(overrides):
    model = tiny_model(**overrides)
    tokens, _, _ = inputs()
    segments = jnp.array([[1] * 5 + [2] * 7] * 2)
    positions = jnp.array([list(range(5)) + list(range(7))] * 2)
    variables, h = init_apply(model, tokens, segments, positions)
    other_first_doc = tokens.at[:, :5].set((tokens[:, :5] + 11) % 64)
    h_changed = model.apply(variables, other_first_doc, segments, positions)
    np.testing.assert_allclose(h[:, 5:], h_changed[:, 5:], atol=1e-6)
    assert not np.allclose(h[:, :5], h_changed[:, :5], atol=1e-3)
    # The second document alone, at positions 0.., gives the same hidden states as inside the pack.
    alone = model.apply(variables, tokens[:, 5:], jnp.ones((2, 7), jnp.int32), positions[:, 5:])
    np.testing.assert_allclose(h[:, 5:], alone, atol=1e-5)


@pytest.mark.parametrize("overrides", VARIANTS + [dict(causal=False, head="none")])
def test_every_parameter_has_logical_axis_names(overrides):
    model = tiny_model(**overrides)
    boxed = model.init(jax.random.key(0), *inputs())["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    for box in leaves:
        assert len(box.names) == box.value.ndim and all(isinstance(n, str) for n in box.names)


def test_scan_over_layers_equals_a_python_loop():
    tokens, segments, positions = inputs()
    looped = tiny_model(causal=True)
    scanned = tiny_model(causal=True, scan_layers=True)
    variables, h = init_apply(looped, tokens, segments, positions)
    body = dict(variables["params"]["body"])
    layers = [body.pop(f"layer_{i}") for i in range(2)]
    body["layers"] = jax.tree.map(lambda *x: jnp.stack(x), *layers)
    h_scanned = scanned.apply({"params": {"body": body}}, tokens, segments, positions)
    np.testing.assert_allclose(h, h_scanned, atol=1e-5)


def test_headless_model_has_no_head_and_refuses_logits():
    model = tiny_model(head="none")
    variables, h = init_apply(model, *inputs())
    assert set(variables["params"]) == {"body"}
    with pytest.raises(ValueError, match="headless"):
        model.apply(variables, h[:, 0], method=LanguageModel.logits)
