"""Classification tasks by name: GLUE, XNLI and the offline 'which book' task, each read by its own module.

`load_task(name, config, heldout_fraction)` is the one entry point.
"""
import ml_collections

from headless_jax.downstream import books, glue, xnli
from headless_jax.downstream.examples import TaskData


def task_names() -> tuple[str, ...]:
    return (*glue.GLUE_TASKS, "xnli", "books")


def load_task(name: str, config: ml_collections.ConfigDict, heldout_fraction: float) -> TaskData:
    """The task `name` read as `config` says (data_source, data_dir, ...). `heldout_fraction` is the pretraining
    run's: the books task draws only on text that run held out."""
    if name in glue.GLUE_TASKS:
        return glue.load(name, config.data_source, config.data_dir)
    if name == "xnli":
        return xnli.load(config)
    if name == "books":
        return books.load(heldout_fraction, config.books)
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")
