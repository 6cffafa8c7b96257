"""Where a run's wall time goes: startup, compilation, waiting for data, train steps, evaluation, checkpoints.

The host clock is always running for exactly one part (`TimeAccount.switch`), so the parts never overlap and add up
to the wall time. Compilation is what JAX reports through `jax.monitoring` (tracing, lowering and XLA compilation
of every jitted function, the train and eval steps included) and is taken out of the part it happened in.

goodput = train-step time / wall time, for this session (since the command started) and for the whole run (since
its first session started, across preemptions and crashes: the steps an interrupted session trained after its last
checkpoint are trained again and count once, the time between sessions counts as lost).
"""
import contextlib
import time

import jax

PARTS = ("startup", "compile", "data", "step", "eval", "checkpoint", "other")
_COMPILE_EVENTS = frozenset({"/jax/core/compile/jaxpr_trace_duration",
                             "/jax/core/compile/jaxpr_to_mlir_module_duration",
                             "/jax/core/compile/backend_compile_duration"})
_compiled_s = 0.0  # seconds of compilation in this process so far


def _count_compilation(event: str, duration_s: float, **_) -> None:
    global _compiled_s
    if event in _COMPILE_EVENTS:
        _compiled_s += duration_s


jax.monitoring.register_event_duration_secs_listener(_count_compilation)


class TimeAccount:
    """Created when a command starts (the clock runs for `startup` until the first switch)."""

    def __init__(self):
        self.seconds = dict.fromkeys(PARTS, 0.0)
        self.current = "startup"
        self._started = self._switched = time.perf_counter()
        self._compiled = _compiled_s
        self.run_started_at, self._run_step_s = time.time(), 0.0

    def resume(self, saved: dict) -> None:
        """Continues the run's totals from what a checkpoint saved (`progress()` at its step)."""
        self.run_started_at = saved.get("run_started_at", self.run_started_at)
        self._run_step_s = saved.get("step_s", 0.0)

    def switch(self, part: str) -> None:
        """The time since the last switch goes to the current part (less its compilation); `part` starts now."""
        now, compiled = time.perf_counter(), _compiled_s - self._compiled
        self.seconds[self.current] += now - self._switched - compiled
        self.seconds["compile"] += compiled
        self.current, self._switched, self._compiled = part, now, _compiled_s

    @contextlib.contextmanager
    def part(self, part: str):
        """`part` for the duration of the block, then back to the part that was running."""
        previous = self.current
        self.switch(part)
        try:
            yield
        finally:
            self.switch(previous)

    def progress(self) -> dict[str, float]:
        """What a checkpoint saves, for `resume`: the run's start and its train-step time so far."""
        self.switch(self.current)
        return {"run_started_at": self.run_started_at, "step_s": self._run_step_s + self.seconds["step"]}

    def metrics(self) -> dict[str, float]:
        """`time/<part>_s` and `time/wall_s` of this session, `goodput` (session) and `goodput_run` (whole run)."""
        self.switch(self.current)
        wall = self._switched - self._started
        values = {f"time/{part}_s": s for part, s in self.seconds.items()}
        values["time/wall_s"] = wall
        values["goodput"] = self.seconds["step"] / wall
        run_wall = max(time.time() - self.run_started_at, wall)
        # (capped: sessions on machines whose clocks disagree could otherwise claim more than all of the time)
        values["goodput_run"] = min((self._run_step_s + self.seconds["step"]) / run_wall, 1.0)
        memory = peak_memory_gib()
        if memory is not None:
            values["peak_memory_gib"] = memory
        return values

    def summary(self) -> str:
        """One line for the end of a run."""
        values = self.metrics()
        parts = " + ".join(f"{part} {self.seconds[part]:.1f}" for part in PARTS)
        memory = values.get("peak_memory_gib")
        memory = (f"{memory:.2f} GiB" if memory is not None else
                  f"not reported by the {jax.default_backend()} backend")
        return (f"Time: {values['time/wall_s']:.1f} s wall = {parts} s; goodput {values['goodput']:.1%} "
                f"(whole run {values['goodput_run']:.1%}); peak device memory {memory}")


def peak_memory_gib() -> float | None:
    """The largest peak allocation over this process's devices, or None where the backend reports none (CPU)."""
    peaks = [(device.memory_stats() or {}).get("peak_bytes_in_use") for device in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) / 2**30 if peaks else None
