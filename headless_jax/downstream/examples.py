"""What every downstream task reader produces: labelled examples and a task's description."""
import dataclasses


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
