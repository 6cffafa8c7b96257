"""Document sources named by `config.data.sources`, a comma-separated list of:

  embedded                              the seven novels shipped with the package, one document each
  text:GLOB                             UTF-8 text files, one document each
  jsonl:GLOB?field=text                 JSON Lines, one document per line, read from `field`
  tfds:NAME?split=train&field=text      a TFDS dataset in ArrayRecord format, one document per record
                                        (read with tfds.data_source: no TensorFlow; `data_dir=` optional)

Paths may be local or gs:// URLs.
"""
import dataclasses
import functools
import json
import urllib.parse
from collections.abc import Callable, Iterator

from etils import epath

from headless_jax.data import corpus
from headless_jax.data.errors import DataError, MissingDataError

_USAGE = "embedded | text:GLOB | jsonl:GLOB?field=text | tfds:NAME?split=train&field=text"
_OPTIONS = {"embedded": {}, "text": {}, "jsonl": {"field": "text"},
            "tfds": {"split": "train", "field": "text", "data_dir": ""}}  # each kind's options and their defaults


@dataclasses.dataclass(frozen=True)
class Source:
    spec: str  # as written in the config: names the source in messages
    fingerprint: str  # changes when the data changes: part of every cache key
    documents: Callable[[], Iterator[str]]  # reads the documents afresh on each call


def parse_sources(sources: str) -> list[Source]:
    """The sources of a `config.data.sources` string; file globs are expanded (and checked) now."""
    specs = [spec.strip() for spec in sources.split(",") if spec.strip()]
    if not specs:
        raise DataError(f"data.sources is empty; set --config.data.sources to one or more of {_USAGE}")
    return [_parse_source(spec) for spec in specs]


def no_text_error(source: Source) -> DataError:
    return DataError(f"data.sources: {source.spec!r} holds no text (its documents are empty, or too short to "
                     "have a train split); point it at text or remove it")


def _parse_source(spec: str) -> Source:
    kind, _, rest = spec.partition(":")
    location, _, query = rest.partition("?")
    takes_location = kind != "embedded"
    if kind not in _OPTIONS or bool(location) != takes_location:
        raise DataError(f"data.sources: cannot parse {spec!r}; each source is one of {_USAGE}")
    options = dict(_OPTIONS[kind])
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key not in options:
            raise DataError(f"data.sources: {spec!r} has unknown option {key!r}; "
                            f"{kind} takes {sorted(options) or 'none'}")
        options[key] = value

    if kind == "embedded":
        return Source(spec, spec, _embedded_documents)
    if kind == "tfds":  # a TFDS name + version identifies its data
        return Source(spec, spec, functools.partial(_tfds_documents, spec, location, **options))
    files = _matching_files(spec, location)
    fingerprint = repr([spec] + [(str(f), stat.length, stat.mtime) for f in files for stat in [f.stat()]])
    read = _text_documents if kind == "text" else functools.partial(_jsonl_documents, field=options["field"])
    return Source(spec, fingerprint, functools.partial(read, files))


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


def _embedded_documents() -> Iterator[str]:
    for name in corpus.book_names():
        yield corpus.read_book(name)


def _text_documents(files: list[epath.Path]) -> Iterator[str]:
    for path in files:
        yield _decode_utf8(path.read_bytes(), str(path))


def _jsonl_documents(files: list[epath.Path], field: str) -> Iterator[str]:
    for path in files:
        for line_number, line in enumerate(_decode_utf8(path.read_bytes(), str(path)).split("\n"), start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg}); write one JSON object per line") from None
            if not isinstance(record, dict) or field not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise DataError(f"{where}: no field {field!r} (found {keys}); "
                                f"name the text field with jsonl:GLOB?field=NAME")
            if not isinstance(record[field], str):
                raise DataError(f"{where}: field {field!r} is a {type(record[field]).__name__}, not text; "
                                f"name the text field with jsonl:GLOB?field=NAME")
            yield record[field]


def open_tfds(name: str, split: str, data_dir: str, where: str, fix: str):
    """A TFDS split prepared as ArrayRecord, as a random-access source (tfds.data_source: no TensorFlow); a
    MissingDataError that starts with `where` and ends with `fix` when TFDS cannot open it."""
    import tensorflow_datasets as tfds  # slow to import: only for TFDS sources

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None)
    except Exception as e:  # TFDS raises many kinds (not found, not ArrayRecord, bad split): report them alike
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MissingDataError(f"{where}: TFDS cannot open {name} split {split} ({reason}); {fix}") from e


def decode_text(value: bytes | str, where: str) -> str:
    """A TFDS Text feature (bytes from tfds.data_source) as str."""
    return _decode_utf8(value, where) if isinstance(value, bytes) else str(value)


def _tfds_documents(spec: str, name: str, split: str, field: str, data_dir: str) -> Iterator[str]:
    records = open_tfds(name, split, data_dir, f"data.sources: {spec!r}",
                        "check the name, split and data_dir, and that it was prepared as ArrayRecord "
                        "(tfds build --file_format=array_record)")
    for index in range(len(records)):
        record = records[index]
        if field not in record:
            raise DataError(f"data.sources: {spec!r}: record {index} has no field {field!r} (found {sorted(record)}); "
                            f"name the text field with tfds:{name}?field=NAME")
        yield decode_text(record[field], f"{spec} record {index}")


def _decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: byte {e.start} is not UTF-8; re-encode it to UTF-8 "
                        f"(e.g. iconv -f latin1 -t utf-8)") from None
