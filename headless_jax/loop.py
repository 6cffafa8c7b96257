"""The training loop: the only stateful part. Data in, step, metrics out, evaluations, checkpoints, preemption."""
import json
import logging
import signal
import time

import jax
import ml_collections
import numpy as np
import tqdm
from etils import epath
from jax.experimental import multihost_utils

from headless_jax import data as data_lib
from headless_jax import logs
from headless_jax.experiment import Experiment, build_experiment
from headless_jax.objectives import switch_step, task_at
from headless_jax.train import flops as flops_lib
from headless_jax.train.checkpoint import Checkpointer
from headless_jax.train.goodput import TimeAccount
from headless_jax.train.heldout import evaluate, mean_metrics
from headless_jax.train.init_from import resolve_tokenizer
from headless_jax.train.metrics import MetricsWriter
from headless_jax.train.profiler import StepProfiler
from headless_jax.train.workdir_lock import WorkdirLock, WorkdirLocked, usable_workdir
from headless_jax.validate import ConfigError, validate_config


class NonFiniteError(FloatingPointError):
    pass


class Preempted(Exception):
    """Raised once a SIGTERM'd run has saved its checkpoint and closed everything; the message says how to resume."""


class Preemption:
    """SIGTERM → finish the current step, save, exit. Multi-process runs agree on the step through JAX."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint after this step, then exiting")
        self.requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return self.requested or multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


class TokensSeen:
    """Real (non-padding) training tokens drawn from each source, over all processes, since the run began."""

    def __init__(self, names: list[str], restored: dict[str, float]):
        self.names, self.local = names, np.zeros(len(names))
        self.base = np.array([restored.get(name, 0.0) for name in names])

    def add(self, local_batch: dict) -> None:
        real_B = (local_batch["segment_ids"] != 0).sum(1)
        self.local += np.bincount(local_batch["source_ids"], weights=real_B, minlength=len(self.names))

    def totals(self) -> dict[str, float]:
        """Called by every process at the same step (it sums over processes)."""
        local = multihost_utils.process_allgather(self.local).sum(0) if jax.process_count() > 1 else self.local
        return {name: float(v) for name, v in zip(self.names, self.base + local)}


# model keys that may change when a run resumes: they change no parameter or optimiser-state shape
RESUMABLE_MODEL_KEYS = ("dropout_rate", "attention", "remat", "dtype")


def save_config(config: ml_collections.ConfigDict, workdir: epath.Path, start: int) -> None:
    """config.json: the config of the run's latest (re)start; config_history.jsonl: every (re)start's."""
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
        entry = {"start_step": start, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "config": json.loads(config.to_json_best_effort())}
        history = workdir / "config_history.jsonl"
        previous = history.read_text() if history.exists() else ""
        history.write_text(previous + json.dumps(entry) + "\n")


def check_resumable(config: ml_collections.ConfigDict, saved: dict, workdir: epath.Path) -> None:
    """Refuses to resume a checkpoint of another model (its parameters or optimiser state would not fit), naming
    the keys that differ and the ways out, before any work; the workdir is left as it is."""
    now = json.loads(config.to_json_best_effort())
    differing = [f"model.{key} ({saved['model'].get(key)!r} in the checkpoint, {now['model'][key]!r} now)"
                 for key in sorted(now["model"]) if key not in RESUMABLE_MODEL_KEYS
                 and saved["model"].get(key) != now["model"][key]]
    if saved["train"].get("trainable") != now["train"]["trainable"]:
        differing.append(f"train.trainable ({saved['train'].get('trainable')!r} in the checkpoint, "
                         f"{now['train']['trainable']!r} now)")
    if differing:
        raise ConfigError(f"{workdir} holds a run of another model: {'; '.join(differing)}. Resume with the "
                          "checkpoint's values, train this model in a new --workdir, or start it from that run's "
                          f"parameters with --config.train.init_from={workdir}")


def apply_flops_budget(config: ml_collections.ConfigDict) -> None:
    """train.flops_budget > 0 sets train.num_steps to the most steps that budget of training FLOPs buys."""
    if not config.train.flops_budget:
        return
    validate_config(config, None)  # the cost model reads a valid config (the budget's range included)
    budget = config.train.flops_budget
    steps = flops_lib.steps_within_budget(config, budget)
    if steps == 0:
        raise ConfigError(f"train.flops_budget={budget:.4g} buys no step: one step of this run costs "
                          f"{flops_lib.train_flops_between(config, 0, 1):.4g} FLOPs; raise the budget")
    config.train.num_steps = steps
    print(f"FLOP budget {budget:.4g}: {steps} steps, {float(flops_lib.train_flops_between(config, 0, steps)):.4g} "
          "training FLOPs (train/flops.py)")


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes) the configured run in `workdir`; returns the final held-out metrics."""
    account = TimeAccount()
    apply_flops_budget(config)
    experiment = build_experiment(config)  # validates the whole config first: a refused run touches nothing
    workdir = usable_workdir(workdir)
    lock = WorkdirLock(workdir)
    _agree(lambda: lock.acquire() if jax.process_index() == 0 else None)
    try:
        return _train(config, workdir, experiment, lock, account)
    finally:
        if jax.process_index() == 0:
            lock.release()


def _agree(check) -> None:
    """Runs `check` (which may raise) on every process; any failure is raised on all, so none waits alone."""
    error = None
    try:
        check()
    except Exception as e:  # noqa: BLE001 — re-raised below, on every process
        error = e
    if jax.process_count() > 1 and multihost_utils.process_allgather(np.int32(error is not None)).any():
        raise error or WorkdirLocked("another process of this run refused the workdir (see its log)")
    if error is not None:
        raise error


def _train(config: ml_collections.ConfigDict, workdir: epath.Path, experiment: Experiment, lock: WorkdirLock,
           account: TimeAccount) -> dict[str, float]:
    resolve_tokenizer(config)
    t = config.train
    checkpointer = Checkpointer(str(workdir / "checkpoints"), t.keep_checkpoints, t.permanent_every)
    latest = checkpointer.latest_step()
    if latest is not None:
        saved = checkpointer.newest_readable_config()
        if saved is not None:
            check_resumable(config, saved, workdir)
    if latest is not None and latest >= t.num_steps:
        with experiment.layout.active():  # a finished run's last checkpoint is checked too (it is what others use)
            latest = checkpointer.newest_intact_step(experiment.abstract_state)
        if latest is not None and latest >= t.num_steps:
            print(f"Run already finished at step {latest} in {workdir}; nothing to do (raise "
                  "--config.train.num_steps to train longer).")
            checkpointer.close()
            return {}

    logs.to_file(str(workdir), "train", jax.process_index())  # the run goes ahead: a refused one leaves no log
    tokenizer, train_iterator, eval_local_batches = data_lib.build_data(config, str(workdir))
    if jax.process_index() == 0:
        tokenizer.save_to_run(workdir)
    experiment = experiment.with_tokenizer(tokenizer)
    layout = experiment.layout
    with layout.active():
        restored = checkpointer.restore_latest(experiment.abstract_state, train_iterator)
        progress = {}
        if restored:
            state, start = restored
            progress = checkpointer.restored_progress(start)
            account.resume(progress.get("time", {}))
            print(f"Resumed from the checkpoint at step {start} in {workdir}")
        else:
            state, start = experiment.init_state(), 0
            if t.init_from:
                print(f"Initialised from the parameters of {t.init_from}")
        save_config(config, workdir, start)
        eval_batches = {name: [layout.global_batch(b) for b in batches] for name, batches in eval_local_batches.items()}
        tokens_seen = TokensSeen(list(eval_batches), progress.get("tokens_seen", {}))
        results, preempted_at = _run(config, workdir, experiment, state, start, train_iterator, eval_batches,
                                     checkpointer, tokens_seen, lock, account)
    checkpointer.close()
    if jax.process_index() == 0:
        print(account.summary())
    if preempted_at is not None:
        raise Preempted(f"saved the checkpoint at step {preempted_at} in {workdir}; run the same command again to "
                        "resume")
    return results


def _run(config, workdir, experiment: Experiment, state, start, train_iterator, eval_batches, checkpointer,
         tokens_seen: TokensSeen, lock: WorkdirLock, account: TimeAccount) -> tuple[dict[str, float], int | None]:
    """Trains from `start`; returns the last held-out metrics and the step saved on preemption (None if none).
    The time account's clock runs for data, step, eval or checkpoint; logging counts as step time (it overlaps the
    step the devices are running)."""
    t, layout = config.train, experiment.layout
    num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    writer = MetricsWriter(str(workdir), config, resumed_at=start)
    profiler = StepProfiler(t.profile_steps, t.num_steps, str(workdir))
    peak, peak_source = flops_lib.peak_flops_per_device(t.peak_flops_per_device)
    tokens_per_step = t.global_batch_size * config.data.seq_len
    is_main = jax.process_index() == 0
    if is_main:
        flops_per_step = flops_lib.train_flops_between(config, start, start + 1)
        print(f"{num_params / 1e6:.2f}M parameters on {jax.device_count()} devices; "
              f"{flops_per_step / 1e9:.2f} GFLOP per step; peak {peak / 1e12:.3g} TFLOP/s per device ({peak_source})")
        if config.objective.task == "clm_then_mlm":
            print(f"Biphasic: CLM for steps 1 … {switch_step(config.objective, t.num_steps)}, then MLM (the switch "
                  "compiles the MLM step once)")
    config_dict = json.loads(config.to_json_best_effort())
    preemption = Preemption()
    bar = tqdm.tqdm(total=t.num_steps, initial=start, disable=not is_main, dynamic_ncols=True, desc="train")
    pending, last_report = [], (start, time.perf_counter(), 0.0)
    results: dict[str, float] = {}
    skipped_in_a_row = 0  # non-finite updates since the last finite one

    def report(step: int):
        """Reads the metrics of steps already finished; called after the next step was dispatched."""
        nonlocal pending, last_report, skipped_in_a_row
        if not pending:
            return
        fetched = jax.device_get(pending)
        values = mean_metrics(fetched)
        values["finite"] = min(float(m["finite"]) for m in fetched)  # one bad step in the interval counts
        steps, elapsed = step - last_report[0], time.perf_counter() - last_report[1]
        data_s, last_report_data_s = account.seconds["data"], last_report[2]
        pending, last_report = [], (step, time.perf_counter(), data_s)
        values["tokens_per_second"] = steps * tokens_per_step / elapsed
        values["step_ms"] = 1000 * elapsed / steps
        values["data_wait_ms"] = 1000 * (data_s - last_report_data_s) / steps
        values["mfu"] = flops_lib.train_flops_between(config, step - steps, step) / elapsed / (peak * jax.device_count())
        values.update(flops_lib.routing_flops_metrics(config, values))
        values.update({f"tokens_seen/{name}": v for name, v in tokens_seen.totals().items()})
        values.update(account.metrics())
        writer.write(step, "train", values)
        if is_main:
            lock.refresh()
        bar.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{values['tokens_per_second']:.0f}")
        for m in fetched:
            skipped_in_a_row = 0 if float(m["finite"]) else skipped_in_a_row + 1
        if values["finite"] < 1:
            message = f"non-finite loss or gradient norm before step {step}"
            if t.nonfinite == "stop" or skipped_in_a_row > t.nonfinite_skip_limit:
                latest = checkpointer.latest_step()
                kept = ("no checkpoint was written yet" if latest is None else
                        f"the last good checkpoint (step {latest}) is intact")
                if t.nonfinite == "stop":
                    advice = "or set --config.train.nonfinite=skip to skip such updates"
                else:
                    message += (f" ({skipped_in_a_row} updates in a row, more than "
                                f"train.nonfinite_skip_limit={t.nonfinite_skip_limit}: the run has diverged)")
                    advice = "or resume with a higher --config.train.nonfinite_skip_limit"
                raise NonFiniteError(f"{message}; the update was not applied and {kept}. Lower optim.learning_rate, "
                                     f"check the data, {advice}")
            logging.warning("%s: update skipped (train.nonfinite=skip)", message)

    done, stopping, ended = start, False, False  # ended: the loop ran out or was preempted, without an error
    try:
        for step in range(start, t.num_steps):
            done = step + 1
            account.switch("data")
            local_batch = next(train_iterator)
            tokens_seen.add(local_batch)
            batch = layout.global_batch(local_batch)
            with account.part("other"):
                profiler.before(done, state)
            account.switch("step")
            state, metrics = experiment.for_task(task_at(config.objective, step, t.num_steps)).train_step(state, batch)
            report_due = pending and (step % t.log_every == 0)
            if report_due:
                report(step)  # the steps before this one, while this one runs
            pending.append(metrics)
            if len(pending) > 1:  # the host stays one step ahead: a SIGTERM is acted on after the next step
                jax.block_until_ready(pending[-2])
            bar.update(1)
            with account.part("other"):
                profiler.after(done, state)
            stopping = preemption.reached(done)
            if done % t.eval_every == 0 or done == t.num_steps:
                report(done)
                account.switch("eval")  # held-out metrics of the task this step trained
                eval_step = experiment.for_task(task_at(config.objective, step, t.num_steps)).eval_step
                results = evaluate(eval_step, state["params"], eval_batches)
                results.update(flops_lib.routing_flops_metrics(config, results))
                writer.write(done, "eval", results)
                if is_main:
                    bar.write(f"step {done}: held-out " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
            if done % t.checkpoint_every == 0 or done == t.num_steps or stopping:
                account.switch("step")
                report(done)  # never save after an unchecked non-finite step
                account.switch("checkpoint")
                checkpointer.save(done, state, train_iterator, config_dict,
                                  {"tokens_seen": tokens_seen.totals(), "time": account.progress()}, force=True)
            if stopping:
                break
        account.switch("step")
        report(done)
        ended = True
    finally:
        bar.close()  # first: a failure's message must not land on the progress bar's line
        account.switch("other")
        profiler.stop()
        try:
            account.switch("checkpoint")
            checkpointer.wait()
            account.switch("other")
            if ended:  # the session's totals, final evaluation and save included
                writer.write(done, "session", account.metrics())
        finally:
            writer.close()
            preemption.restore()
    return results, done if stopping else None
