"""Readers of the document sources: each yields the documents of one file (or one range of TFDS records),
streaming it, with one-line errors naming the file (and line or record) and the fix."""
import contextlib
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import zstandard
from etils import epath

from headless_jax.data.errors import DataError, MissingDataError

_COMPRESSION = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}  # a jsonl file's suffix -> its compression
_CORRUPT = (gzip.BadGzipFile, zlib.error, EOFError, zstandard.ZstdError)
_READ_BYTES = 1 << 16  # compressed bytes read at a time
_PARQUET_BATCH_ROWS = 1024  # rows read at a time: bounds the memory a Parquet file takes
_REENCODE = "re-encode it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"


@contextlib.contextmanager
def _open(path: epath.Path) -> Iterator[BinaryIO]:
    """The file opened for reading; a file that went away or cannot be read is a DataError naming it."""
    try:
        file = path.open("rb")
    except FileNotFoundError:  # listed when the sources were parsed, gone now
        raise MissingDataError(f"{path}: no such file (moved or deleted since the sources were listed); "
                               "restore it or fix data.sources") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open it ({e.strerror or e}); make it readable "
                        "(e.g. chmod a+r) or fix data.sources") from None
    with file:
        yield file


def text_documents(path: epath.Path) -> Iterator[str]:
    with _open(path) as file:
        data = file.read()  # the file is one document: it is needed whole
    yield _decode_utf8(data, str(path))


def jsonl_documents(path: epath.Path, field: str) -> Iterator[str]:
    offset = 0  # of the line in the (decompressed) file, for messages
    for line_number, line in enumerate(_lines(path), start=1):
        where = f"{path}:{line_number}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: byte {offset + e.start} is not UTF-8 (line {line_number}); {_REENCODE}") from None
        offset += len(line)
        if not text.strip():
            continue
        try:
            record = json.loads(text)
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


def _lines(path: epath.Path) -> Iterator[bytes]:
    """The file's lines (each but perhaps the last ending in b"\\n"), streamed, and decompressed by its suffix."""
    compression = _COMPRESSION.get(path.suffix.lower())
    with _open(path) as file, _decompressed(file, compression) as stream:
        try:
            yield from stream
        except _CORRUPT as e:
            if compression is None:  # not a decompression error: let it be
                raise
            raise DataError(f"{path}: not a valid {compression} file ({_first_line(e)}); re-download it, "
                            f"or re-compress it with {compression}") from None


def _decompressed(file: BinaryIO, compression: str | None) -> contextlib.AbstractContextManager[BinaryIO]:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=file)
    if compression == "zstd":
        return io.BufferedReader(_ZstdReader(file), buffer_size=_READ_BYTES)
    return contextlib.nullcontext(file)


class _ZstdReader(io.RawIOBase):
    """The decompressed bytes of a stream of zstd frames (zstd and pzstd write one or more). Not zstandard's own
    stream_reader: that ends quietly where a cut-off file ends, and a truncated download must not pass for a
    shorter corpus. A stream that ends inside a frame raises EOFError, as gzip does."""

    def __init__(self, compressed: BinaryIO):
        super().__init__()
        self._compressed = compressed
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self._in_frame = False  # some of the current frame has been read, but not its end
        self._output = memoryview(b"")  # decompressed, not yet handed out (a view: handing out does not copy)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._output:
            data = b""
            if self._frame.eof:  # what follows a complete frame is the start of the next one
                data = self._frame.unused_data
                self._frame, self._in_frame = self._decompressor.decompressobj(), False
            data = data or self._compressed.read(_READ_BYTES)
            if not data:
                if self._in_frame:
                    raise EOFError("the file ends inside a zstd frame: it is truncated")
                return 0
            self._in_frame = True
            self._output = memoryview(self._frame.decompress(data))
        size = min(len(buffer), len(self._output))
        buffer[:size] = self._output[:size]
        self._output = self._output[size:]
        return size


def parquet_documents(path: epath.Path, column: str) -> Iterator[str]:
    import pyarrow  # slow to import: only for Parquet sources
    import pyarrow.parquet

    with _open(path) as file:
        try:
            parquet = pyarrow.parquet.ParquetFile(file)
            _check_text_column(path, parquet.schema_arrow, column)
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[column]):
                yield from (text for text in batch.column(0).to_pylist() if text is not None)
        except (pyarrow.ArrowException, OSError) as e:  # pyarrow reports corrupt pages as OSError
            raise DataError(f"{path}: not a valid Parquet file ({_first_line(e)}); re-download it, "
                            "or write it again") from None


def _check_text_column(path: epath.Path, schema, column: str) -> None:
    import pyarrow

    if column not in schema.names:
        raise DataError(f"{path}: no column {column!r} (found {schema.names}); "
                        "name the text column with parquet:GLOB?column=NAME")
    column_type = schema.field(column).type
    values = column_type.value_type if pyarrow.types.is_dictionary(column_type) else column_type
    if not (pyarrow.types.is_string(values) or pyarrow.types.is_large_string(values)
            or pyarrow.types.is_string_view(values)):
        raise DataError(f"{path}: column {column!r} is {column_type}, not text; "
                        "name the text column with parquet:GLOB?column=NAME")


def open_tfds(name: str, split: str, data_dir: str, where: str, fix: str):
    """A TFDS split prepared as ArrayRecord, as a random-access source (tfds.data_source: no TensorFlow); a
    MissingDataError that starts with `where` and ends with `fix` when TFDS cannot open it."""
    import tensorflow_datasets as tfds  # slow to import: only for TFDS sources

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None)
    except Exception as e:  # TFDS raises many kinds (not found, not ArrayRecord, bad split): report them alike
        raise MissingDataError(f"{where}: TFDS cannot open {name} split {split} ({_first_line(e)}); {fix}") from e


def decode_text(value: bytes | str, where: str) -> str:
    """A TFDS Text feature (bytes from tfds.data_source) as str."""
    return _decode_utf8(value, where) if isinstance(value, bytes) else str(value)


def tfds_documents(spec: str, name: str, field: str, records, start: int, stop: int) -> Iterator[str]:
    for index in range(start, stop):
        record = records[index]
        if field not in record:
            raise DataError(f"data.sources: {spec!r}: record {index} has no field {field!r} (found {sorted(record)}); "
                            f"name the text field with tfds:{name}?field=NAME")
        yield decode_text(record[field], f"{spec} record {index}")


def _decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: byte {e.start} is not UTF-8; {_REENCODE}") from None


def _first_line(error: Exception) -> str:
    """An exception's message cut to one line (or its type's name when it has none), for a one-line error."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
