"""LM-head fine-tuning (train.init_from) and the head-only probe (train.trainable='head')."""
import dataclasses
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

from headless_jax.experiment import build_experiment
from headless_jax.loop import train
from headless_jax.train.init_from import InitFromError
from lm_helpers import book_text, shrink, tiny_run
from test_configs import load_config


def saved_params(workdir, step: int) -> dict:
    state = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))
    return jax.tree.map(np.asarray, state["params"])


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return book_text(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def headless_run(tmp_path_factory, text):
    return tiny_run(tmp_path_factory.mktemp("headless"), text, "clm_demo", 2)


def lm_head_config(text, init_from, steps=3, **train_keys):
    config = shrink(load_config("lm_head", None), text, steps)
    config.train.update(init_from=str(init_from), **train_keys)
    config.optim.update(learning_rate=1e-2, warmup_steps=1, weight_decay=0.1)
    return config


def start_params(config):
    """(the parameters the run starts from, through init_from; the same model's fresh ones; their shardings)."""
    experiment = build_experiment(config)
    fresh = dataclasses.replace(experiment, config=None).init_state()["params"]  # no config: no init_from
    return experiment.init_state()["params"], fresh, experiment.state_shardings["params"]


def test_the_head_starts_as_an_exact_copy_of_the_embeddings(text, headless_run):
    config = lm_head_config(text, headless_run)
    config.mesh.update(data=2, fsdp=2, tensor=2)  # not the layout the headless run was saved from
    params, fresh, shardings = start_params(config)
    source = saved_params(headless_run, 2)
    np.testing.assert_array_equal(np.asarray(params["head"]["decoder"]), source["body"]["embed"]["embedding"])
    assert not np.array_equal(np.asarray(fresh["head"]["decoder"]), source["body"]["embed"]["embedding"])
    for path, value in traverse_util.flatten_dict(source["body"]).items():
        np.testing.assert_array_equal(np.asarray(traverse_util.flatten_dict(params["body"])[path]), value)
    assert params["head"]["decoder"].sharding == shardings["head"]["decoder"]


def test_fine_tuning_trains_head_and_embeddings_apart_and_resumes_its_own_run(text, headless_run, tmp_path, capsys):
    train(lm_head_config(text, headless_run), str(tmp_path))
    assert "Initialised from the parameters of" in capsys.readouterr().out
    embedding = saved_params(headless_run, 2)["body"]["embed"]["embedding"]
    tuned = saved_params(tmp_path, 3)
    head, tuned_embedding = tuned["head"]["decoder"], tuned["body"]["embed"]["embedding"]
    assert not np.allclose(head, embedding) and not np.allclose(tuned_embedding, embedding)
    assert np.abs(head - tuned_embedding).max() > 1e-3  # untied: they moved apart
    train(lm_head_config(text, headless_run, steps=4), str(tmp_path))
    output = capsys.readouterr().out
    assert "Resumed from the checkpoint at step 3" in output and "Initialised" not in output


def test_the_probe_leaves_the_body_bit_identical(text, headless_run, tmp_path):
    train(lm_head_config(text, headless_run, trainable="head"), str(tmp_path))
    before, after = saved_params(headless_run, 2), saved_params(tmp_path, 3)
    for path, value in traverse_util.flatten_dict(before["body"]).items():
        np.testing.assert_array_equal(traverse_util.flatten_dict(after["body"])[path], value, err_msg=str(path))
    assert not np.allclose(after["head"]["decoder"], before["body"]["embed"]["embedding"])


def test_a_model_of_another_shape_is_refused_naming_the_keys(text, headless_run):
    config = lm_head_config(text, headless_run)
    config.model.update(d_model=64, mlp_dim=128)
    with pytest.raises(InitFromError, match=r"model.d_model \(32 there, 64 here\), model.mlp_dim"):
        build_experiment(config).init_state()


def test_a_workdir_that_is_not_a_run_is_refused(text, tmp_path):
    config = lm_head_config(text, tmp_path)  # the encoder/decoder and tokenizer checks: tests/test_lm_eval.py
    with pytest.raises(InitFromError, match="train.init_from: .* no checkpoints/ there"):
        build_experiment(config).init_state()
