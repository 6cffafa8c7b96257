"""Fault injection: damaged bytes, a full disk, refused inputs. Each fault ends with one short last message and
its exit code, never loses the last good checkpoint, and a refused run changes nothing in the workdir."""
import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from headless_jax.command import EXIT_FAILED, EXIT_REFUSED
from headless_jax.config import base_config
from headless_jax.experiment import PretrainedError, load_pretrained
from headless_jax.train.layout import Layout
from headless_jax.train.workdir_lock import LOCK_FILE
from tests.main_runs import STEPS, assert_same_params, final_params, run


LONGER = f"--config.train.num_steps={STEPS + 10}"  # a run that would train on (a finished one would not look)


def damage_bytes(workdir, step: int) -> None:
    """Changes one number of the checkpoint's largest parameter and leaves its saved checksums as they were: the
    checkpoint still reads, as other numbers, which only the checksums catch (silent corruption). The state is
    rewritten through Orbax: its arrays are zstd-compressed in OCDBT files that also hold B-tree nodes, so bytes
    overwritten at a fixed offset may instead make it unreadable (another fault), depending on the order in which
    the asynchronous writes finished."""
    path = workdir / "checkpoints" / str(step) / "state"
    state = ocp.StandardCheckpointer().restore(path)
    state["params"] = jax.tree.map(np.array, state["params"])  # writable host copies
    largest = max(jax.tree.leaves(state["params"]), key=np.size)
    largest.reshape(-1)[largest.size // 2] += 1.0
    shutil.rmtree(path)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, state)


def console_lines(stderr: str) -> list[str]:
    """What a user reads on stderr, without the progress bar."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("train")]


def snapshot(directory) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(uninterrupted, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted, workdir)
    return workdir


def test_damaged_bytes_in_the_final_checkpoint_are_caught_and_the_run_redone_from_the_previous(
        corpus, uninterrupted, finished):
    damage_bytes(finished, STEPS)
    result = run(finished, corpus)  # the run was finished: its final checkpoint is checked all the same
    assert "1 arrays differ from their saved checksums" in result.stderr
    assert "Resumed from the checkpoint at step 20" in result.stdout
    assert (finished / "checkpoints" / "unreadable" / str(STEPS)).is_dir()  # set aside, not deleted
    assert_same_params(final_params(finished), final_params(uninterrupted))


def test_downstream_jobs_skip_a_damaged_checkpoint_or_refuse_it_when_asked_for_it(finished):
    damage_bytes(finished, STEPS)
    layout = Layout.from_config(base_config().mesh)
    pretrained = load_pretrained(str(finished), layout)
    assert pretrained.step == 20
    assert_same_params(pretrained.params, final_params(finished, step=20))
    with pytest.raises(PretrainedError, match=f"checkpoint {STEPS} is damaged: 1 arrays differ.*pick an intact "
                                              "--config.pretrained_step"):
        load_pretrained(str(finished), layout, step=STEPS)
    assert not (finished / "checkpoints" / "unreadable").exists()  # read-only users move nothing


def test_a_full_disk_ends_with_one_message_and_the_next_run_resumes(corpus, finished):
    """RLIMIT_FSIZE stands in for a full disk: every write past 40 KiB fails (EFBIG), as with ENOSPC, inside
    TensorStore's asynchronous checkpoint writes."""
    small_files = ("bash", "-c", 'ulimit -f 40 && trap "" XFSZ && exec "$@"', "--")  # 40 KiB: EFBIG, not a signal
    result = run(finished, corpus, LONGER, expect=EXIT_FAILED, prefix=small_files)
    lines = console_lines(result.stderr)
    assert len(lines) == 1, lines  # the library tracebacks go to the log file (which is full too), not the console
    assert lines[-1].startswith("Failed: File too large (") and "resumes from the last complete checkpoint" in lines[-1]
    result = run(finished, corpus, LONGER)
    assert f"Resumed from the checkpoint at step {STEPS}" in result.stdout


def live_lock(workdir) -> None:
    import socket
    (workdir / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(),
                                                 "heartbeat": 0.0}))


@pytest.mark.parametrize("fault,overrides,message", [
    ("a file as workdir", (), "is a file, not a directory"),
    ("a bad number", ("--config.train.num_steps=-5",), "train.num_steps=-5 is out of range"),
    ("a live workdir", (LONGER,), "is in use by the run of pid"),
    ("another model", (LONGER, "--config.model.num_layers=2"), "model.num_layers (1 in the checkpoint, 2 now)"),
])
def test_refused_runs_exit_2_with_one_message_and_change_nothing(corpus, finished, tmp_path, fault, overrides,
                                                                 message):
    workdir = finished
    if fault == "a file as workdir":
        workdir = tmp_path / "a_file"
        workdir.write_text("not a directory")
    elif fault == "a live workdir":
        live_lock(workdir)
    before = snapshot(tmp_path)
    result = run(workdir, corpus, *overrides, expect=EXIT_REFUSED)
    lines = console_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("Refused: ") and message in lines[0], lines
    assert snapshot(tmp_path) == before
