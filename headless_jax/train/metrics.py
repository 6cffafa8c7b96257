"""Metrics out, through trackers chosen by `train.trackers`: `metrics.jsonl`, TensorBoard, Weights & Biases.

Only process 0 writes. A resumed run logs again the steps an interrupted session logged after its last checkpoint;
every tracker keeps each (step, split) once: jsonl cuts them, TensorBoard purges them, W&B skips them (they are
the same numbers: resumption is exact).
"""
import importlib.util
import json
import math
import os
import secrets
import time

import jax
import ml_collections
from etils import epath
from tensorboardX import SummaryWriter

from headless_jax import logs
from headless_jax.train import wandb_log

TRACKERS = ("jsonl", "tensorboard", "wandb")
REWRITE_EVERY_S = 60.0  # gs:// metrics.jsonl: rewritten whole at most this often, and at close
WANDB_RUN_FILE = "wandb_run.json"  # the W&B run id of the workdir's run


def tracker_names(config: ml_collections.ConfigDict) -> list[str]:
    return [name.strip() for name in config.train.trackers.split(",") if name.strip()]


def wandb_installed() -> bool:
    return importlib.util.find_spec("wandb") is not None


class JsonlTracker:
    """`metrics.jsonl`: one strict-JSON line per (step, split); a non-finite value is null (strict readers refuse
    a bare NaN)."""

    def __init__(self, workdir: epath.Path, resumed_at: int):
        self._path = workdir / "metrics.jsonl"
        self._lines = []
        if self._path.exists():
            self._lines = [line for line in self._path.read_text().splitlines(keepends=True)
                           if line.strip() and json.loads(line)["step"] <= resumed_at]
            self._path.write_text("".join(self._lines))
        # gs:// objects cannot be appended to (gcsfs silently overwrites) and show nothing before close: there the
        # file is rewritten whole, at most every REWRITE_EVERY_S so that the uploads stay off the step
        self._rewrite = "://" in str(self._path)
        self._append = None if self._rewrite else self._path.open("a")
        self._rewritten_at, self._unwritten = time.monotonic(), False

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        finite = {k: v if math.isfinite(v) else None for k, v in metrics.items()}
        line = json.dumps({"step": step, "split": split, **finite}, allow_nan=False) + "\n"
        if not self._rewrite:
            self._append.write(line)
            self._append.flush()
            return
        self._lines.append(line)
        self._unwritten = True
        if time.monotonic() - self._rewritten_at >= REWRITE_EVERY_S:
            self._rewrite_whole()

    def _rewrite_whole(self) -> None:
        self._path.write_text("".join(self._lines))
        self._rewritten_at, self._unwritten = time.monotonic(), False

    def close(self) -> None:
        if not self._rewrite:
            self._append.close()
        elif self._unwritten:
            self._rewrite_whole()


class TensorBoardTracker:
    """Event files in `<workdir>/tensorboard` (gs:// too), scalars named `<split>/<metric>`."""

    def __init__(self, workdir: epath.Path, resumed_at: int):
        self._writer = SummaryWriter(str(workdir / "tensorboard"), purge_step=resumed_at + 1)

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        self._writer.close()


class WandbTracker:
    """One W&B run per workdir: its id is kept in `wandb_run.json`, so every resumption (after a preemption or a
    crash) continues the same run, with the config logged. W&B's files go to `<workdir>/wandb` (a local temporary
    directory for gs:// workdirs: W&B writes local files). `config.wandb.mode=offline` touches no network; each
    session is then an offline directory of the same run id, uploaded later with `wandb sync`.

    A resumed session sends again the steps after its checkpoint; those that W&B already recorded (its transaction
    logs say which, see wandb_log.py) are skipped: sent twice they would be duplicates. The rest, lost when a killed
    session's last unflushed records went with it, are sent again (resumption reproduces them exactly)."""

    def __init__(self, workdir: epath.Path, config: ml_collections.ConfigDict):
        import wandb  # an optional extra: pip install -e '.[wandb]' (validate.py refuses the tracker without it)

        record = workdir / WANDB_RUN_FILE
        run_id = json.loads(record.read_text())["id"] if record.exists() else secrets.token_hex(6)
        if not record.exists():
            record.write_text(json.dumps({"id": run_id}))  # before the run exists: a crash in wandb.init keeps it
        local = _local_dir(workdir)
        self._logged = wandb_log.last_logged_steps(os.path.join(local, "wandb"), run_id)
        w = config.wandb
        self._run = wandb.init(
            id=run_id, resume="allow", project=w.project, entity=w.entity or None, name=w.name or None,
            group=w.group or None, tags=[t.strip() for t in w.tags.split(",") if t.strip()] or None, mode=w.mode,
            dir=local, config=json.loads(config.to_json_best_effort()),
            settings=wandb.Settings(console="off", silent=True))

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if step > self._logged.get(split, -1):
            self._run.log({f"{split}/{name}": value for name, value in metrics.items()}, step=step)

    def close(self) -> None:
        self._run.finish()


def _local_dir(workdir: epath.Path) -> str:
    local = logs.local_directory(str(workdir))
    os.makedirs(local, exist_ok=True)
    return local


class MetricsWriter:
    """The configured trackers of process 0 (the others write nothing). resumed_at: the checkpoint step the run
    starts from (0 for a new run): what an earlier session logged after it is logged again now."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict, resumed_at: int = 0):
        self.trackers = []
        if jax.process_index() != 0:
            return
        path = epath.Path(workdir)
        makers = {"jsonl": lambda: JsonlTracker(path, resumed_at),
                  "tensorboard": lambda: TensorBoardTracker(path, resumed_at),
                  "wandb": lambda: WandbTracker(path, config)}
        self.trackers = [makers[name]() for name in tracker_names(config)]

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.write(step, split, metrics)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
