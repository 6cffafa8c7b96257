"""GLUE tasks from TFDS (`glue/<task>`, ArrayRecord, read with tfds.data_source: no TensorFlow) or from the
official GLUE TSV layout (`<data_dir>/<TASK>/{train,dev}.tsv`, e.g. from the GLUE download script).

Class ids are TFDS's ClassLabel order for both sources, so the two give the same labels.
"""
import csv
import dataclasses
import sys

from absl import logging
from etils import epath

from headless_jax.data.errors import DataError, MissingDataError
from headless_jax.data.readers import decode_text, open_tfds
from headless_jax.downstream.examples import Example, TaskData

Column = str | int | None  # a header name, a column index (headerless files), or None (no second sentence)


@dataclasses.dataclass(frozen=True)
class GlueTask:
    title: str  # also the task's directory name in the GLUE download
    tsv_columns: tuple[Column, Column, Column]  # sentence a, sentence b, label
    tfds_fields: tuple[str, str | None]  # sentence a, sentence b
    labels: tuple[str, ...]  # the TSV label strings in class-id order; () for regression
    metrics: tuple[str, ...]
    eval_splits: tuple[str, ...] = ("validation",)


_BINARY = ("0", "1")
_NLI = ("entailment", "neutral", "contradiction")
_ENTAILMENT = ("entailment", "not_entailment")
GLUE_TASKS = {
    "cola": GlueTask("CoLA", (3, None, 1), ("sentence", None), _BINARY, ("mcc",)),
    "sst2": GlueTask("SST-2", ("sentence", None, "label"), ("sentence", None), _BINARY, ("accuracy",)),
    "mrpc": GlueTask("MRPC", ("#1 String", "#2 String", "Quality"), ("sentence1", "sentence2"), _BINARY,
                     ("f1", "accuracy")),
    "stsb": GlueTask("STS-B", ("sentence1", "sentence2", "score"), ("sentence1", "sentence2"), (),
                     ("pearson", "spearman")),
    "qqp": GlueTask("QQP", ("question1", "question2", "is_duplicate"), ("question1", "question2"), _BINARY,
                    ("f1", "accuracy")),
    "mnli": GlueTask("MNLI", ("sentence1", "sentence2", "gold_label"), ("premise", "hypothesis"), _NLI,
                     ("accuracy",), ("validation_matched", "validation_mismatched")),
    "qnli": GlueTask("QNLI", ("question", "sentence", "label"), ("question", "sentence"), _ENTAILMENT,
                     ("accuracy",)),
    "rte": GlueTask("RTE", ("sentence1", "sentence2", "label"), ("sentence1", "sentence2"), _ENTAILMENT,
                    ("accuracy",)),
    "wnli": GlueTask("WNLI", ("sentence1", "sentence2", "label"), ("sentence1", "sentence2"), _BINARY,
                     ("accuracy",)),
}
# TFDS split -> file of the GLUE download
_TSV_FILES = {"train": "train.tsv", "validation": "dev.tsv", "validation_matched": "dev_matched.tsv",
              "validation_mismatched": "dev_mismatched.tsv"}
SOURCES = ("tfds", "tsv")


def load(name: str, source: str, data_dir: str) -> TaskData:
    """GLUE task `name` (a key of GLUE_TASKS): its train split and labelled dev split(s)."""
    task = GLUE_TASKS[name]
    if source == "tsv":
        if not data_dir:
            raise MissingDataError(f"data_source=tsv needs --config.data_dir: the directory holding the GLUE "
                                   f"task folders ({task.title}/train.tsv, ...)")
        splits = {split: read_tsv(task, epath.Path(data_dir) / task.title / _TSV_FILES[split])
                  for split in ("train", *task.eval_splits)}
    elif source == "tfds":
        splits = {split: read_tfds(task, f"glue/{name}", split, data_dir) for split in ("train", *task.eval_splits)}
    else:
        raise ValueError(f"unknown data_source {source!r}; use one of {SOURCES}")
    train = splits.pop("train")
    return TaskData(name, task.title, len(task.labels), task.metrics, train, splits, task.eval_splits)


def read_tsv(task: GlueTask, path: epath.Path) -> list[Example]:
    """Examples of one GLUE TSV file; rows short of columns (a few in QQP's official files) are skipped, counted."""
    if not path.exists():
        raise MissingDataError(f"{path}: no such file; point --config.data_dir at the directory holding the GLUE "
                               f"task folders ({task.title}/ with train.tsv and dev.tsv), or use "
                               "--config.data_source=tfds")
    csv.field_size_limit(sys.maxsize)
    with path.open() as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header_named = any(isinstance(c, str) for c in task.tsv_columns)
    if header_named:
        header, rows, first_line = rows[0], rows[1:], 2
        missing = [c for c in task.tsv_columns if isinstance(c, str) and c not in header]
        if missing:
            raise DataError(f"{path}: header has no column {missing[0]!r} (found {header}); this is not the GLUE "
                            f"{task.title} layout")
        indices = [header.index(c) if isinstance(c, str) else c for c in task.tsv_columns]
    else:
        indices, first_line = list(task.tsv_columns), 1
    needed = max(i for i in indices if i is not None) + 1
    examples, skipped = [], 0
    for line_number, row in enumerate(rows, first_line):
        if len(row) < needed:
            skipped += 1
            continue
        a, b, label = (row[i] if i is not None else None for i in indices)
        examples.append(Example(a, b, _parse_label(task, label, f"{path}:{line_number}")))
    if skipped:
        logging.warning("%s: skipped %d rows with fewer than %d columns", path, skipped, needed)
    if not examples:
        raise DataError(f"{path}: holds no examples; check that it is the GLUE {task.title} file")
    return examples


def _parse_label(task: GlueTask, label: str, where: str) -> int | float:
    if not task.labels:
        try:
            return float(label)
        except ValueError:
            raise DataError(f"{where}: label {label!r} is not a number; this is not the GLUE {task.title} "
                            "layout") from None
    if label not in task.labels:
        raise DataError(f"{where}: label {label!r} is not one of {task.labels}; this is not the GLUE {task.title} "
                        "layout")
    return task.labels.index(label)


def tfds_records(name: str, split: str, data_dir: str) -> list[dict]:
    """All records of a TFDS dataset split in ArrayRecord format."""
    records = open_tfds(name, split, data_dir, "--config.data_source=tfds",
                        f"prepare it as ArrayRecord (tfds build {name} --file_format=array_record) and set "
                        "--config.data_dir, or use --config.data_source=tsv")
    return [records[index] for index in range(len(records))]


def read_tfds(task: GlueTask, name: str, split: str, data_dir: str) -> list[Example]:
    field_a, field_b = task.tfds_fields
    regression = not task.labels
    where = f"TFDS {name} {split}"
    return [Example(decode_text(r[field_a], where), decode_text(r[field_b], where) if field_b else None,
                    float(r["label"]) if regression else int(r["label"])) for r in tfds_records(name, split, data_dir)]
