"""Observability: the W&B tracker across a kill and a resume, the profiler window, the time accounting, the plots."""
import glob
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import pyplot

from headless_jax import curves
from headless_jax.config import base_config, saved_config
from headless_jax.train.flops import train_flops_per_step
from headless_jax.train import wandb_log
from headless_jax.train.goodput import PARTS, TimeAccount
from headless_jax.train.metrics import WANDB_RUN_FILE, MetricsWriter
from headless_jax.validate import ConfigError, validate_config
from tests.main_runs import ENV, ROOT, run, start, train_losses

PROFILED = (3, 5)
OBSERVED_STEPS = 60


def _network_namespace_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


# a new user and network namespace holds no network interface but a loopback that is down: nothing can be reached
NO_NETWORK = ("unshare", "-rn") if _network_namespace_works() else ()


@pytest.fixture(scope="module")
def observed(corpus, tmp_path_factory):
    """A tiny run of OBSERVED_STEPS with every tracker (W&B offline) and a profiled window, SIGKILLed once W&B had
    recorded steps after its latest checkpoint, and resumed; both sessions without a network. Returns (workdir, the
    checkpoint the second session resumed from, the second session's seconds, its result)."""
    workdir = tmp_path_factory.mktemp("observed")
    overrides = ("--config.train.trackers=jsonl,tensorboard,wandb", "--config.wandb.mode=offline",
                 f"--config.train.profile_steps={PROFILED[0]},{PROFILED[1]}",
                 f"--config.train.num_steps={OBSERVED_STEPS}")
    process = start(workdir, corpus, *overrides, prefix=NO_NETWORK)
    deadline = time.time() + 300
    while True:  # frozen while looking, so that what is seen is what the kill leaves
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
        process.send_signal(signal.SIGSTOP)
        checkpoint = _latest_checkpoint(workdir)
        if checkpoint is not None and max(_wandb_steps(workdir), default=0) > checkpoint:
            break
        process.send_signal(signal.SIGCONT)
    process.kill()
    process.communicate()
    began = time.perf_counter()
    result = run(workdir, corpus, *overrides, prefix=NO_NETWORK)
    seconds = time.perf_counter() - began
    assert f"Resumed from the checkpoint at step {checkpoint}" in result.stdout
    return workdir, checkpoint, seconds, result


def _latest_checkpoint(workdir) -> int | None:
    """The newest complete checkpoint (Orbax writes a step under a temporary name and renames it when done)."""
    names = os.listdir(workdir / "checkpoints") if (workdir / "checkpoints").exists() else []
    steps = [int(name) for name in names if name.isdigit()]
    return max(steps, default=None)


def _wandb_steps(workdir) -> list[int]:
    return [row["_step"] for path in _sessions(workdir) for row in wandb_log.history(path)]


def _sessions(workdir) -> list[str]:
    """The W&B offline run files, one per session, in the order the sessions started."""
    return sorted(glob.glob(str(workdir / "wandb" / "offline-run-*" / "run-*.wandb")))


def test_wandb_offline_a_killed_and_resumed_run_continues_the_same_run_without_duplicate_steps(observed):
    workdir, resumed_at, _, _ = observed
    sessions = _sessions(workdir)
    assert len(sessions) == 2
    run_id = json.loads((workdir / WANDB_RUN_FILE).read_text())["id"]
    assert [wandb_log.run_record(path).run_id for path in sessions] == [run_id, run_id]
    first, second = (wandb_log.history(path) for path in sessions)
    assert max(row["_step"] for row in first) > resumed_at  # the killed session had logged past its checkpoint
    steps = [row["_step"] for row in first + second]
    assert steps == sorted(set(steps)), "a step was logged twice, or out of order"
    assert set(steps) == set(range(1, OBSERVED_STEPS + 1))
    losses = train_losses(workdir)  # metrics.jsonl: the same numbers
    logged = {row["_step"]: row["train/loss"] for row in first + second if "train/loss" in row}
    np.testing.assert_allclose([logged[s] for s in sorted(losses)], [losses[s] for s in sorted(losses)], rtol=1e-6)
    assert any("eval/loss" in row for row in second)
    config = {item.key: json.loads(item.value_json) for item in wandb_log.run_record(sessions[1]).config.update}
    assert config["model"]["vocab_size"] == 512 and config["wandb"]["mode"] == "offline"


def test_a_run_restarted_from_scratch_logs_each_step_once(tmp_path):
    """Killed before its first checkpoint, a run starts again at step 0: what it logged before is dropped."""
    config = base_config()
    config.train.trackers = "jsonl,tensorboard"
    for session in range(2):
        writer = MetricsWriter(str(tmp_path), config, resumed_at=0)
        for step in range(1, 4 + session):
            writer.write(step, "train", {"loss": float(step + 10 * session)})
        writer.close()
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 11.0), (2, 12.0), (3, 13.0), (4, 14.0)]


def test_the_transaction_log_reader_returns_what_wandb_wrote_and_drops_a_torn_tail(tmp_path):
    run_id, steps = "readertest", 400  # several 32 KiB blocks, so records cross block boundaries
    session = f"""
import wandb
run = wandb.init(id={run_id!r}, dir={str(tmp_path)!r}, mode="offline", project="p",
                 settings=wandb.Settings(console="off", silent=True))
for step in range(1, {steps} + 1):
    run.log({{"train/loss": step / 7, "train/name_" + "x" * (step % 50): step, "eval/n": -step}}, step=step)
run.finish()
"""
    result = subprocess.run([sys.executable, "-c", session], env=ENV, capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    path, = glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    rows = wandb_log.history(path)
    assert [row["_step"] for row in rows] == list(range(1, steps + 1))
    assert [row["train/loss"] for row in rows] == [step / 7 for step in range(1, steps + 1)]
    assert os.path.getsize(path) > 3 * wandb_log.BLOCK
    assert wandb_log.last_logged_steps(str(tmp_path / "wandb"), run_id) == {"train": steps, "eval": steps}
    data = open(path, "rb").read()
    for cut in (len(data) // 3, len(data) // 2 + 11):  # a killed session's file ends anywhere
        torn = tmp_path / f"torn_{cut}.wandb"
        torn.write_bytes(data[:cut])
        kept = [row["_step"] for row in wandb_log.history(str(torn))]
        assert 0 < len(kept) < steps and kept == list(range(1, len(kept) + 1))


@pytest.mark.skipif(not NO_NETWORK, reason="unshare cannot create a network namespace on this machine")
def test_wandb_offline_needs_no_network(observed):
    """Both sessions ran in a namespace with no network (the fixture): a W&B that tried to reach its server would
    have failed or hung there; the run finished and W&B wrote its files."""
    workdir, _, _, result = observed
    assert result.returncode == 0 and len(_sessions(workdir)) == 2


def test_the_profiler_traces_the_configured_window_and_nothing_else(observed):
    workdir = observed[0]
    traces = glob.glob(str(workdir / "tensorboard" / "plugins" / "profile" / "*" / "*.trace.json.gz"))
    assert len(traces) == 1, traces  # one window: the resumed session started after it
    assert glob.glob(os.path.join(os.path.dirname(traces[0]), "*.xplane.pb"))  # what TensorBoard / XProf read
    events = json.load(gzip.open(traces[0]))["traceEvents"]
    calls = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "PjitFunction(train_step)"]
    outermost = [c for c in calls if not any(o != c and o[0] <= c[0] and c[1] <= o[1] for o in calls)]
    assert len(outermost) == PROFILED[1] - PROFILED[0] + 1


def test_time_parts_are_non_negative_and_add_up_to_no_more_than_the_wall_time(observed):
    workdir, resumed_at, seconds, result = observed
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    timed = [r for r in rows if r["split"] in ("train", "session") and "time/wall_s" in r]
    assert {r["step"] for r in timed if r["split"] == "train"} == set(range(1, OBSERVED_STEPS + 1))
    for row in timed:
        parts = [row[f"time/{part}_s"] for part in PARTS]
        assert min(parts) >= 0
        assert sum(parts) <= row["time/wall_s"] * (1 + 1e-9)
        assert 0 < row["goodput"] <= 1 and 0 < row["goodput_run"] <= 1
    session, = [r for r in rows if r["split"] == "session"]  # the killed session never reached its end
    assert session["step"] == OBSERVED_STEPS
    assert session["time/wall_s"] <= seconds  # measured here, around the whole command
    assert session["time/compile_s"] > 0 and session["time/checkpoint_s"] > 0 and session["time/eval_s"] > 0
    assert "goodput" in result.stdout.splitlines()[-1] and result.stdout.splitlines()[-1].startswith("Time: ")


def test_time_account_moves_compilation_out_of_the_part_it_happened_in():
    account = TimeAccount()
    account.switch("step")
    jax.jit(lambda x: jnp.sin(x) * 3.0 + x.sum())(jnp.arange(977.0)).block_until_ready()  # a new compilation
    values = account.metrics()
    assert values["time/compile_s"] > 0
    assert sum(values[f"time/{part}_s"] for part in PARTS) == pytest.approx(values["time/wall_s"], rel=1e-9)
    account.resume({"run_started_at": time.time() - 100.0, "step_s": 50.0})  # a run that began 100 s ago
    expected = (50.0 + account.seconds["step"]) / (time.time() - account.run_started_at)
    assert account.metrics()["goodput_run"] == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("key, value", [("train.profile_steps", "5,3"), ("train.profile_steps", "0,2"),
                                        ("train.profile_steps", "1,31"), ("train.profile_steps", "3"),
                                        ("train.trackers", "jsonl,mlflow"), ("train.trackers", "jsonl,jsonl"),
                                        ("wandb.mode", "dryrun")])
def test_observability_settings_are_refused_with_the_key_named(key, value):
    config = base_config()
    config.train.num_steps = 30
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(config, num_devices=None)


def test_plot_draws_two_runs_against_steps_tokens_and_flops(observed, uninterrupted, tmp_path):
    runs = [str(uninterrupted), str(observed[0])]
    config = saved_config(json.loads((uninterrupted / "config.json").read_text()))
    per_step = {"step": 1.0, "tokens": 8 * 32, "flops": train_flops_per_step(config)["total"]}
    for x, cost in per_step.items():
        found = curves.curves(runs, ["train/loss", "eval/loss"], x)
        xs, losses = found["train/loss"]["observed0"]
        np.testing.assert_allclose(xs, cost * np.arange(1, OBSERVED_STEPS + 1))
        np.testing.assert_allclose(losses, [train_losses(observed[0])[s] for s in range(1, OBSERVED_STEPS + 1)])
        assert set(found["train/loss"]) == {uninterrupted.name, "observed0"}
    out = tmp_path / "curves.png"
    result = subprocess.run([sys.executable, "-m", "headless_jax.plot", *runs, f"--out={out}", "--x=flops"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    image = pyplot.imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 300 and image[..., :3].std() > 0.05  # something is drawn


def test_plot_x_follows_the_config_each_session_trained_with():
    """A run resumed at step 10 with twice the batch, then again at step 5 (an earlier checkpoint) with the first
    batch: steps 1-5 and 6-… cost one batch, the second session's steps count nowhere."""
    def entry(start_step, batch):
        config = base_config()
        config.train.global_batch_size = batch
        return {"start_step": start_step, "config": json.loads(config.to_json_best_effort())}

    tokens = curves.x_of_steps([entry(0, 4), entry(10, 8), entry(5, 4)], np.array([1.0, 5, 6, 12]), "tokens")
    np.testing.assert_allclose(tokens, np.array([1, 5, 6, 12]) * 4 * 128)
    tokens = curves.x_of_steps([entry(0, 4), entry(10, 8)], np.array([10.0, 12]), "tokens")
    np.testing.assert_allclose(tokens, [10 * 4 * 128, (10 * 4 + 2 * 8) * 128])


def test_plot_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run")
    result = subprocess.run([sys.executable, "-m", "headless_jax.plot", str(tmp_path), f"--out={tmp_path}/c.png"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Refused: {tmp_path} is not a training run: it has no metrics.jsonl")
    assert not (tmp_path / "c.png").exists()
