"""The main command end to end: preemption, crashes and corrupt checkpoints never lose or change a run."""
import os
import shutil
import signal

from headless_jax.command import EXIT_PREEMPTED
from tests.main_runs import STEPS, assert_same_params, assert_same_run, final_params, run, start, train_losses, wait_until


def test_sigterm_saves_and_the_resumed_run_equals_the_uninterrupted_one(corpus, uninterrupted, tmp_path):
    process = start(tmp_path, corpus)
    wait_until(lambda: os.path.exists(tmp_path / "metrics.jsonl") and len(train_losses(tmp_path)) >= 12, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == EXIT_PREEMPTED, stderr[-3000:]  # launch scripts requeue on it
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Preempted: saved the checkpoint at step ") and "run the same command again" in last
    saved = int(last.split("at step ")[1].split(" ")[0])
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
    assert "is damaged" in result.stderr and "falling back" in result.stderr
    assert "Resumed from the checkpoint at step 10" in result.stdout
    assert (workdir / "checkpoints" / "unreadable" / "20").exists()  # moved aside, not deleted
    assert_same_params(final_params(workdir), final_params(uninterrupted))


def test_a_finished_run_says_so_instead_of_training_again(corpus, uninterrupted):
    before = train_losses(uninterrupted)
    result = run(uninterrupted, corpus)
    assert "already finished" in result.stdout
    assert train_losses(uninterrupted) == before
