"""A non-finite loss stops the run (or skips the update) and never touches the last good checkpoint."""
import json

import jax
import numpy as np
import pytest

from headless_jax import experiment, loop
from headless_jax.train.checkpoint import Checkpointer
from tests.main_runs import assert_same_params, final_params
from tests.train_helpers import text_run_config


@pytest.fixture
def config(tmp_path):
    return text_run_config(tmp_path, book=1, steps=6, checkpoint_every=3)


def poison(monkeypatch):
    """Every loss from now on is NaN."""
    build = experiment.build_objective

    def build_poisoned(*args, **kwargs):
        objective = build(*args, **kwargs)

        def nan_objective(params, batch, rng, deterministic):
            loss, metrics = objective(params, batch, rng, deterministic)
            return loss * jax.numpy.nan, dict(metrics, loss=loss * jax.numpy.nan)
        return nan_objective
    monkeypatch.setattr(experiment, "build_objective", build_poisoned)


def test_nan_stops_the_run_and_the_last_checkpoint_is_intact(config, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    loop.train(config, str(workdir))
    good = final_params(workdir, step=6)
    poison(monkeypatch)
    config.train.num_steps = 12
    with pytest.raises(loop.NonFiniteError, match="last good checkpoint \\(step 6\\) is intact"):
        loop.train(config, str(workdir))
    assert Checkpointer(str(workdir / "checkpoints"), keep=3).latest_step() == 6
    assert_same_params(final_params(workdir, step=6), good)


def test_nan_with_skip_keeps_training_without_applying_updates(config, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    loop.train(config, str(workdir))
    good = final_params(workdir, step=6)
    poison(monkeypatch)
    config.train.update(num_steps=9, nonfinite="skip")
    loop.train(config, str(workdir))
    assert_same_params(final_params(workdir, step=9), good)  # every poisoned update was skipped
    logged = [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
              for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "train" and r["step"] > 6 and r["loss"] is None for r in logged)  # NaN as null
    assert not np.isnan(np.asarray(jax.tree.leaves(final_params(workdir, step=9))[0])).any()


def test_nan_on_a_fresh_run_says_no_checkpoint_exists(config, tmp_path, monkeypatch):
    poison(monkeypatch)
    with pytest.raises(loop.NonFiniteError, match="the update was not applied and no checkpoint was written yet"):
        loop.train(config, str(tmp_path / "run"))


def test_skipping_stops_once_too_many_updates_in_a_row_were_non_finite(config, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    loop.train(config, str(workdir))
    good = final_params(workdir, step=6)
    poison(monkeypatch)
    config.train.update(num_steps=30, nonfinite="skip", nonfinite_skip_limit=2, log_every=1, checkpoint_every=1)
    with pytest.raises(loop.NonFiniteError, match=r"\(3 updates in a row, more than train.nonfinite_skip_limit=2: "
                                                  r"the run has diverged\).*last good checkpoint \(step 8\)"):
        loop.train(config, str(workdir))
    # the two skipped steps were checkpointed (their updates were not applied), the third was refused
    assert Checkpointer(str(workdir / "checkpoints"), keep=3).latest_step() == 8
    assert_same_params(final_params(workdir, step=8), good)
