"""Orbax checkpoints of the train state, the data-iterator position and the config.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and renames it when complete), so
a crash or SIGKILL mid-save leaves the previous checkpoint as the latest. A checkpoint that exists but does
not restore is moved aside to `<dir>/unreadable/` (nothing is deleted) and the previous one is used.
"""
import logging

import grain
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from etils import epath

Restored = tuple[dict, int]  # (state, step)


class Checkpointer:
    def __init__(self, directory: str, keep: int, permanent_every: int = 0):
        self.directory = epath.Path(directory)
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, keep_period=permanent_every or None, enable_async_checkpointing=True, create=True)
        self._open()

    def _open(self):
        self.manager = ocp.CheckpointManager(self.directory, options=self._options,
                                             item_names=("state", "data", "config"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_iterator, config: dict, force: bool = False) -> bool:
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=grain.checkpoint.CheckpointSave(data_iterator),
                                  config=ocp.args.JsonSave(config))
        return self.manager.save(step, args=args, force=force)

    def restore_latest(self, abstract_state: dict, data_iterator) -> Restored | None:
        """Restores the newest readable checkpoint onto `abstract_state`'s shardings (any mesh); None if none."""
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=grain.checkpoint.CheckpointRestore(data_iterator)))
            except Exception as error:  # noqa: BLE001 — any unreadable checkpoint is set aside, not fatal
                self._set_aside(step, error)
                continue
            return restored["state"], step
        return None

    def restored_config(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

    def _set_aside(self, step: int, error: Exception):
        target = self.directory / "unreadable" / str(step)
        logging.warning("checkpoint at step %d in %s does not restore (%s: %s); moving it to %s and falling back "
                        "to the previous checkpoint", step, self.directory, type(error).__name__,
                        str(error).splitlines()[0] if str(error) else "", target)
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
