"""Document sources named by `config.data.sources`, a comma-separated list of:

  embedded                              the seven novels shipped with the package, one document each
  text:GLOB                             UTF-8 text files, one document each
  jsonl:GLOB?field=text                 JSON Lines, one document per line, read from `field`; files ending in
                                        .gz (gzip) or .zst/.zstd (zstd) are decompressed as they are read
  parquet:GLOB?column=text              Parquet files, one document per row of the string `column` (nulls skipped)
  tfds:NAME?split=train&field=text      a TFDS dataset in ArrayRecord format, one document per record
                                        (read with tfds.data_source: no TensorFlow; `data_dir=` optional)

Every kind also takes `name=` (the source's name in metrics; default: its kind, or `KIND_I` with I its position
in the list when several sources are of that kind) and `weight=` (a positive mixing weight; default: none),
e.g. `embedded?weight=2`. Neither changes the data, so neither changes the source's fingerprint.

A source's documents come in units that can be read on their own (a file, a book, a range of TFDS records), so
that they can be prepared in parallel. Paths may be local or gs:// URLs. Files are streamed, never read whole,
except a text file, which is one document.
"""
import collections
import dataclasses
import functools
import math
import re
import urllib.parse
from collections.abc import Callable, Iterator
from typing import NamedTuple

from etils import epath

from headless_jax.data import corpus, readers
from headless_jax.data.errors import DataError, MissingDataError

_USAGE = ("embedded | text:GLOB | jsonl:GLOB?field=text | parquet:GLOB?column=text | "
          "tfds:NAME?split=train&field=text (each may add &name=NAME&weight=W)")
_OPTIONS = {"embedded": {}, "text": {}, "jsonl": {"field": "text"}, "parquet": {"column": "text"},
            "tfds": {"split": "train", "field": "text", "data_dir": ""}}  # each kind's options and their defaults
_COMMON_OPTIONS = ("name", "weight")  # every kind's; they say how to use the data, so are not in the fingerprint
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# what reading a damaged compressed file raises: bad header, bad data, truncated stream
TFDS_UNIT_RECORDS = 100_000  # the most records in one unit of a TFDS source


class Unit(NamedTuple):
    """A part of a source's documents that can be read on its own, e.g. by one worker of a parallel build."""
    key: str  # names the part within its source: a file's path, a book's name, a range of records
    documents: Callable[[], Iterator[str]]  # reads the part's documents afresh on each call


@dataclasses.dataclass(frozen=True)
class Source:
    spec: str  # as written in the config: names the source in messages
    fingerprint: str  # changes when the data changes: part of every cache key
    documents: Callable[[], Iterator[str]]  # reads the documents afresh on each call: its units' documents in order
    units: Callable[[], list[Unit]]  # the parts of `documents`, in order (for tfds, opens the dataset)
    name: str  # short, and unique among the sources: names the source in metrics
    weight: float | None  # its mixing weight, if the spec gives one


class _Spec(NamedTuple):
    """A source spec, parsed and checked but not yet looked up (no files listed, nothing opened)."""
    text: str
    kind: str
    location: str  # a glob or TFDS name; empty for embedded
    options: dict[str, str]  # the kind's own options, defaults filled in
    name: str | None
    weight: float | None


def parse_sources(sources: str) -> list[Source]:
    """The sources of a `config.data.sources` string; file globs are expanded (and checked) now."""
    texts = [text.strip() for text in sources.split(",") if text.strip()]
    if not texts:
        raise DataError(f"data.sources is empty; set --config.data.sources to one or more of {_USAGE}")
    specs = [_parse_spec(text) for text in texts]
    return [_source(spec, name) for spec, name in zip(specs, _names(specs))]


def no_text_error(source: Source) -> DataError:
    return DataError(f"data.sources: {source.spec!r} holds no text (its documents are empty, or too short to "
                     "have a train split); point it at text or remove it")


def _parse_spec(text: str) -> _Spec:
    head, _, query = text.partition("?")
    kind, _, location = head.partition(":")
    takes_location = kind != "embedded"
    if kind not in _OPTIONS or bool(location) != takes_location:
        raise DataError(f"data.sources: cannot parse {text!r}; each source is one of {_USAGE}")
    options = dict(_OPTIONS[kind])
    common: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key in _COMMON_OPTIONS:
            common[key] = value
        elif key in options:
            options[key] = value
        else:
            raise DataError(f"data.sources: {text!r} has unknown option {key!r}; "
                            f"{kind} takes {sorted([*options, *_COMMON_OPTIONS])}")
    name = common.get("name")
    if name is not None and not _NAME.fullmatch(name):
        raise DataError(f"data.sources: {text!r}: name={name!r} is not a valid name; use only letters, digits, "
                        "'_', '.' and '-' (e.g. name=wiki_en)")
    weight = _parse_weight(text, common["weight"]) if "weight" in common else None
    return _Spec(text, kind, location, options, name, weight)


def _parse_weight(spec: str, value: str) -> float:
    try:
        weight = float(value)
    except ValueError:
        weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
        raise DataError(f"data.sources: {spec!r}: weight={value!r} is not a positive number; "
                        "give one such as weight=2 or weight=0.5")
    return weight


def _names(specs: list[_Spec]) -> list[str]:
    """Each source's name: as given, else its kind, numbered by position when several sources are of that kind."""
    kinds = collections.Counter(spec.kind for spec in specs)
    names = [spec.name or (spec.kind if kinds[spec.kind] == 1 else f"{spec.kind}_{i}")
             for i, spec in enumerate(specs)]
    for i, name in enumerate(names):
        if name in names[:i]:  # metrics (and stores) are kept by name: two sources must not share one
            first = specs[names.index(name)].text
            raise DataError(f"data.sources: {first!r} and {specs[i].text!r} are both named {name!r}; "
                            "give one of them another name=NAME")
    return names


def _data_spec(text: str) -> str:
    """The spec without the options that leave the data as it is (name=, weight=): what the fingerprint keeps."""
    head, _, query = text.partition("?")
    pairs = query.split("&") if query else []
    kept = [pair for pair in pairs if urllib.parse.unquote_plus(pair.partition("=")[0]) not in _COMMON_OPTIONS]
    if len(kept) == len(pairs):  # the spec as written: fingerprints from before name=/weight= stay valid
        return text
    return head + ("?" + "&".join(kept) if kept else "")


def _source(spec: _Spec, name: str) -> Source:
    # functools.partial of module functions, not lambdas: units can then be pickled for worker processes
    data_spec = _data_spec(spec.text)
    if spec.kind == "embedded":
        fingerprint, units = data_spec, _embedded_units
    elif spec.kind == "tfds":  # a TFDS name + version identifies its data
        fingerprint, units = data_spec, functools.partial(_tfds_units, spec.text, spec.location, **spec.options)
    else:
        files = _matching_files(spec.text, spec.location)
        fingerprint = repr([data_spec] + [(str(f), stat.length, stat.mtime) for f in files for stat in [f.stat()]])
        read = {"text": readers.text_documents,
                "jsonl": functools.partial(readers.jsonl_documents, field=spec.options.get("field")),
                "parquet": functools.partial(readers.parquet_documents, column=spec.options.get("column"))}[spec.kind]
        units = functools.partial(_file_units, files, read)
    return Source(spec.text, fingerprint, functools.partial(_units_documents, units), units, name, spec.weight)


def _units_documents(units: Callable[[], list[Unit]]) -> Iterator[str]:
    for unit in units():
        yield from unit.documents()


def _matching_files(spec: str, pattern: str) -> list[epath.Path]:
    parts = pattern.split("/")
    first_wild = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    if first_wild is None:
        if not epath.Path(pattern).is_file():
            raise MissingDataError(f"data.sources: {spec!r}: no such file {pattern}; fix the path")
        return [epath.Path(pattern)]
    base = "/".join(parts[:first_wild]) or ("/" if pattern.startswith("/") else ".")
    files = sorted((f for f in epath.Path(base).glob("/".join(parts[first_wild:])) if f.is_file()), key=str)
    if not files:
        raise MissingDataError(f"data.sources: {spec!r}: {pattern} matches no files; fix the pattern "
                               "(and quote it so that the shell does not expand it)")
    return files


def _file_units(files: list[epath.Path], read: Callable[[epath.Path], Iterator[str]]) -> list[Unit]:
    return [Unit(str(path), functools.partial(read, path)) for path in files]


def _embedded_units() -> list[Unit]:
    return [Unit(name, functools.partial(_book_documents, name)) for name in corpus.book_names()]


def _book_documents(name: str) -> Iterator[str]:
    yield corpus.read_book(name)


def _tfds_units(spec: str, name: str, split: str, field: str, data_dir: str) -> list[Unit]:
    records = readers.open_tfds(name, split, data_dir, f"data.sources: {spec!r}",
                        "check the name, split and data_dir, and that it was prepared as ArrayRecord "
                        "(tfds build --file_format=array_record)")
    starts = range(0, len(records), TFDS_UNIT_RECORDS)
    ranges = [(start, min(start + TFDS_UNIT_RECORDS, len(records))) for start in starts]
    return [Unit(f"records {start}-{stop}",
                 functools.partial(readers.tfds_documents, spec, name, field, records, start, stop))
            for start, stop in ranges]
