"""A run never silently loses or mixes state: a checkpoint of another model is refused (not set aside), bad
numbers are refused before any work, config.json describes the checkpoints, metrics.jsonl has each step once."""
import json

import numpy as np
import pytest

from headless_jax import loop
from headless_jax.train.checkpoint import Checkpointer
from headless_jax.validate import ConfigError
from tests.train_helpers import text_run_config


@pytest.fixture
def config(tmp_path):
    return text_run_config(tmp_path, book=2, steps=4, checkpoint_every=2)


def snapshot(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def rows(workdir) -> list[dict]:
    def refuse(constant):
        raise ValueError(f"bare {constant} in metrics.jsonl")
    return [json.loads(line, parse_constant=refuse) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_checkpoint_of_another_model_is_refused_and_left_as_it_was(config, tmp_path):
    workdir = tmp_path / "run"
    loop.train(config, str(workdir))
    before = snapshot(workdir)
    config.model.num_layers = 3
    config.train.num_steps = 6
    with pytest.raises(ConfigError, match=r"another model: model.num_layers \(2 in the checkpoint, 3 now\).*"
                                          r"new --workdir.*--config.train.init_from="):
        loop.train(config, str(workdir))
    assert snapshot(workdir) == before  # nothing set aside, config.json and metrics untouched
    assert Checkpointer(str(workdir / "checkpoints"), keep=3).latest_step() == 4
    config.model.update(num_layers=2, dropout_rate=0.1)  # a change that fits the checkpoint resumes
    loop.train(config, str(workdir))
    assert Checkpointer(str(workdir / "checkpoints"), keep=3).latest_step() == 6
    history = [json.loads(line) for line in (workdir / "config_history.jsonl").read_text().splitlines()]
    assert [h["start_step"] for h in history] == [0, 4]
    assert json.loads((workdir / "config.json").read_text())["model"]["dropout_rate"] == 0.1


@pytest.mark.parametrize("key,value", [("num_steps", -5), ("eval_every", 0), ("checkpoint_every", 0),
                                       ("global_batch_size", 0)])
def test_bad_numbers_are_refused_before_any_work(config, tmp_path, key, value):
    config.train[key] = value
    with pytest.raises(ConfigError, match=f"train.{key}={value} is out of range"):
        loop.train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_a_resumed_run_logs_each_step_once_in_strict_json(config, tmp_path):
    workdir = tmp_path / "run"
    loop.train(config, str(workdir))
    # an interrupted run: it logged steps 3 and 4 but its checkpoint of step 4 never completed
    checkpoints = workdir / "checkpoints"
    for path in sorted((checkpoints / "4").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (checkpoints / "4").rmdir()
    logged = rows(workdir)
    assert max(r["step"] for r in logged) == 4
    loop.train(config, str(workdir))  # resumes from step 2 and trains 3 and 4 again
    again = rows(workdir)
    keys = [(r["step"], r["split"]) for r in again]
    assert len(keys) == len(set(keys)), "a step logged twice"
    assert [r for r in again if r["step"] <= 2] == [r for r in logged if r["step"] <= 2]
    assert max(r["step"] for r in again) == 4
    np.testing.assert_allclose([r["loss"] for r in again if r["step"] > 2 and r["split"] == "train"],
                               [r["loss"] for r in logged if r["step"] > 2 and r["split"] == "train"], rtol=1e-5)


def test_a_second_run_on_a_live_workdir_is_refused_naming_the_holder(config, tmp_path):
    import os
    import socket

    from headless_jax.train.workdir_lock import LOCK_FILE, WorkdirLocked

    workdir = tmp_path / "run"
    workdir.mkdir()
    live = {"host": socket.gethostname(), "pid": os.getppid(), "heartbeat": 0.0}  # a live process: pytest's parent
    (workdir / LOCK_FILE).write_text(json.dumps(live))
    with pytest.raises(WorkdirLocked, match=f"in use by the run of pid {os.getppid()} on host {live['host']}"):
        loop.train(config, str(workdir))
    assert sorted(p.name for p in workdir.iterdir()) == [LOCK_FILE]  # the refused run wrote nothing
    other_host = {"host": "elsewhere", "pid": 1, "heartbeat": __import__("time").time()}
    (workdir / LOCK_FILE).write_text(json.dumps(other_host))  # a fresh heartbeat from another host
    with pytest.raises(WorkdirLocked, match="on host elsewhere"):
        loop.train(config, str(workdir))
    (workdir / LOCK_FILE).write_text(json.dumps(dict(live, pid=2**22 + 12345)))  # its holder crashed
    loop.train(config, str(workdir))  # takes the stale lock over, trains, releases it
    assert not (workdir / LOCK_FILE).exists()
    assert Checkpointer(str(workdir / "checkpoints"), keep=3).latest_step() == 4


def test_sigterm_is_acted_on_after_the_step_it_arrives_in(config, tmp_path, monkeypatch):
    """Whatever the logging interval: the checkpoint is of the step during which SIGTERM arrived."""
    import os
    import signal

    add = loop.TokensSeen.add
    calls = []

    def add_and_signal_at_the_fifth_step(self, local_batch):
        calls.append(1)
        if len(calls) == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        add(self, local_batch)

    monkeypatch.setattr(loop.TokensSeen, "add", add_and_signal_at_the_fifth_step)
    before = signal.getsignal(signal.SIGTERM)
    config.train.update(num_steps=40, log_every=1000, checkpoint_every=1000, eval_every=1000)
    workdir = tmp_path / "run"
    with pytest.raises(loop.Preempted, match="saved the checkpoint at step 5 in .*run the same command again"):
        loop.train(config, str(workdir))
    assert Checkpointer(str(workdir / "checkpoints"), keep=3).all_steps() == [5]
    assert signal.getsignal(signal.SIGTERM) == before  # the run's handler is gone with it
