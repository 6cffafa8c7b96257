"""Task readers (GLUE TSV and TFDS, XNLI TSV, the books task), encoding, and their errors — on tiny fixtures."""
import numpy as np
import pytest

from headless_jax.data import book_names, split_books
from headless_jax.data.errors import DataError, MissingDataError
from headless_jax.data.tokenizer import Tokenizer
from headless_jax.downstream import books, glue
from headless_jax.downstream.finetune import parse_tasks
from headless_jax.downstream.finetune_config import classify_base_config
from headless_jax.downstream.encode import encode, truncate_pair
from headless_jax.downstream.examples import Example
from headless_jax.downstream.tasks import load_task


def write_tsv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(row) + "\n" for row in rows))


def test_glue_tsv_layouts(tmp_path):
    # CoLA: no header; source, label, original label, sentence
    write_tsv(tmp_path / "CoLA/train.tsv", [["gj04", "1", "", "Our friends won't buy this."],
                                            ["gj04", "0", "*", "They drank the pub."]])
    write_tsv(tmp_path / "CoLA/dev.tsv", [["gj04", "0", "*", "Him left."]])
    cola = glue.load("cola", "tsv", str(tmp_path))
    assert cola.train == [Example("Our friends won't buy this.", None, 1), Example("They drank the pub.", None, 0)]
    assert cola.eval == {"validation": [Example("Him left.", None, 0)]} and cola.metrics == ("mcc",)

    # MRPC: named columns in another order; quotes kept verbatim (QUOTE_NONE)
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    for split in ("train", "dev"):
        write_tsv(tmp_path / f"MRPC/{split}.tsv", [header, ["1", "7", "8", 'He said "yes".', "He agreed."]])
    mrpc = glue.load("mrpc", "tsv", str(tmp_path))
    assert mrpc.train == [Example('He said "yes".', "He agreed.", 1)] and mrpc.num_classes == 2

    # STS-B: regression, float labels
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"]
    for split in ("train", "dev"):
        write_tsv(tmp_path / f"STS-B/{split}.tsv", [header, ["0", "g", "f", "2012", "1", "s", "s", "A cat.",
                                                             "A dog.", "3.25"]])
    stsb = glue.load("stsb", "tsv", str(tmp_path))
    assert stsb.train == [Example("A cat.", "A dog.", 3.25)] and stsb.num_classes == 0

    # MNLI: matched and mismatched dev files, labels by name in TFDS's class order; gold_label is the last column
    header = ["index", "promptID", "pairID", "genre", "s1bp", "s2bp", "s1p", "s2p", "sentence1", "sentence2",
              "label1", "gold_label"]
    write_tsv(tmp_path / "MNLI/train.tsv", [header, ["0"] * 8 + ["P.", "H.", "neutral", "contradiction"]])
    for name, label in (("dev_matched", "entailment"), ("dev_mismatched", "neutral")):
        write_tsv(tmp_path / f"MNLI/{name}.tsv", [header, ["0"] * 8 + ["P.", "H.", "x", label]])
    mnli = glue.load("mnli", "tsv", str(tmp_path))
    assert mnli.train[0].label == 2
    assert {split: [e.label for e in examples] for split, examples in mnli.eval.items()} == {
        "validation_matched": [0], "validation_mismatched": [1]}
    assert mnli.score_splits == ("validation_matched", "validation_mismatched")


def test_short_qqp_rows_are_skipped(tmp_path):
    header = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    for split in ("train", "dev"):
        write_tsv(tmp_path / f"QQP/{split}.tsv", [header, ["1", "2", "3", "Why?", "How?", "0"], ["4", "5", "6 broken"]])
    assert glue.load("qqp", "tsv", str(tmp_path)).train == [Example("Why?", "How?", 0)]


def test_tsv_errors_name_the_file_and_fix(tmp_path):
    with pytest.raises(MissingDataError, match=r"RTE/train.tsv: no such file; point --config.data_dir"):
        glue.load("rte", "tsv", str(tmp_path))
    write_tsv(tmp_path / "RTE/train.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "maybe"]])
    with pytest.raises(DataError, match=r"RTE/train.tsv:2: label 'maybe' is not one of \('entailment', "):
        glue.load("rte", "tsv", str(tmp_path))
    write_tsv(tmp_path / "SST-2/train.tsv", [["text", "label"], ["good", "1"]])
    with pytest.raises(DataError, match=r"header has no column 'sentence'.*not the GLUE SST-2 layout"):
        glue.load("sst2", "tsv", str(tmp_path))
    with pytest.raises(MissingDataError, match="data_source=tsv needs --config.data_dir"):
        glue.load("sst2", "tsv", "")


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'sst3'; known tasks: cola, sst2, .*, xnli, books"):
        parse_tasks("sst2,sst3")
    with pytest.raises(ValueError, match=r"unknown task 'imdb'; known tasks: cola"):
        load_task("imdb", classify_base_config("imdb"), 0.05)
    assert parse_tasks("glue,books") == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "books")


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """Real TFDS `glue/sst2`, `glue/stsb`, `glue/mnli` and `xnli` datasets (TFDS's own builders and features, tiny
    made-up examples instead of the downloads), in ArrayRecord, built without TensorFlow."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core import registered
    from tensorflow_datasets.text import glue as tfds_glue
    from tensorflow_datasets.text import xnli as tfds_xnli

    rows = {"sst2": lambda i: {"sentence": f"sentence {i}", "label": i % 2, "idx": i},
            "stsb": lambda i: {"sentence1": f"a {i}", "sentence2": f"b {i}", "label": i / 2, "idx": i},
            "mnli": lambda i: {"premise": f"p {i}", "hypothesis": f"h {i}", "label": i % 3, "idx": i}}
    splits = {"sst2": ("train", "validation"), "stsb": ("train", "validation"),
              "mnli": ("train", "validation_matched", "validation_mismatched")}
    with registered.skip_registration():  # the names of TFDS's own builders, which then read the files
        class TinyGlue(tfds_glue.Glue):
            name = "glue"

            def _split_generators(self, dl_manager):
                task = self.builder_config.name
                return {split: self._rows(task, 3 * i, 3 * i + 3) for i, split in enumerate(splits[task])}

            def _rows(self, task, start, stop):
                for i in range(start, stop):
                    yield i, rows[task](i)

        class TinyXnli(tfds_xnli.Xnli):
            name = "xnli"

            def _split_generators(self, dl_manager):
                return {"test": self._rows(), "validation": self._rows()}

            def _rows(self):
                for i in range(2):  # the second pair lacks a German hypothesis
                    languages = ("fr", "de") if i == 0 else ("fr",)
                    yield i, {"premise": {lang: f"{lang} p{i}" for lang in tfds_xnli._LANGUAGES},
                              "hypothesis": {lang: f"{lang} h{i}" for lang in languages}, "label": i + 1}

    data_dir = tmp_path_factory.mktemp("tfds")
    for task in rows:
        TinyGlue(config=task, data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    TinyXnli(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
    return str(data_dir)


def test_glue_from_tfds(tfds_dir):
    sst2 = glue.load("sst2", "tfds", tfds_dir)
    assert sorted(sst2.train, key=lambda e: e.text_a) == [Example(f"sentence {i}", None, i % 2) for i in range(3)]
    assert sorted(e.text_a for e in sst2.eval["validation"]) == ["sentence 3", "sentence 4", "sentence 5"]
    stsb = glue.load("stsb", "tfds", tfds_dir)
    assert sorted((e.text_a, e.text_b, e.label) for e in stsb.train) == [(f"a {i}", f"b {i}", i / 2) for i in range(3)]
    assert all(isinstance(e.label, float) for e in stsb.train)


def test_xnli_from_tfds(tfds_dir):
    config = classify_base_config("xnli")
    config.update(data_source="tfds", data_dir=tfds_dir)
    config.xnli.update(languages="fr,de", split="dev")
    task = load_task("xnli", config, 0.05)
    assert sorted(e.text_a for e in task.train) == ["p 0", "p 1", "p 2"]
    assert sorted((e.text_a, e.text_b, e.label) for e in task.eval["dev_fr"]) == [("fr p0", "fr h0", 1),
                                                                                  ("fr p1", "fr h1", 2)]
    assert task.eval["dev_de"] == [Example("de p0", "de h0", 1)] and task.score_splits == ("dev_fr", "dev_de")


def test_missing_tfds_dataset_names_the_fix(tfds_dir):
    with pytest.raises(MissingDataError, match=r"TFDS cannot open glue/rte split train .*--file_format=array_record"):
        glue.load("rte", "tfds", tfds_dir)


def test_xnli_tsv_by_language(tmp_path):
    header = ["language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
              "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID"]
    write_tsv(tmp_path / "XNLI/xnli.test.tsv", [header, ["fr", "neutral", "", "", "", "", "Il pleut.", "Il fait beau.",
                                                         "1", "2"],
                                                ["de", "contradiction", "", "", "", "", "Ja.", "Nein.", "1", "3"]])
    mnli = ["index", "promptID", "pairID", "genre", "a", "b", "c", "d", "sentence1", "sentence2", "label1",
            "gold_label"]
    for name in ("train", "dev_matched", "dev_mismatched"):
        write_tsv(tmp_path / f"GLUE/MNLI/{name}.tsv", [mnli, ["0"] * 8 + ["P.", "H.", "x", "entailment"]])
    config = classify_base_config("xnli")
    config.update(data_source="tsv", data_dir=str(tmp_path / "GLUE"))
    config.xnli.update(dir=str(tmp_path / "XNLI"), languages="fr,de")
    task = load_task("xnli", config, 0.05)
    assert task.train == [Example("P.", "H.", 0)]
    assert task.eval == {"test_fr": [Example("Il pleut.", "Il fait beau.", 1)], "test_de": [Example("Ja.", "Nein.", 2)]}
    assert task.score_splits == ("test_fr", "test_de")
    config.xnli.languages = "fr,sw"
    with pytest.raises(DataError, match=r"xnli.test.tsv: no examples for \['test_sw'\]"):
        load_task("xnli", config, 0.05)
    config.xnli.dir = str(tmp_path / "nowhere")
    with pytest.raises(MissingDataError, match="xnli.test.tsv: no such file; point --config.xnli.dir"):
        load_task("xnli", config, 0.05)


def test_books_task_uses_only_heldout_text_balanced_and_deterministic():
    cfg = classify_base_config("books").books
    cfg.update(passage_words=40, passages_per_book=10, split_fractions=(0.6, 0.2, 0.2))
    task = books.load(0.05, cfg)
    names = book_names()
    assert task.num_classes == len(names) == 7 and task.score_splits == ("test",)
    tails = split_books(0.05)
    for split, examples in [("train", task.train), *task.eval.items()]:
        counts = np.bincount([e.label for e in examples], minlength=7)
        assert (counts == {"train": 6, "dev": 2, "test": 2}[split]).all(), split
        for example in examples:
            assert len(example.text_a.split()) == 40
            train_text, heldout = tails[names[example.label]]
            words = " ".join(heldout.split())
            assert example.text_a in words and example.text_a not in " ".join(train_text.split())
    assert not {e.text_a for e in task.train} & {e.text_a for e in task.eval["test"]}
    assert books.load(0.05, cfg) == task
    with pytest.raises(DataError, match="held none out"):
        books.load(0.0, cfg)


def test_books_low_resource_keeps_each_books_first_passages_and_the_same_eval_splits():
    cfg = classify_base_config("books").books
    cfg.update(passage_words=40, passages_per_book=10)
    full = books.load(0.05, cfg)
    cfg.train_passages_per_book = 2
    few = books.load(0.05, cfg)
    assert few.eval == full.eval
    want = [e for label in range(7) for e in [x for x in full.train if x.label == label][:2]]
    assert few.train == want and len(want) == 14
    cfg.train_passages_per_book = 7
    with pytest.raises(DataError, match="train_passages_per_book=7 exceeds the 6 training passages"):
        books.load(0.05, cfg)
    cfg.train_passages_per_book = -1
    with pytest.raises(DataError, match="train_passages_per_book=-1 is negative; give K > 0"):
        books.load(0.05, cfg)


def test_encoding_pairs_and_truncation(tmp_path):
    assert truncate_pair([1, 2, 3, 4], [5, 6], 4) == ([1, 2], [5, 6])
    assert truncate_pair([1, 2], [5, 6, 7, 8, 9], 4) == ([1, 2], [5, 6])
    assert truncate_pair([1, 2, 3], [5, 6, 7], 5) == ([1, 2, 3], [5, 6])  # a tie shortens the second
    tokenizer = tiny_tokenizer(tmp_path)
    a, b = "It is a truth universally acknowledged", "that a single man"
    pair = encode(tokenizer, [Example(a, b, 1)], 64)
    ids_a, ids_b = tokenizer.encode(a), tokenizer.encode(b)
    want = [tokenizer.cls_id, *ids_a, tokenizer.sep_id, *ids_b, tokenizer.sep_id]
    np.testing.assert_array_equal(pair["tokens"][0], want + [tokenizer.pad_id] * (64 - len(want)))
    np.testing.assert_array_equal(pair["segment_ids"][0], [1] * len(want) + [0] * (64 - len(want)))
    np.testing.assert_array_equal(pair["positions"][0], np.arange(64))
    assert pair["labels"].dtype == np.int32 and pair["labels"].tolist() == [1]
    short = encode(tokenizer, [Example(a, b, 0.5)], 8)
    assert short["tokens"].shape == (1, 8) and short["labels"].dtype == np.float32
    assert short["tokens"][0, 0] == tokenizer.cls_id and (short["tokens"][0] == tokenizer.sep_id).sum() == 2
    assert short["tokens"][0, -1] == tokenizer.sep_id and short["segment_ids"].all()
    single = encode(tokenizer, [Example(a, None, 0)], 64)
    assert single["tokens"][0, len(ids_a) + 1] == tokenizer.sep_id and single["segment_ids"][0].sum() == len(ids_a) + 2


def tiny_tokenizer(tmp_path) -> Tokenizer:
    from headless_jax.data.sources import parse_sources
    from headless_jax.data.tokenizer import train_sentencepiece
    from headless_jax.data import read_book

    text = tmp_path / "book.txt"
    text.write_text(read_book(book_names()[0])[:40_000])
    return Tokenizer(train_sentencepiece(parse_sources(f"text:{text}"), 384, 0.05, 40_000), "tiny", 384)
