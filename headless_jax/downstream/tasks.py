"""Classification tasks as plain lists of examples: GLUE, XNLI and the offline 'which book' task.

`load_task(name, config, heldout_fraction)` is the one entry point; each family lives in its own module.
"""
import dataclasses

import ml_collections


@dataclasses.dataclass(frozen=True)
class Example:
    text_a: str
    text_b: str | None  # None: a single-sentence task
    label: int | float  # class id, or a float target for regression (STS-B)


@dataclasses.dataclass(frozen=True)
class TaskData:
    name: str  # e.g. 'sst2'
    title: str  # the table column, e.g. 'SST-2'
    num_classes: int  # 0: regression (one output, MSE)
    metrics: tuple[str, ...]  # keys of downstream.metrics.METRICS; the task's official ones
    train: list[Example]
    eval: dict[str, list[Example]]  # split name -> labelled examples
    score_splits: tuple[str, ...]  # the eval splits whose metrics make the task's table score (averaged)


def task_names() -> tuple[str, ...]:
    from headless_jax.downstream import glue
    return (*glue.GLUE_TASKS, "xnli", "books")


def load_task(name: str, config: ml_collections.ConfigDict, heldout_fraction: float) -> TaskData:
    """The task `name` read as `config` says (data_source, data_dir, ...). `heldout_fraction` is the pretraining
    run's: the books task draws only on text that run held out."""
    from headless_jax.downstream import books, glue, xnli

    if name in glue.GLUE_TASKS:
        return glue.load(name, config.data_source, config.data_dir)
    if name == "xnli":
        return xnli.load(config)
    if name == "books":
        return books.load(heldout_fraction, config.books)
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")

