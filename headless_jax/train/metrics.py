"""Metrics out: TensorBoard event files and `metrics.jsonl` in the workdir (process 0 only)."""
import json

import jax
from etils import epath
from tensorboardX import SummaryWriter


class MetricsWriter:
    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        if self.enabled:
            self._tensorboard = SummaryWriter(str(epath.Path(workdir) / "tensorboard"))
            self._jsonl = (epath.Path(workdir) / "metrics.jsonl").open("a")

    def write(self, step: int, split: str, metrics: dict[str, float]):
        if not self.enabled:
            return
        for name, value in metrics.items():
            self._tensorboard.add_scalar(f"{split}/{name}", value, step)
        self._jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        self._jsonl.flush()

    def close(self):
        if self.enabled:
            self._tensorboard.close()
            self._jsonl.close()
