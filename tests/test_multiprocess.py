"""Multi-process training on CPU: two `headless_jax.main` processes × 4 devices, connected by jax.distributed
(gloo collectives), train exactly as one process × 8 devices on the same mesh, and their checkpoint resumes
in one process. The one-process runs are in-process (the test process has 8 devices, see conftest.py)."""
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils

from headless_jax import distributed
from headless_jax.config import base_config
from headless_jax.data import book_names, build_data, read_book
from headless_jax.data.pipeline import eval_batches, train_iterator
from headless_jax.loop import train
from tests.test_configs import load_config

ROOT = os.path.join(os.path.dirname(__file__), "..")
STEPS = 4  # the two processes' run; the one-process runs go one step further
# a tiny encoder on 4 × 2 = 8 devices (data × tensor), one train metric line per step; warmup outlasts the
# run, so the learning rates do not depend on train.num_steps
OVERRIDES = {"model.vocab_size": 384, "model.num_layers": 1, "model.d_model": 32, "model.num_heads": 2,
             "model.head_dim": 16, "model.mlp_dim": 64, "model.max_len": 32, "data.seq_len": 32,
             "train.global_batch_size": 16, "train.log_every": 1, "train.eval_every": 1000,
             "train.eval_batches": 2, "mesh.data": 4, "mesh.tensor": 2}


def tiny_config(text, **overrides):
    config = load_config("demo", None)
    config.update_from_flattened_dict({**OVERRIDES, "data.sources": f"text:{text}", **overrides})
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train_two_processes(workdir, text):
    """`python -m headless_jax.main` twice, as processes 0 and 1 of one run with 4 CPU devices each."""
    address = f"localhost:{free_port()}"
    flags = [f"--config.{key}={value}" for key, value in OVERRIDES.items()]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    processes = [subprocess.Popen(
        [sys.executable, "-m", "headless_jax.main", "--config=configs/demo.py", f"--workdir={workdir}",
         f"--config.data.sources=text:{text}", f"--config.train.num_steps={STEPS}", *flags,
         f"--config.distributed.coordinator_address={address}", "--config.distributed.num_processes=2",
         f"--config.distributed.process_id={i}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()  # only if the other one failed and this one waits for it forever
    for i, (p, output) in enumerate(zip(processes, outputs)):
        assert p.returncode == 0, f"process {i}:\n{output[-4000:]}"


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "book.txt"
    path.write_text(read_book(book_names()[0])[:40_000])
    return path


@pytest.fixture(scope="module")
def runs(text, tmp_path_factory):
    """Workdirs of: two processes (STEPS steps), one process (STEPS + 1 steps, sharing the token cache) and
    the two processes' run resumed in one process for one more step."""
    root = tmp_path_factory.mktemp("multiprocess")
    two, one, resumed = root / "two", root / "one", root / "resumed"
    train_two_processes(two, text)
    shutil.copytree(two, resumed)
    train(tiny_config(text, **{"train.num_steps": STEPS + 1, "data.cache_dir": str(two / "cache")}), str(one))
    train(tiny_config(text, **{"train.num_steps": STEPS + 1}), str(resumed))
    return {"two": two, "one": one, "resumed": resumed}


def train_losses(workdir) -> dict[int, float]:
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return {m["step"]: m["loss"] for m in lines if m["split"] == "train"}


def test_two_processes_train_like_one(runs):
    two, one = train_losses(runs["two"]), train_losses(runs["one"])
    assert sorted(two) == list(range(1, STEPS + 1))
    # the same batches and parameters; only the order of cross-device sums differs
    np.testing.assert_allclose([two[s] for s in two], [one[s] for s in two], rtol=2e-6)
    assert len(set(two.values())) == STEPS  # the loss moves: the steps really trained


def test_the_two_processes_checkpoint_resumes_in_one_process(runs):
    resumed, one = runs["resumed"], train_losses(runs["one"])
    assert not (resumed / "checkpoints" / "unreadable").exists()  # restored, not set aside
    # the 5th step continues from the restored parameters, optimiser state and data position
    np.testing.assert_allclose(train_losses(resumed)[STEPS + 1], one[STEPS + 1], rtol=2e-6)
    data_states = [(runs["two"] / "checkpoints" / str(STEPS) / "data" / f"process_{i}-of-2.json").read_text()
                   for i in range(2)]
    assert data_states[0] == data_states[1]  # what lets either process's state resume any process count


def test_the_processes_share_one_tokenizer_and_token_cache(runs):
    cache = runs["two"] / "cache"
    tokenizers = list(cache.glob("tokenizer_*.model"))
    assert len(tokenizers) == 1 and not list(cache.glob(".*.tmp"))
    assert tokenizers[0].read_bytes() == (runs["two"] / "tokenizer.model").read_bytes()
    (store,) = cache.glob("store_*")  # one token store, complete: every unit in the ledger
    assert sorted(p.name for p in (store / "ledger" / "text").glob("?????.json")) == ["00000.json"]


def test_each_process_reads_its_own_rows_of_every_global_batch(runs, text):
    config = tiny_config(text, **{"train.global_batch_size": 6, "train.eval_batches": 2})
    cache = runs["two"] / "cache"
    tokenizer = build_data(config, runs["two"])[0]
    whole = train_iterator(config, tokenizer, cache)
    parts = [train_iterator(config, tokenizer, cache, p, 3) for p in range(3)]
    for _ in range(3):
        want = next(whole)
        got = [next(part) for part in parts]
        for name in want:
            assert all(g[name].shape == (2, 32)[:want[name].ndim] for g in got)
            np.testing.assert_array_equal(np.concatenate([g[name] for g in got]), want[name])
    (whole_eval,) = eval_batches(config, tokenizer, cache, 2).values()
    eval_parts = [next(iter(eval_batches(config, tokenizer, cache, 2, p, 3).values())) for p in range(3)]
    for b, want in enumerate(whole_eval):
        np.testing.assert_array_equal(np.concatenate([part[b]["tokens"] for part in eval_parts]), want["tokens"])


def test_process_0_fills_the_caches_before_the_barrier_and_the_others_wait(text, tmp_path, monkeypatch):
    """Processes 1 and 0 of a two-process run, played in this process: what each cache_dir holds when the
    process reaches the barrier."""
    at_barrier = {}
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "assert_equal", lambda *args: None)  # one process: nothing to compare
    for index in (1, 0):
        cache = tmp_path / f"cache_of_process_{index}"
        monkeypatch.setattr(jax, "process_index", lambda: index)
        monkeypatch.setattr(multihost_utils, "sync_global_devices", lambda name: at_barrier.setdefault(
            index, sorted(p.name.split("_")[0] for p in cache.glob("*")) if cache.exists() else []))
        tokenizer = build_data(tiny_config(text, **{"data.cache_dir": str(cache)}), tmp_path)[0]
        assert tokenizer.vocab_size == OVERRIDES["model.vocab_size"]
    assert at_barrier == {1: [], 0: ["store", "tokenizer"]}


@pytest.fixture
def started(monkeypatch):
    """Records jax.distributed.initialize calls instead of connecting; starts from no CPU collectives."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *args: calls.append(args))
    monkeypatch.delenv("JAX_CPU_COLLECTIVES_IMPLEMENTATION", raising=False)
    for name in ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    previous = jax.config.jax_cpu_collectives_implementation
    jax.config.update("jax_cpu_collectives_implementation", None)
    yield calls
    jax.config.update("jax_cpu_collectives_implementation", previous)


def test_an_explicit_coordinator_starts_jax_distributed_with_gloo_on_cpu(started):
    dist = base_config().distributed
    dist.update(coordinator_address="localhost:1234", num_processes=2, process_id=1)
    distributed.initialize(dist)
    assert started == [("localhost:1234", 2, 1)]
    assert jax.config.jax_cpu_collectives_implementation == "gloo"


def test_one_process_starts_nothing(started):
    distributed.initialize(base_config().distributed)
    assert started == [] and jax.config.jax_cpu_collectives_implementation is None


def test_the_environment_chooses_another_cpu_collectives_implementation(started, monkeypatch):
    monkeypatch.setenv("JAX_CPU_COLLECTIVES_IMPLEMENTATION", "mpi")
    monkeypatch.setenv("SLURM_NTASKS", "4")  # detected: initialize() reads the rest from SLURM
    distributed.initialize(base_config().distributed)
    assert started == [()] and jax.config.jax_cpu_collectives_implementation is None


def test_a_coordinator_without_a_process_id_names_the_missing_flags(started):
    dist = base_config().distributed
    dist.coordinator_address = "localhost:1234"
    with pytest.raises(ValueError, match="num_processes.*process_id"):
        distributed.initialize(dist)
