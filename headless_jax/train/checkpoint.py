"""Orbax checkpoints of the train state, the data-iterator position and the config.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and renames it when complete), so
a crash or SIGKILL mid-save leaves the previous checkpoint as the latest. Every save also writes checksums of
the state (train/integrity.py), checked after every restore: a checkpoint that does not restore, or restores
other numbers than were saved, is damaged. Training moves it aside to `<dir>/unreadable/` (nothing is deleted)
and uses the previous one; read-only users (downstream jobs, init_from) skip it.

Multi-process runs: Orbax writes each process's shards of the state, grain one iterator-state file per
process. Both restore on another number of processes (e.g. a pod's checkpoint on one machine).
"""
import json
import logging
import os

import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from etils import epath

from headless_jax.train import integrity

Restored = tuple[dict, int]  # (state, step)
IMPORTED = "imported_from"  # progress key of a checkpoint written by headless_jax.import_hf: where it came from


def orbax_directory(directory: str) -> epath.Path:
    """`directory` as Orbax needs it: absolute (a relative local path, e.g. `--workdir=runs/demo`, is taken from
    the current directory); URLs such as gs:// as they are."""
    return epath.Path(directory if "://" in directory else os.path.abspath(directory))


class DamagedCheckpoint(Exception):
    """A checkpoint that does not restore, or restores values other than those saved."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"checkpoint {step} is damaged: {reason}")
        self.step, self.reason = step, reason


def _reason(error: Exception) -> str:
    first_line = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first_line[:300]}"


class Checkpointer:
    """A run's checkpoints; `read_only` (downstream jobs, init_from) never creates, moves or deletes anything."""

    def __init__(self, directory: str, keep: int = 1, permanent_every: int = 0, read_only: bool = False):
        self.directory = orbax_directory(directory)
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, keep_period=permanent_every or None, enable_async_checkpointing=not read_only,
            create=not read_only, read_only=read_only)
        self._open()

    def _open(self):
        self.manager = ocp.CheckpointManager(self.directory, options=self._options,
                                             item_names=("state", "data", "config", "progress", "integrity"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: dict, data_iterator, config: dict, progress: dict | None = None,
             force: bool = False) -> bool:
        """progress: JSON counters the loop keeps across resumes (e.g. tokens seen per source). data_iterator: None
        for a checkpoint made outside training (progress[IMPORTED] set), whose resumed run reads data from the start."""
        checksums = {"algorithm": integrity.ALGORITHM, "state": integrity.checksums(state)}
        data = {} if data_iterator is None else {"data": grain.checkpoint.CheckpointSave(data_iterator)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), **data,
                                  config=ocp.args.JsonSave(config), progress=ocp.args.JsonSave(progress or {}),
                                  integrity=ocp.args.JsonSave(checksums))
        return self.manager.save(step, args=args, force=force)

    def restore_latest(self, abstract_state: dict, data_iterator) -> Restored | None:
        """Restores the newest intact checkpoint onto `abstract_state`'s shardings (any mesh), setting damaged
        ones aside; None if none is left."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                state = self.restore_state(step, abstract_state)
                self._restore_data_state(step, data_iterator)
            except Exception as error:  # noqa: BLE001 — any unreadable checkpoint is set aside, not fatal
                self._set_aside(step, error)
                continue
            return state, step
        return None

    def newest_intact_step(self, abstract_state: dict) -> int | None:
        """The newest checkpoint whose state restores with its checksums (damaged ones set aside); None if none."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                self.restore_state(step, abstract_state)
            except DamagedCheckpoint as error:
                self._set_aside(step, error)
                continue
            return step
        return None

    def _restore_data_state(self, step: int, data_iterator) -> None:
        if not (self.directory / str(step) / "data").exists() and IMPORTED in self.restored_progress(step):
            logging.info("checkpoint %d was imported, with no data-iterator state: data starts from the beginning",
                         step)
            return
        if self._own_data_state(step).exists():
            self.manager.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iterator)))
        else:
            self._restore_data_state_of_process_0(step, data_iterator)

    def _own_data_state(self, step: int) -> epath.Path:
        """Where grain keeps this process's iterator state: one file per process and process count."""
        return self.directory / str(step) / "data" / _grain_state_file(jax.process_index(), jax.process_count())

    def _restore_data_state_of_process_0(self, step: int, data_iterator) -> None:
        """After a change of process count (e.g. a pod's checkpoint resumed on one machine) no file is this
        process's; process 0's state is right for every process: an iterator's state counts global batches
        (see data.train_iterator), so all processes save the same one."""
        saved = sorted((self.directory / str(step) / "data").glob(_grain_state_file(0, "*")))
        if not saved:
            raise FileNotFoundError(f"{self.directory / str(step) / 'data'} holds no data-iterator state")
        logging.info("restoring the data iterator from %s, saved by another number of processes", saved[0])
        data_iterator.set_state(json.loads(saved[0].read_text()))
        data_iterator.start_prefetch()

    def newest_readable_config(self) -> dict | None:
        """The config saved with the newest checkpoint whose config reads (None if none does)."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return self.restored_config(step)
            except Exception:  # noqa: BLE001 — an unreadable checkpoint is judged by restore_latest, not here
                continue
        return None

    def restored_config(self, step: int) -> dict:
        """The config saved with checkpoint `step`; DamagedCheckpoint if it does not read."""
        try:
            return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
        except Exception as error:  # noqa: BLE001 — whatever Orbax raises, the checkpoint is damaged
            raise DamagedCheckpoint(step, _reason(error)) from error

    def restored_progress(self, step: int) -> dict:
        """The progress counters saved with checkpoint `step` ({} for a checkpoint saved without them)."""
        if not (self.directory / str(step) / "progress").exists():
            return {}
        return self.manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))["progress"]

    def restore_state(self, step: int, abstract_state: dict) -> dict:
        """The train state of checkpoint `step` alone (no data iterator), on `abstract_state`'s shardings, checked
        against the checksums saved with it. Raises DamagedCheckpoint if it does not restore or does not match."""
        try:
            state = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]
            saved = self._saved_checksums(step)
        except Exception as error:  # noqa: BLE001 — whatever Orbax or TensorStore raise, the checkpoint is damaged
            raise DamagedCheckpoint(step, _reason(error)) from error
        if saved is None:
            logging.warning("checkpoint %d in %s has no checksums (saved by an older version): not verified",
                            step, self.directory)
            return state
        differing = integrity.mismatches(state, saved)
        if differing:
            raise DamagedCheckpoint(step, f"{len(differing)} arrays differ from their saved checksums "
                                          f"({', '.join(differing[:3])}{', …' if len(differing) > 3 else ''})")
        return state

    def _saved_checksums(self, step: int) -> dict[str, str] | None:
        if not (self.directory / str(step) / "integrity").exists():
            return None
        saved = self.manager.restore(step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore()))["integrity"]
        return saved["state"]

    def _set_aside(self, step: int, error: Exception):
        target = self.directory / "unreadable" / str(step)
        reason = error.reason if isinstance(error, DamagedCheckpoint) else _reason(error)
        logging.warning("checkpoint at step %d in %s is damaged (%s); moving it to %s and falling back to the "
                        "previous checkpoint", step, self.directory, reason, target)
        self.manager.close()
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            (self.directory / str(step)).rename(target)
        multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self._open()

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def _grain_state_file(process_index: int, process_count: int | str) -> str:
    """The name grain's checkpoint handler gives a process's iterator state."""
    return f"process_{process_index}-of-{process_count}.json"
