"""Document sources, the held-out split and the embedded corpus; each kind of bad input and its error."""
import json

import pytest

from headless_jax.config import base_config
from headless_jax.data import DataError, MissingDataError, book_names, load_tokenizer, parse_sources, split_books
from headless_jax.data.split import split_document


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
