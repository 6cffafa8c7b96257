"""BPDec's pretraining-only MLM decoder (docs/objectives.md): its attention masks against brute force, gradual
unmasking seen in its outputs, the encoder/decoder mix, and the plain encoder left for downstream jobs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from headless_jax.model import BODY, MLM_DECODER, LanguageModel
from headless_jax.model.attention import attention_mask
from headless_jax.objectives import SpecialTokens, build_objective
from headless_jax.train.flops import layer_forward_flops_per_token, train_flops_per_step
from headless_jax.train.init_from import start_params
from headless_jax.validate import ConfigError, validate_config
from train_helpers import SEQ_LEN, random_batches, run_steps, tiny_config


def bpdec_config(loss: str = "cwt", layers: int = 2, **objective):
    config = tiny_config("mlm", loss)
    config.model.mlm_decoder_layers = layers
    config.objective.update(**objective)
    return config


def init(config, seed: int = 0):
    batch = {k: jnp.asarray(v) for k, v in random_batches(1, 16)[0].items()}
    model = LanguageModel(config.model)
    params = nn.unbox(model.init(jax.random.key(seed), batch["tokens"], batch["segment_ids"],
                                 batch["positions"])["params"])
    return model, params, batch


def test_hidden_keys_mask_matches_brute_force():
    rng = np.random.default_rng(0)
    segments = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]], np.int32)
    visible = rng.random((2, 6)) < 0.5
    mask = np.asarray(attention_mask(jnp.asarray(segments), False, visible_keys_BxL=jnp.asarray(visible)))[:, 0]
    for b in range(2):
        for q in range(6):
            for k in range(6):
                expected = segments[b, q] == segments[b, k] != 0 and (visible[b, k] or q == k)
                assert mask[b, q, k] == expected, (b, q, k)


@pytest.mark.parametrize("layers,unmasked,others_change", [(1, False, False), (1, True, True), (2, False, True)])
def test_the_first_block_hides_masked_positions_and_later_blocks_see_them(layers, unmasked, others_change):
    """Changing the encoder's state at a masked position j reaches the other positions' decoder outputs only where
    j is visible: unmasked in the first block, or through a second block."""
    model, params, batch = init(bpdec_config(layers=layers))
    h = jax.random.normal(jax.random.key(1), (16, SEQ_LEN, 32))
    masked = jnp.zeros((16, SEQ_LEN), bool).at[:, 3].set(True).at[:, 9].set(True)
    hidden = masked.at[:, 3].set(not unmasked)

    def decode(h_BxLxD):
        return model.apply({"params": params}, h_BxLxD, batch["segment_ids"], batch["positions"], hidden,
                           method="mlm_decode")

    before, after = decode(h), decode(h.at[:, 3].add(jax.random.normal(jax.random.key(2), (16, 32))))
    others = np.delete(np.arange(SEQ_LEN), 3)
    changed = np.abs(np.asarray(after - before))[:, others].max()
    assert (changed > 1e-4) == others_change, changed
    assert np.abs(np.asarray(after - before))[:, 3].max() > 1e-4  # its own output always follows it


@pytest.mark.parametrize("loss", ["cwt", "ce"])
def test_reading_only_the_encoder_trains_exactly_as_plain_mlm(loss):
    """mlm_decoder_encoder_rate = 1: every training prediction reads the encoder, so the loss is plain MLM's on the
    same body (the decoder gets no gradient); evaluation reads the decoder and differs."""
    config = bpdec_config(loss, mlm_decoder_encoder_rate=1.0)
    model, params, batch = init(config)
    plain_config = tiny_config("mlm", loss)
    plain_params = {k: v for k, v in params.items() if k != MLM_DECODER}
    rng = jax.random.key(5)
    objective = build_objective(config, model, SpecialTokens())
    plain = build_objective(plain_config, LanguageModel(plain_config.model), SpecialTokens())
    loss_value, grads = jax.value_and_grad(lambda p: objective(p, batch, rng, False)[0])(params)
    assert float(loss_value) == float(plain(plain_params, batch, rng, False)[0])
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads[MLM_DECODER]))
    assert float(objective(params, batch, rng, True)[0]) != float(plain(plain_params, batch, rng, True)[0])


def test_the_decoder_trains_and_leaves_a_plain_encoder_downstream():
    config = bpdec_config(mlm_decoder_encoder_rate=0.5)
    model, params, batch = init(config)
    grads = jax.grad(lambda p: build_objective(config, model, SpecialTokens())(p, batch, jax.random.key(2), False)[0])(
        params)
    flat = traverse_util.flatten_dict(grads[MLM_DECODER])
    assert flat and all(np.any(np.asarray(g) != 0) for g in flat.values())
    losses, trained, _ = run_steps(config, random_batches(1, 16) * 10)  # one batch, learnt by heart
    assert losses[-1] < losses[0]
    plain = tiny_config("mlm", "cwt")
    _, plain_params, _ = init(plain)
    assert jax.tree.map(np.shape, trained[BODY]) == jax.tree.map(np.shape, plain_params[BODY])
    assert set(start_params(plain, plain_params, config, trained)) == {BODY}  # an encoder from the BPDec run
    assert MLM_DECODER in start_params(config, params, plain, plain_params)  # and a BPDec run from an encoder


def test_decoder_flops_are_its_layers_on_every_token():
    config, plain = bpdec_config(layers=3), tiny_config("mlm", "cwt")
    flops, plain_flops = train_flops_per_step(config), train_flops_per_step(plain)
    per_layer = sum(layer_forward_flops_per_token(config.model, SEQ_LEN))
    assert flops["mlm_decoder"] == 3 * 16 * SEQ_LEN * 3 * per_layer
    assert flops["total"] == plain_flops["total"] + flops["mlm_decoder"]


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update_from_flattened_dict({"objective.task": "clm", "model.causal": True}),
     "predicts no masked tokens through it"),
    (lambda c: c.update_from_flattened_dict({"objective.loss": "ce", "model.head": "tied",
                                             "objective.ce_all_positions": True}), "ce_all_positions"),
    (lambda c: c.model.update(attention="splash"), "per-row mask splash attention cannot take"),
    (lambda c: c.model.update(mlm_decoder_layers=-1), "model.mlm_decoder_layers=-1 must be a whole number"),
    (lambda c: c.objective.update(mlm_decoder_unmask_rate=1.5), "objective.mlm_decoder_unmask_rate=1.5 is out of"),
])
def test_decoder_config_errors_name_the_key_and_the_fix(change, message):
    config = bpdec_config()
    change(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, num_devices=1)
