"""XNLI, zero-shot cross-lingual: fine-tune on English MultiNLI (GLUE MNLI train), evaluate on every XNLI
language, report the average.

data_source=tfds: `glue/mnli` and `xnli` from TFDS (data_dir). data_source=tsv: the GLUE MNLI folder under
data_dir, and the official XNLI-1.0 release in xnli.dir (`xnli.{dev,test}.tsv`: one file, a `language` column,
the pair in `sentence1`/`sentence2`, the label in `gold_label`).
"""
import csv
import sys

import ml_collections
from etils import epath

from headless_jax.data.errors import DataError, MissingDataError
from headless_jax.data.readers import decode_text
from headless_jax.downstream import glue
from headless_jax.downstream.examples import Example, TaskData

LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
_LABELS = glue.GLUE_TASKS["mnli"].labels  # same three classes in the same order as MNLI
_TFDS_SPLITS = {"dev": "validation", "test": "test"}


def load(config: ml_collections.ConfigDict) -> TaskData:
    """config: data_source / data_dir, xnli.dir (TSV), xnli.split (dev | test), xnli.languages."""
    cfg = config.xnli
    if cfg.split not in _TFDS_SPLITS:
        raise ValueError(f"xnli.split={cfg.split!r}; use dev or test")
    mnli = glue.load("mnli", config.data_source, config.data_dir)
    languages = tuple(x.strip() for x in cfg.languages.split(",") if x.strip()) or LANGUAGES
    unknown = sorted(set(languages) - set(LANGUAGES))
    if unknown:
        raise ValueError(f"xnli.languages: {unknown} are not XNLI languages; use a subset of {LANGUAGES}")
    if config.data_source == "tfds":
        where = f"TFDS xnli split {_TFDS_SPLITS[cfg.split]}"
        by_language = read_tfds(_TFDS_SPLITS[cfg.split], config.data_dir, languages)
    else:
        path = xnli_file(cfg.dir, cfg.split)
        where, by_language = str(path), read_tsv(path)
    evals = {f"{cfg.split}_{language}": by_language.get(language, []) for language in languages}
    empty = [split for split, examples in evals.items() if not examples]
    if empty:
        raise DataError(f"{where}: no examples for {empty}; check the data, or restrict --config.xnli.languages")
    return TaskData("xnli", "XNLI", len(_LABELS), ("accuracy",), mnli.train, evals, tuple(evals))


def read_tfds(split: str, data_dir: str, languages: tuple[str, ...]) -> dict[str, list[Example]]:
    """language -> examples of TFDS `xnli` (premise: one text per language; hypothesis: language/translation lists)."""
    by_language: dict[str, list[Example]] = {language: [] for language in languages}
    where = f"TFDS xnli {split}"
    for record in glue.tfds_records("xnli", split, data_dir):
        hypothesis = record["hypothesis"]
        hypotheses = {decode_text(language, where): translation
                      for language, translation in zip(hypothesis["language"], hypothesis["translation"])}
        for language in languages:
            if language in hypotheses:
                by_language[language].append(Example(decode_text(record["premise"][language], where),
                                                     decode_text(hypotheses[language], where), int(record["label"])))
    return by_language


def xnli_file(directory: str, split: str) -> epath.Path:
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
