"""Document sources, the held-out split and the embedded corpus; each kind of bad input and its error."""
import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from headless_jax.config import base_config
from headless_jax.data import DataError, MissingDataError, book_names, load_tokenizer, parse_sources, split_books
from headless_jax.data import sources as sources_lib
from headless_jax.data.corpus import read_book
from headless_jax.data.split import split_document

# texts with non-ASCII, an empty one, and enough of them to span many reads of a compressed stream
TEXTS = [f"document {i}: {'é' if i % 3 else 'ü'} " + "word " * (i % 50) for i in range(3000)] + [""]


def documents(spec: str) -> list[str]:
    return [doc for source in parse_sources(spec) for doc in source.documents()]


def test_heldout_split_cuts_at_the_nearest_blank_line():
    paragraphs = [f"paragraph {i} " + "word " * 20 for i in range(20)]  # 20 paragraphs of 116 characters
    text = "\n\n".join(paragraphs)
    train, heldout = split_document(text, 0.1)
    assert train + heldout == text
    assert heldout.startswith("paragraph ") and train.endswith("\n\n")
    assert 0.05 * len(text) <= len(heldout) <= 0.15 * len(text)
    assert heldout == "\n\n".join(paragraphs[-2:])  # the boundary nearest to the 10% cut


def test_heldout_split_of_text_without_paragraphs_keeps_the_tail_characters():
    assert split_document("abcdefghij", 0.2) == ("abcdefgh", "ij")
    assert split_document("abc", 0.01) == ("ab", "c")  # any non-empty document holds some text out
    assert split_document("abc", 0.0) == ("abc", "")


def test_embedded_corpus_has_seven_books_split_like_training():
    names = book_names()
    assert len(names) == 7 and "melville_mobydick" in names and list(names) == sorted(names)
    splits = split_books(0.05)
    assert list(splits) == list(names)
    for train, heldout in splits.values():
        assert 0.04 < len(heldout) / (len(train) + len(heldout)) < 0.06
        assert train.endswith("\n\n") and not heldout.startswith("\n")
    assert [doc[:40] for doc in documents("embedded")] == [t[:40] for t, _ in splits.values()]


def test_text_and_jsonl_sources_read_one_document_per_file_and_per_line(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n")
    (tmp_path / "a.txt").write_text("first file é\n")
    (tmp_path / "docs.jsonl").write_text('{"body": "one", "id": 1}\n\n{"body": "two"}\n')
    assert documents(f"text:{tmp_path}/*.txt") == ["first file é\n", "second file\n"]  # sorted by path
    assert documents(f"jsonl:{tmp_path}/docs.jsonl?field=body") == ["one", "two"]
    assert documents(f"text:{tmp_path}/a.txt, jsonl:{tmp_path}/*.jsonl?field=body") == ["first file é\n", "one", "two"]


def test_source_fingerprint_changes_with_the_files(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("some text")
    before = parse_sources(f"text:{path}")[0].fingerprint
    path.write_text("other, longer text")
    assert parse_sources(f"text:{path}")[0].fingerprint != before


@pytest.mark.parametrize("spec, error, words", [
    ("", DataError, ["data.sources is empty"]),
    (" , ", DataError, ["data.sources is empty"]),
    ("wiki", DataError, ["cannot parse 'wiki'", "text:GLOB"]),
    ("text:", DataError, ["cannot parse 'text:'"]),
    ("text:{tmp}/*.txt?field=x", DataError, ["unknown option 'field'"]),
    ("text:{tmp}/missing.txt", MissingDataError, ["missing.txt", "fix the path"]),
    ("jsonl:{tmp}/*.jsonl", MissingDataError, ["matches no files", "fix the pattern"]),
    ("text:{tmp}/nodir/*/*.txt", MissingDataError, ["matches no files"]),
])
def test_bad_source_specs_are_one_line_errors(tmp_path, spec, error, words):
    with pytest.raises(error) as caught:
        parse_sources(spec.format(tmp=tmp_path))
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_missing_file_error_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        parse_sources(f"text:{tmp_path}/nothing.txt")


def test_undecodable_bytes_name_the_file_and_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{path}: byte 3 is not UTF-8; re-encode it to UTF-8"):
        documents(f"text:{path}")
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: byte 28 is not UTF-8"):
        documents(f"jsonl:{tmp_path}/bad.jsonl")


def test_jsonl_line_without_the_field_names_file_line_and_fix(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"content": "x"}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: no field 'text' \(found \['content'\]\).*\?field=NAME"):
        documents(f"jsonl:{path}")
    path.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON"):
        documents(f"jsonl:{path}")
    path.write_text('{"text": 3}\n')
    with pytest.raises(DataError, match=rf"{path}:1: field 'text' is a int, not text"):
        documents(f"jsonl:{path}")


def test_source_without_text_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    config = base_config()
    config.data.sources = f"text:{tmp_path}/*.txt"
    with pytest.raises(DataError, match=r"'text:.*\*.txt' holds no text"):
        load_tokenizer(config, tmp_path / "cache")


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A real two-record TFDS dataset in ArrayRecord format (built without TensorFlow)."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class HeadlessJaxTinyText(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"text": tfds.features.Text(), "label": tfds.features.Text()}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            yield 0, {"text": "première ligne", "label": "a"}
            yield 1, {"text": "second record", "label": "b"}

    data_dir = tmp_path_factory.mktemp("tfds")
    HeadlessJaxTinyText(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_source_reads_array_record_and_decodes_bytes(tfds_dir):
    docs = documents(f"tfds:headless_jax_tiny_text?split=train&field=text&data_dir={tfds_dir}")
    assert sorted(docs) == ["première ligne", "second record"]


def test_tfds_errors_name_the_dataset_and_fix(tfds_dir):
    with pytest.raises(DataError, match=r"record \d has no field 'body' \(found \['label', 'text'\]\).*\?field=NAME"):
        documents(f"tfds:headless_jax_tiny_text?field=body&data_dir={tfds_dir}")
    with pytest.raises(MissingDataError, match=r"TFDS cannot open headless_jax_tiny_text split validation .*check"):
        documents(f"tfds:headless_jax_tiny_text?split=validation&data_dir={tfds_dir}")


def write_jsonl(path, texts, field="text"):
    """JSON Lines bytes of `texts` (with a blank line, which readers skip), written to `path`; returns them."""
    data = "".join(json.dumps({field: text, "id": i}) + "\n" + ("\n" if i == 1 else "")
                   for i, text in enumerate(texts)).encode()
    path.write_bytes(data)
    return data


def test_compressed_jsonl_gives_the_documents_of_the_plain_file(tmp_path):
    data = write_jsonl(tmp_path / "plain.jsonl", TEXTS)
    assert documents(f"jsonl:{tmp_path}/plain.jsonl") == TEXTS
    (tmp_path / "docs.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "docs.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    half = len(data) // 2  # two zstd frames back to back, as pzstd writes them
    compressor = zstandard.ZstdCompressor()
    (tmp_path / "frames.jsonl.zstd").write_bytes(compressor.compress(data[:half]) + compressor.compress(data[half:]))
    for name in ("docs.jsonl.gz", "docs.jsonl.zst", "frames.jsonl.zstd"):
        assert documents(f"jsonl:{tmp_path}/{name}") == TEXTS, name


def test_jsonl_is_streamed_not_read_whole(tmp_path, monkeypatch):
    size = len(write_jsonl(tmp_path / "docs.jsonl", TEXTS))
    local_path, opened = type(sources_lib.epath.Path(tmp_path)), []
    real_open = local_path.open
    monkeypatch.setattr(local_path, "open", lambda self, *a, **k: opened.append(real_open(self, *a, **k)) or opened[-1])
    docs = parse_sources(f"jsonl:{tmp_path}/docs.jsonl")[0].documents()
    assert next(docs) == TEXTS[0]
    assert 0 < opened[0].raw.tell() < size / 4  # the bytes read from the file so far: a buffer's worth, not all


@pytest.mark.parametrize("name, damage, words", [
    ("cut.jsonl.gz", lambda data: gzip.compress(data)[:-20], ["not a valid gzip file", "ended before"]),
    ("garbage.jsonl.gz", lambda data: b"not gzip at all", ["not a valid gzip file", "Not a gzipped file"]),
    ("garbage.jsonl.zst", lambda data: b"not zstd at all" * 10, ["not a valid zstd file"]),
    ("cut.jsonl.zst", lambda data: zstandard.ZstdCompressor().compress(data)[:-20],
     ["not a valid zstd file", "truncated"]),
])
def test_corrupt_compressed_jsonl_is_a_one_line_error_naming_the_file(tmp_path, name, damage, words):
    path = tmp_path / name
    path.write_bytes(damage("".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode()))
    with pytest.raises(DataError) as caught:
        documents(f"jsonl:{path}")
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and "re-download it" in message, message
    assert all(word in message for word in words), message


def test_undecodable_bytes_in_compressed_jsonl_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "ok"}\n\n{"text": "caf\xe9"}\n'))
    with pytest.raises(DataError, match=rf"{path}: byte 29 is not UTF-8 \(line 3\); re-encode it to UTF-8"):
        documents(f"jsonl:{path}")


def test_parquet_gives_the_documents_of_jsonl_with_the_same_texts(tmp_path):
    write_jsonl(tmp_path / "docs.jsonl", TEXTS, field="body")
    table = pa.table({"id": list(range(len(TEXTS) + 1)), "body": TEXTS[:5] + [None] + TEXTS[5:]})  # nulls: skipped
    pq.write_table(table, tmp_path / "docs.parquet", row_group_size=700)  # several row groups and batches
    assert documents(f"parquet:{tmp_path}/*.parquet?column=body") == TEXTS
    jsonl = documents(f"jsonl:{tmp_path}/docs.jsonl?field=body")
    assert documents(f"parquet:{tmp_path}/docs.parquet?column=body") == jsonl
    pq.write_table(pa.table({"text": pa.array(["a", "b", "a"]).dictionary_encode()}), tmp_path / "dict.parquet")
    assert documents(f"parquet:{tmp_path}/dict.parquet") == ["a", "b", "a"]  # column=text by default


def test_parquet_errors_name_the_file_the_column_and_the_fix(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"body": ["x"], "id": [1]}), path)
    with pytest.raises(DataError, match=rf"^{path}: no column 'text' \(found \['body', 'id'\]\); .*\?column=NAME$"):
        documents(f"parquet:{path}")
    with pytest.raises(DataError, match=rf"^{path}: column 'id' is int64, not text; .*\?column=NAME$"):
        documents(f"parquet:{path}?column=id")
    path.write_bytes(b"not parquet" * 10)
    with pytest.raises(DataError, match=rf"^{path}: not a valid Parquet file \(.*magic bytes.*\); re-download"):
        documents(f"parquet:{path}")
    with pytest.raises(DataError, match=r"unknown option 'field'; parquet takes \['column', 'name', 'weight'\]"):
        parse_sources(f"parquet:{path}?field=body")


def test_file_gone_or_unreadable_when_read_is_an_error_naming_it(tmp_path):
    for kind, name in (("text", "a.txt"), ("jsonl", "a.jsonl"), ("parquet", "a.parquet")):
        path = tmp_path / name
        path.write_text("x")
        source = parse_sources(f"{kind}:{path}")[0]
        path.unlink()
        with pytest.raises(MissingDataError, match=rf"^{path}: no such file .*; restore it or fix data.sources$"):
            list(source.documents())


def test_unreadable_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "secret.jsonl"
    path.write_text('{"text": "x"}\n')
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: a file of mode 000 is still readable")
        for kind in ("text", "jsonl"):
            with pytest.raises(DataError, match=rf"^{path}: cannot open it \(Permission denied\); make it readable"):
                documents(f"{kind}:{path}")
    finally:
        path.chmod(0o600)


def test_permission_error_on_open_is_an_error_naming_the_file(tmp_path, monkeypatch):
    """What a mode-000 file gives a user who is not root, tested here even when running as root."""
    path = tmp_path / "secret.jsonl"
    path.write_text('{"text": "x"}\n')
    source = parse_sources(f"jsonl:{path}")[0]

    def refuse(self, mode="r", **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(sources_lib.epath.Path(path)), "open", refuse)  # the local path class
    with pytest.raises(DataError, match=rf"^{path}: cannot open it \(Permission denied\); make it readable"):
        list(source.documents())


def test_units_partition_the_documents_in_order(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"text": "b1"}\n{"text": "b2"}\n')
    (tmp_path / "a.jsonl").write_text('{"text": "a1"}\n')
    (tmp_path / "c.jsonl").write_text('{"text": "c1"}\n{"text": "c2"}\n{"text": "c3"}\n')
    jsonl, embedded = parse_sources(f"jsonl:{tmp_path}/*.jsonl, embedded")
    units = jsonl.units()
    assert [unit.key for unit in units] == [str(tmp_path / f"{n}.jsonl") for n in "abc"]
    assert [list(unit.documents()) for unit in units] == [["a1"], ["b1", "b2"], ["c1", "c2", "c3"]]
    assert list(jsonl.documents()) == ["a1", "b1", "b2", "c1", "c2", "c3"]
    units = embedded.units()
    assert [unit.key for unit in units] == list(book_names())
    assert [list(unit.documents()) for unit in units] == [[read_book(name)] for name in book_names()]
    assert list(embedded.documents()) == [doc for unit in units for doc in unit.documents()]


def test_tfds_units_are_ranges_of_records(tfds_dir, monkeypatch):
    spec = f"tfds:headless_jax_tiny_text?data_dir={tfds_dir}"
    source = parse_sources(spec)[0]
    assert [unit.key for unit in source.units()] == ["records 0-2"]
    monkeypatch.setattr(sources_lib, "TFDS_UNIT_RECORDS", 1)
    units = source.units()
    assert [unit.key for unit in units] == ["records 0-1", "records 1-2"]
    assert [doc for unit in units for doc in unit.documents()] == list(source.documents())
    assert sorted(source.documents()) == ["première ligne", "second record"]


def test_names_and_weights_parse_with_defaults(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "b.txt").write_text("b")
    one = parse_sources(f"jsonl:{tmp_path}/a.jsonl")[0]
    assert (one.name, one.weight) == ("jsonl", None)
    two = parse_sources(f"jsonl:{tmp_path}/a.jsonl, jsonl:{tmp_path}/*.jsonl?weight=0.5")
    assert [(s.name, s.weight) for s in two] == [("jsonl_0", None), ("jsonl_1", 0.5)]
    mixed = parse_sources(f"embedded?weight=2, text:{tmp_path}/b.txt?name=wiki.en-1&weight=3, "
                          f"jsonl:{tmp_path}/a.jsonl?name=a, jsonl:{tmp_path}/a.jsonl")
    assert [(s.name, s.weight) for s in mixed] == [("embedded", 2.0), ("wiki.en-1", 3.0), ("a", None),
                                                   ("jsonl_3", None)]
    assert [s.spec for s in mixed][:2] == ["embedded?weight=2", f"text:{tmp_path}/b.txt?name=wiki.en-1&weight=3"]
    assert list(mixed[1].documents()) == ["b"]


def test_fingerprint_ignores_name_and_weight_and_keeps_its_format(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a", "body": "b"}\n')
    stat = os.stat(path)
    plain = parse_sources(f"jsonl:{path}?field=body")[0].fingerprint
    # the format caches hold: fingerprints from before name= and weight= stay valid
    assert plain == repr([f"jsonl:{path}?field=body", (str(path), stat.st_size, int(stat.st_mtime))])
    for spec in (f"jsonl:{path}?name=x&field=body&weight=2", f"jsonl:{path}?field=body&weight=1e3",
                 f"jsonl:{path}?name=x&field=body"):
        assert parse_sources(spec)[0].fingerprint == plain, spec
    assert parse_sources(f"jsonl:{path}?weight=2")[0].fingerprint == parse_sources(f"jsonl:{path}")[0].fingerprint
    assert parse_sources(f"jsonl:{path}?name=x")[0].fingerprint != plain  # field=text: other data
    assert [s.fingerprint for s in parse_sources("embedded, embedded?weight=2&name=books")] == ["embedded"] * 2
    assert parse_sources("tfds:wiki?split=train&name=w&weight=2")[0].fingerprint == "tfds:wiki?split=train"


@pytest.mark.parametrize("spec, words", [
    ("embedded?weight=0", ["'embedded?weight=0'", "weight='0' is not a positive number", "weight=2"]),
    ("embedded?weight=-1", ["weight='-1' is not a positive number"]),
    ("embedded?weight=heavy", ["weight='heavy' is not a positive number"]),
    ("embedded?weight=", ["weight='' is not a positive number"]),
    ("embedded?weight=inf", ["weight='inf' is not a positive number"]),
    ("embedded?weight=nan", ["weight='nan' is not a positive number"]),
    ("embedded?name=", ["'embedded?name='", "name='' is not a valid name", "letters, digits"]),
    ("embedded?name=my%20books", ["name='my books' is not a valid name", "e.g. name="]),
    ("embedded?name=a/b", ["name='a/b' is not a valid name"]),
    ("embedded?split=train", ["unknown option 'split'", "embedded takes ['name', 'weight']"]),
    ("embedded?name=x, embedded?name=x", ["'embedded?name=x' and 'embedded?name=x' are both named 'x'", "name=NAME"]),
    ("embedded?name=embedded_1, embedded", ["both named 'embedded_1'"]),
])
def test_bad_name_or_weight_is_a_one_line_error_naming_the_spec(spec, words):
    with pytest.raises(DataError) as caught:
        parse_sources(spec)
    message = str(caught.value)
    assert message.startswith("data.sources: ") and "\n" not in message, message
    assert all(word in message for word in words), message
