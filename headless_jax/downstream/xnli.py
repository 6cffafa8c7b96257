"""XNLI, zero-shot cross-lingual: fine-tune on English MultiNLI (GLUE MNLI train, TSV or TFDS), evaluate on
every XNLI language, report the average.

The XNLI side reads the official XNLI-1.0 release (`<xnli_dir>/xnli.{dev,test}.tsv`: one file, a `language`
column, the sentence pairs in `sentence1`/`sentence2`, the label in `gold_label`).
"""
import csv
import sys

import ml_collections
from etils import epath

from headless_jax.data.errors import DataError, MissingDataError
from headless_jax.downstream import glue
from headless_jax.downstream.tasks import Example, TaskData

LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
_LABELS = glue.GLUE_TASKS["mnli"].labels  # same three classes in the same order as MNLI


def load(config: ml_collections.ConfigDict) -> TaskData:
    """config: data_source / data_dir (the English MNLI train), xnli.dir, xnli.split (dev | test), xnli.languages."""
    cfg = config.xnli
    mnli = glue.load("mnli", config.data_source, config.data_dir)
    languages = tuple(x.strip() for x in cfg.languages.split(",") if x.strip()) or LANGUAGES
    unknown = sorted(set(languages) - set(LANGUAGES))
    if unknown:
        raise ValueError(f"xnli.languages: {unknown} are not XNLI languages; use a subset of {LANGUAGES}")
    by_language = read_tsv(xnli_file(cfg.dir, cfg.split))
    evals = {f"{cfg.split}_{language}": by_language.get(language, []) for language in languages}
    empty = [split for split, examples in evals.items() if not examples]
    if empty:
        raise DataError(f"{xnli_file(cfg.dir, cfg.split)}: no examples for {empty}; check the file, or restrict "
                        "--config.xnli.languages")
    return TaskData("xnli", "XNLI", len(_LABELS), ("accuracy",), mnli.train, evals, tuple(evals))


def xnli_file(directory: str, split: str) -> epath.Path:
    if split not in ("dev", "test"):
        raise ValueError(f"xnli.split={split!r}; use dev or test")
    if not directory:
        raise MissingDataError("the xnli task needs --config.xnli.dir: the XNLI-1.0 directory with xnli.dev.tsv and "
                               "xnli.test.tsv")
    return epath.Path(directory) / f"xnli.{split}.tsv"


def read_tsv(path: epath.Path) -> dict[str, list[Example]]:
    """language -> examples of one XNLI-1.0 file."""
    if not path.exists():
        raise MissingDataError(f"{path}: no such file; point --config.xnli.dir at the XNLI-1.0 directory (with "
                               "xnli.dev.tsv and xnli.test.tsv)")
    csv.field_size_limit(sys.maxsize)
    with path.open() as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"language", "gold_label", "sentence1", "sentence2"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: header lacks {sorted(missing)}; this is not an XNLI-1.0 file")
        by_language: dict[str, list[Example]] = {}
        for line_number, row in enumerate(reader, 2):
            if row["gold_label"] not in _LABELS:
                raise DataError(f"{path}:{line_number}: gold_label {row['gold_label']!r} is not one of {_LABELS}")
            by_language.setdefault(row["language"], []).append(
                Example(row["sentence1"], row["sentence2"], _LABELS.index(row["gold_label"])))
    return by_language
