"""Subprocess runs of `python -m headless_jax.main` on a tiny decoder: the helpers that the end-to-end and
fault-injection tests share (their fixtures, `corpus` and `uninterrupted`, are in conftest.py)."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp

STEPS = 30
ROOT = os.path.join(os.path.dirname(__file__), "..")


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


def run(workdir, corpus, *overrides, expect: int = 0, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Runs the main command to its end; `prefix`: a command that runs it (e.g. a shell setting limits)."""
    result = subprocess.run([*prefix, *command(workdir, corpus, *overrides)], cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == expect, f"exit {result.returncode}: {result.stderr[-3000:]}"
    return result


def start(workdir, corpus, *overrides, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, *command(workdir, corpus, *overrides)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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
