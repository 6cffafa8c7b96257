"""A `jax.profiler` trace of a window of train steps (`train.profile_steps=START,END`), written by process 0.

The trace goes to `<workdir>/tensorboard/plugins/profile/<time>/`, where TensorBoard's profile plugin (and XProf)
find it next to the run's scalars. The window is delimited on the devices: the trace starts once the steps before
START have finished and stops once step END has, so it holds steps START…END and nothing else.
"""
import os

import jax
from etils import epath

from headless_jax import logs


def profile_window(spec: str, num_steps: int) -> tuple[int, int] | None:
    """(START, END) from "START,END" (steps counted from 1, both included), None for ""; ValueError otherwise."""
    if not spec.strip():
        return None
    try:
        first, last = (int(part) for part in spec.split(","))
    except ValueError:
        raise ValueError(f"train.profile_steps={spec!r} is not START,END (two step numbers, e.g. 10,12)") from None
    if not 1 <= first <= last <= num_steps:
        raise ValueError(f"train.profile_steps={spec!r} must satisfy 1 ≤ START ≤ END ≤ train.num_steps={num_steps}")
    return first, last


class StepProfiler:
    """`before(step, state)` ahead of each step's dispatch, `after(step, state)` once it is dispatched (steps
    counted from 1). A run resumed inside the window traces the rest of it; one resumed after it, nothing."""

    def __init__(self, spec: str, num_steps: int, workdir: str):
        window = profile_window(spec, num_steps)
        self.window = window if jax.process_index() == 0 else None
        self.workdir, self.tracing = workdir, False
        self._local = os.path.join(logs.local_directory(workdir), "tensorboard")

    def before(self, step: int, state) -> None:
        if self.window and not self.tracing and self.window[0] <= step <= self.window[1]:
            jax.block_until_ready(state)  # the steps before the window stay out of it
            jax.profiler.start_trace(self._local)
            self.tracing = True

    def after(self, step: int, state) -> None:
        if self.tracing and step == self.window[1]:
            self.stop(state)

    def stop(self, state=None) -> None:
        if not self.tracing:
            return
        if state is not None:
            jax.block_until_ready(state)
        jax.profiler.stop_trace()
        self.tracing = False
        if "://" in self.workdir:  # the profiler writes local files: the trace is copied to the run
            _copy_tree(epath.Path(self._local) / "plugins", epath.Path(self.workdir) / "tensorboard" / "plugins")


def _copy_tree(source: epath.Path, target: epath.Path) -> None:
    for path in source.rglob("*"):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            path.copy(destination, overwrite=True)
