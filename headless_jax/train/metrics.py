"""Metrics out: TensorBoard event files and `metrics.jsonl` in the workdir (process 0 only)."""
import json
import math
import time

import jax
from etils import epath
from tensorboardX import SummaryWriter

REWRITE_EVERY_S = 60.0  # gs:// metrics.jsonl: rewritten whole at most this often, and at close


class MetricsWriter:
    """resumed_at: the checkpoint step a resumed run starts from; what an interrupted run logged after it (and
    logs again now) is cut from metrics.jsonl and purged from TensorBoard, so that no step appears twice."""

    def __init__(self, workdir: str, resumed_at: int | None = None):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            purge = None if resumed_at is None else resumed_at + 1
            self._tensorboard = SummaryWriter(str(epath.Path(workdir) / "tensorboard"), purge_step=purge)  # gs:// too
            self._jsonl_path = epath.Path(workdir) / "metrics.jsonl"
            if resumed_at is not None and self._jsonl_path.exists():
                kept = [line for line in self._jsonl_path.read_text().splitlines(keepends=True)
                        if line.strip() and json.loads(line)["step"] <= resumed_at]
                self._jsonl_path.write_text("".join(kept))
            # gs:// objects cannot be appended to (gcsfs silently overwrites) and show nothing before close: there
            # the file is rewritten whole, at most every REWRITE_EVERY_S so that the uploads stay off the step
            self._rewrite = "://" in str(self._jsonl_path)
            if self._rewrite:
                self._lines = [self._jsonl_path.read_text()] if self._jsonl_path.exists() else []
                self._rewritten_at, self._unwritten = time.monotonic(), False
            else:
                self._jsonl = self._jsonl_path.open("a")

    def write(self, step: int, split: str, metrics: dict[str, float]):
        if not self.enabled:
            return
        for name, value in metrics.items():
            self._tensorboard.add_scalar(f"{split}/{name}", value, step)
        # strict JSON: a non-finite value is null (bare NaN is refused by strict readers)
        finite = {k: v if math.isfinite(v) else None for k, v in metrics.items()}
        line = json.dumps({"step": step, "split": split, **finite}, allow_nan=False) + "\n"
        if self._rewrite:
            self._lines.append(line)
            self._unwritten = True
            if time.monotonic() - self._rewritten_at >= REWRITE_EVERY_S:
                self._rewrite_whole()
        else:
            self._jsonl.write(line)
            self._jsonl.flush()

    def _rewrite_whole(self):
        self._jsonl_path.write_text("".join(self._lines))
        self._rewritten_at, self._unwritten = time.monotonic(), False

    def close(self):
        if self.enabled:
            self._tensorboard.close()
            if not self._rewrite:
                self._jsonl.close()
            elif self._unwritten:
                self._rewrite_whole()
