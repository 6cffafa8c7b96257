"""The main command end to end: preemption, crashes and corrupt checkpoints never lose or change a run."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from headless_jax.data import book_names, read_book

STEPS = 30
ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small text source (the start of a bundled novel) and a shared tokenizer/token cache."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "text").mkdir()
    (root / "text" / "book.txt").write_text(read_book(book_names()[0])[:60_000])
    return root


def command(workdir, corpus, *overrides):
    return [sys.executable, "-m", "headless_jax.main", "--config=configs/clm_demo.py", f"--workdir={workdir}",
            f"--config.data.sources=text:{corpus}/text/*.txt", f"--config.data.cache_dir={corpus}/cache",
            "--config.model.vocab_size=512", "--config.model.num_layers=1", "--config.model.d_model=32",
            "--config.model.num_heads=2", "--config.model.head_dim=16", "--config.model.mlp_dim=64",
            "--config.data.seq_len=32", "--config.model.max_len=32", "--config.train.global_batch_size=8",
            f"--config.train.num_steps={STEPS}", "--config.train.log_every=1", "--config.train.eval_every=1000",
            "--config.train.eval_batches=2", "--config.train.checkpoint_every=10", "--config.optim.warmup_steps=3",
            *overrides]


ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")


def run(workdir, corpus, *overrides) -> subprocess.CompletedProcess:
    result = subprocess.run(command(workdir, corpus, *overrides), cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def start(workdir, corpus, *overrides) -> subprocess.Popen:
    return subprocess.Popen(command(workdir, corpus, *overrides), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def train_losses(workdir) -> dict[int, float]:
    lines = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {m["step"]: m["loss"] for m in lines if m["split"] == "train"}


def final_params(workdir, step=STEPS):
    state = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))
    return state["params"]


def wait_until(condition, process, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before it could be interrupted: " + process.stderr.read()[-2000:]
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.05)


def assert_same_run(workdir, reference):
    losses, expected = train_losses(workdir), train_losses(reference)
    assert sorted(losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([losses[s] for s in sorted(losses)], [expected[s] for s in sorted(losses)], rtol=1e-6)
    params, expected_params = final_params(workdir), final_params(reference)
    assert_same_params(params, expected_params)


def assert_same_params(params, expected):
    pairs = list(zip(_leaves(params), _leaves(expected)))
    assert len(pairs) > 10
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _leaves(tree):
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from _leaves(tree[key])
    else:
        yield np.asarray(tree)


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = run(workdir, corpus)
    assert "held-out" in result.stdout + result.stderr
    losses = train_losses(workdir)
    assert losses[STEPS] < losses[1]
    return workdir


def test_sigterm_saves_and_the_resumed_run_equals_the_uninterrupted_one(corpus, uninterrupted, tmp_path):
    process = start(tmp_path, corpus)
    wait_until(lambda: os.path.exists(tmp_path / "metrics.jsonl") and len(train_losses(tmp_path)) >= 12, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "Preempted: saved the checkpoint at step" in stdout
    saved = int(stdout.split("Preempted: saved the checkpoint at step ")[1].split(";")[0])
    assert 12 <= saved < STEPS
    result = run(tmp_path, corpus)
    assert f"Resumed from the checkpoint at step {saved}" in result.stdout
    assert_same_run(tmp_path, uninterrupted)


def test_sigkill_while_saving_every_step_resumes_from_a_complete_checkpoint(corpus, uninterrupted, tmp_path):
    process = start(tmp_path, corpus, "--config.train.checkpoint_every=1")
    wait_until(lambda: os.path.exists(tmp_path / "metrics.jsonl") and len(train_losses(tmp_path)) >= 8, process)
    process.kill()  # SIGKILL: no handler runs, a save is likely in flight
    process.communicate()
    result = run(tmp_path, corpus)
    assert "Resumed from the checkpoint at step" in result.stdout
    assert_same_run(tmp_path, uninterrupted)


def test_an_unreadable_latest_checkpoint_is_set_aside_and_the_previous_one_used(corpus, uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted, workdir)
    shutil.rmtree(workdir / "checkpoints" / str(STEPS))
    state_dir = workdir / "checkpoints" / "20" / "state"
    for root, _, files in os.walk(state_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 3)
    result = run(workdir, corpus)
    assert "does not restore" in result.stderr and "falling back" in result.stderr
    assert "Resumed from the checkpoint at step 10" in result.stdout
    assert (workdir / "checkpoints" / "unreadable" / "20").exists()  # moved aside, not deleted
    assert_same_params(final_params(workdir), final_params(uninterrupted))


def test_a_finished_run_says_so_instead_of_training_again(corpus, uninterrupted):
    before = train_losses(uninterrupted)
    result = run(uninterrupted, corpus)
    assert "already finished" in result.stdout
    assert train_losses(uninterrupted) == before
