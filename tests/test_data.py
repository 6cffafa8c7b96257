"""Tokenizer, token cache, packing, mixing and the grain iterators, on a tiny corpus (vocab 512, L = 32)."""
import io
import json
import math

import ml_collections
import numpy as np
import pytest
import sentencepiece as spm
from absl import flags

from headless_jax.config import base_config
from headless_jax.data import (DataError, MissingDataError, Tokenizer, build_data, eval_batches, load_tokenizer,
                               mixing_weights, parse_sources, read_book, train_iterator)
from headless_jax.data import store as store_lib
from headless_jax.data import tokenizer as tokenizer_lib
from headless_jax.data.packing import PackedRows
from headless_jax.data.pipeline import mixed_row_ids, token_store
from headless_jax.data.store import TokenStream

VOCAB, L, B = 512, 32, 8
BOOKS = ("austen_emma", "austen_persuasion", "melville_mobydick")
MARKER = "XYZZY"  # ends every tiny document, inside its held-out tail


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """Three 30k-character excerpts of the embedded books as text files, each ending in a marker paragraph."""
    directory = tmp_path_factory.mktemp("corpus")
    for name in BOOKS:
        (directory / f"{name}.txt").write_text(read_book(name)[2000:32000] + f"\n\n{MARKER} the end of {name}.\n")
    return directory


def tiny_config(sources: str, tokenizer_model: str = "", **data) -> ml_collections.ConfigDict:
    config = base_config()
    config.model.vocab_size = VOCAB
    config.train.global_batch_size = B
    config.data.update(sources=sources, seq_len=L, heldout_fraction=0.1, tokenizer_model=tokenizer_model)
    config.data.update(data)
    return config


@pytest.fixture(scope="module")
def tokenizer_path(corpus_dir, tmp_path_factory) -> str:
    cache_dir = tmp_path_factory.mktemp("cache")
    load_tokenizer(tiny_config(f"text:{corpus_dir}/*.txt"), cache_dir)
    (path,) = cache_dir.glob("tokenizer_*.model")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_path) -> Tokenizer:
    return Tokenizer.from_file(tokenizer_path, VOCAB)


@pytest.fixture
def config(corpus_dir, tokenizer_path) -> ml_collections.ConfigDict:
    return tiny_config(f"text:{corpus_dir}/*.txt", tokenizer_path)


def token_stream(spec: str, tokenizer: Tokenizer, cache_dir, split: str = "train") -> TokenStream:
    """The `split` tokens of the one source `spec`, held-out fraction 0.1 as in tiny_config."""
    (source,) = parse_sources(spec)
    return token_store(tiny_config(spec), tokenizer, cache_dir).streams(source.name, split)


def only_source(batches_by_source: dict[str, list[dict]]) -> list[dict]:
    (batches,) = batches_by_source.values()
    return batches


def take(iterator, n: int) -> list[dict]:
    return [next(iterator) for _ in range(n)]


def assert_same_batches(a: list[dict], b: list[dict]):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def write_spm(path, vocab_size: int, **options) -> str:
    """A SentencePiece model trained directly, not by headless_jax (so without its special tokens)."""
    model = io.BytesIO()
    sentences = read_book("austen_persuasion")[:50_000].split("\n")
    spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
                                   minloglevel=2, **options)
    path.write_bytes(model.getvalue())
    return str(path)


# --- tokenizer


@pytest.mark.parametrize("text", ["It is a truth universally acknowledged, that a single man.",
                                  "Two  spaces,\n\nnew paragraph,\ttab, trailing ",
                                  " leading space, naïve café — 東京 🙂 £5"])
def test_tokenizer_round_trip_is_lossless(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch([text, text]) == [ids, ids]
    assert all(0 <= i < VOCAB for i in ids) and tokenizer.unk_id not in ids  # byte fallback, never <unk>


def test_tokenizer_special_ids_are_fixed(tokenizer):
    assert tokenizer.vocab_size == VOCAB
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 1, 2, 3)
    assert (tokenizer.mask_id, tokenizer.cls_id, tokenizer.sep_id) == (4, 5, 6)
    assert tokenizer.special_ids == (0, 1, 2, 3, 4, 5, 6)
    pieces = [tokenizer.processor.id_to_piece(i) for i in tokenizer.special_ids]
    assert pieces == ["<pad>", "<unk>", "<s>", "</s>", "[MASK]", "[CLS]", "[SEP]"]
    assert tokenizer.encode("[MASK]")[-1] == tokenizer.mask_id


def test_tokenizer_is_trained_once_then_read_from_the_cache(corpus_dir, tmp_path, monkeypatch):
    config = tiny_config(f"text:{corpus_dir}/*.txt")
    first = load_tokenizer(config, tmp_path)
    (path,) = tmp_path.glob("tokenizer_*.model")
    mtime = path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("retrained")

    monkeypatch.setattr(tokenizer_lib, "train_sentencepiece", fail)
    assert load_tokenizer(config, tmp_path).fingerprint == first.fingerprint
    assert path.stat().st_mtime_ns == mtime and len(list(tmp_path.iterdir())) == 1  # no temporary files left
    config.model.vocab_size = VOCAB + 8  # another vocabulary is another cache entry
    with pytest.raises(AssertionError, match="retrained"):
        load_tokenizer(config, tmp_path)


def test_tokenizer_without_the_special_tokens_is_rejected(config, tmp_path):
    config.data.tokenizer_model = write_spm(tmp_path / "plain.model", VOCAB, pad_id=0, unk_id=1, bos_id=2, eos_id=3)
    with pytest.raises(DataError, match=r"plain.model: lacks \[MASK\] at id 4; retrain it.*user_defined_symbols"):
        load_tokenizer(config, tmp_path)
    config.data.tokenizer_model = write_spm(tmp_path / "default.model", VOCAB)  # SentencePiece's default ids
    with pytest.raises(DataError, match=r"default.model: pad_id is -1, needs 0; retrain it"):
        load_tokenizer(config, tmp_path)


def test_tokenizer_with_another_vocabulary_size_names_the_fix(config, tokenizer_path):
    config.model.vocab_size = 1000
    with pytest.raises(DataError, match=rf"{tokenizer_path}: has {VOCAB} pieces but model.vocab_size=1000; "
                                        rf"set --config.model.vocab_size={VOCAB}"):
        load_tokenizer(config, "unused")


def test_tokenizer_file_errors(config, tmp_path):
    config.data.tokenizer_model = str(tmp_path / "none.model")
    with pytest.raises(MissingDataError, match=r"no such file .*none.model"):
        load_tokenizer(config, tmp_path)
    (tmp_path / "junk.model").write_text("not a model")
    config.data.tokenizer_model = str(tmp_path / "junk.model")
    with pytest.raises(DataError, match=r"junk.model: not a SentencePiece model"):
        load_tokenizer(config, tmp_path)


def test_too_little_text_for_the_vocabulary_names_the_fix(tmp_path):
    (tmp_path / "tiny.txt").write_text("a few words only, " * 20)
    with pytest.raises(DataError, match=r"cannot train a tokenizer of model.vocab_size=512 .*lower "
                                        r"--config.model.vocab_size"):
        load_tokenizer(tiny_config(f"text:{tmp_path}/tiny.txt"), tmp_path)


# --- packing


def hand_made_stream() -> TokenStream:
    """Documents of 3, 6 and 2 tokens (eos included), tokens 10, 11, ..."""
    return TokenStream(tokens=np.arange(10, 21, dtype=np.uint16), doc_ends=np.array([3, 9, 11]))


def all_rows(stream: TokenStream, seq_len: int, packing: str, pad_id: int = 0) -> dict[str, np.ndarray]:
    packed = PackedRows(stream, seq_len, packing, pad_id)
    return packed.read(np.arange(len(packed)))


def test_document_packing_on_a_hand_made_example():
    rows = all_rows(hand_made_stream(), seq_len=4, packing="documents")
    # next fit: [doc0 + pad], [doc1 chunk 1], [doc1 chunk 2 | doc2]
    assert rows["tokens"].tolist() == [[10, 11, 12, 0], [13, 14, 15, 16], [17, 18, 19, 20]]
    assert rows["segment_ids"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 2, 2]]
    assert rows["positions"].tolist() == [[0, 1, 2, 0], [0, 1, 2, 3], [0, 1, 0, 1]]
    assert all(values.dtype == np.int32 for values in rows.values())
    many_short = all_rows(TokenStream(np.arange(1, 6), np.arange(1, 6)), seq_len=4, packing="documents")
    assert many_short["segment_ids"].tolist() == [[1, 2, 3, 4], [1, 0, 0, 0]]
    assert many_short["positions"].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0]]
    rows_2_and_0 = PackedRows(hand_made_stream(), 4, "documents", 0).read(np.array([2, 0]))
    assert rows_2_and_0["tokens"].tolist() == [rows["tokens"][2].tolist(), rows["tokens"][0].tolist()]


def test_window_packing_on_a_hand_made_example():
    rows = all_rows(hand_made_stream(), seq_len=4, packing="windows")
    assert rows["tokens"].tolist() == [[10, 11, 12, 13], [14, 15, 16, 17]]  # the remainder is dropped
    assert rows["segment_ids"].tolist() == [[1] * 4] * 2 and rows["positions"].tolist() == [[0, 1, 2, 3]] * 2


def test_document_packing_keeps_every_token_once_and_documents_apart(corpus_dir, tokenizer, tmp_path):
    paragraphs = [p for name in BOOKS for p in read_book(name)[2000:30000].split("\n\n") if p.strip()]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs))
    stream = token_stream(f"jsonl:{tmp_path}/docs.jsonl", tokenizer, tmp_path)
    assert len(stream.doc_ends) > 100 and stream.doc_ends.max() > 2 * L  # short documents and long ones
    rows = all_rows(stream, L, "documents", tokenizer.pad_id)
    kept = []
    for tokens, segments, positions in zip(rows["tokens"], rows["segment_ids"], rows["positions"]):
        length = int((segments > 0).sum())
        assert (segments[length:] == 0).all() and (tokens[length:] == tokenizer.pad_id).all()
        assert (np.diff(segments[:length]) >= 0).all() and segments[0] == 1
        for segment in np.unique(segments[:length]):
            tokens_in_segment = tokens[segments == segment]
            assert positions[segments == segment].tolist() == list(range(len(tokens_in_segment)))
            # eos ends a document: inside a segment it may only come last
            assert tokenizer.eos_id not in tokens_in_segment[:-1].tolist()
            if tokens_in_segment[-1] != tokenizer.eos_id:  # a document cut at the end of a full row
                assert length == L and segment == segments[length - 1]
        kept.append(tokens[:length])
    assert np.array_equal(np.concatenate(kept), np.asarray(stream.tokens))


# --- mixing


def test_mixing_weights_match_a_float64_reference():
    counts, alpha = [1000, 10, 100], 0.3
    powers = [math.pow(n, alpha) for n in counts]
    np.testing.assert_allclose(mixing_weights(counts, alpha), [p / math.fsum(powers) for p in powers], rtol=1e-15)
    np.testing.assert_allclose(mixing_weights(counts, 1.0), np.array(counts) / 1110, rtol=1e-15)
    np.testing.assert_allclose(mixing_weights(counts, 0.0), [1 / 3] * 3, rtol=1e-15)


def test_mixed_row_ids_follow_the_weights_and_reshuffle_every_epoch():
    counts = [20_000, 2000, 500]  # grain's index shuffle is slow on tiny sources: keep them realistic
    mixed = mixed_row_ids(counts, 0.3, seed=0)
    ids = np.array([mixed[i] for i in range(6000)])
    frequencies = np.bincount(ids[:, 0], minlength=3) / len(ids)
    np.testing.assert_allclose(frequencies, mixing_weights(counts, 0.3), atol=0.005)
    rows_of_small = ids[ids[:, 0] == 2, 1]
    assert sorted(rows_of_small[:500]) == list(range(500)) == sorted(rows_of_small[500:1000])  # each epoch: all rows
    assert rows_of_small[:500].tolist() != rows_of_small[500:1000].tolist() != list(range(500))  # in a new order
    assert ids[:100].tolist() == [list(mixed_row_ids(counts, 0.3, seed=0)[i]) for i in range(100)]
    assert ids[:100].tolist() != [list(mixed_row_ids(counts, 0.3, seed=1)[i]) for i in range(100)]


def test_train_iterator_mixes_sources(corpus_dir, tokenizer_path, tokenizer, tmp_path):
    sources = [f"text:{corpus_dir}/austen_emma.txt", f"text:{corpus_dir}/melville_mobydick.txt"]
    config = tiny_config(",".join(sources), tokenizer_path, mixing_alpha=0.0)
    rows_by_source = [set(map(tuple, all_rows(token_stream(spec, tokenizer, tmp_path), L, "windows")["tokens"]))
                      for spec in sources]
    batches = take(train_iterator(config, tokenizer, tmp_path), 50)
    origins = [[tuple(row) in rows for rows in rows_by_source] for batch in batches for row in batch["tokens"]]
    assert all(sum(origin) == 1 for origin in origins)
    assert np.mean([origin[0] for origin in origins]) == pytest.approx(0.5, abs=0.01)  # alpha 0: sources alike


# --- training and evaluation batches


def test_train_batches_depend_on_the_seed_only(config, tokenizer, tmp_path):
    first = take(train_iterator(config, tokenizer, tmp_path), 3)
    assert {k: (v.shape, v.dtype) for k, v in first[0].items()} == {
        **{k: ((B, L), np.int32) for k in ("tokens", "segment_ids", "positions")}, "source_ids": ((B,), np.int32)}
    assert_same_batches(first, take(train_iterator(config, tokenizer, tmp_path), 3))
    config.seed = 1
    other = take(train_iterator(config, tokenizer, tmp_path), 3)
    assert not np.array_equal(first[0]["tokens"], other[0]["tokens"])


def test_heldout_tail_is_never_trained_on(config, tokenizer, tmp_path):
    train = token_stream(config.data.sources, tokenizer, tmp_path)
    heldout = token_stream(config.data.sources, tokenizer, tmp_path, "heldout")
    assert MARKER not in tokenizer.decode(train.tokens)
    assert all(f"{MARKER} the end of {name}" in tokenizer.decode(heldout.tokens) for name in BOOKS)
    # one epoch of the iterator reads every training window, and only those
    windows = set(map(tuple, all_rows(train, L, "windows")["tokens"]))
    seen = {tuple(row) for batch in take(train_iterator(config, tokenizer, tmp_path), len(windows) // B + 1)
            for row in batch["tokens"]}
    assert seen == windows


def test_restored_iterator_continues_the_same_stream(config, tokenizer, tmp_path):
    iterator = train_iterator(config, tokenizer, tmp_path)
    epoch_batches = len(token_stream(config.data.sources, tokenizer, tmp_path).tokens) // L // B
    take(iterator, epoch_batches - 3)  # the batches compared below cross into the second epoch
    state = iterator.get_state()
    expected = take(iterator, 6)
    restored = train_iterator(config, tokenizer, tmp_path)
    restored.set_state(state)
    assert_same_batches(take(restored, 6), expected)


def test_process_shards_concatenate_to_the_global_batch(config, tokenizer, tmp_path):
    global_batches = take(train_iterator(config, tokenizer, tmp_path), 3)
    shards = [take(train_iterator(config, tokenizer, tmp_path, p, 4), 3) for p in range(4)]
    for step, batch in enumerate(global_batches):
        assert all(shards[p][step]["tokens"].shape == (B // 4, L) for p in range(4))
        assert_same_batches([batch], [{k: np.concatenate([s[step][k] for s in shards]) for k in batch}])
    global_eval = only_source(eval_batches(config, tokenizer, tmp_path, 2))
    eval_shards = [only_source(eval_batches(config, tokenizer, tmp_path, 2, p, 4)) for p in range(4)]
    for step, batch in enumerate(global_eval):
        assert_same_batches([batch], [{k: np.concatenate([s[step][k] for s in eval_shards]) for k in batch}])
    with pytest.raises(DataError, match=r"global_batch_size=8 does not split over 3 processes"):
        train_iterator(config, tokenizer, tmp_path, 0, 3)


def test_eval_batches_are_fixed_and_spread_over_the_heldout_rows(config, tokenizer, tmp_path):
    rows = all_rows(token_stream(config.data.sources, tokenizer, tmp_path, "heldout"), L, "windows")["tokens"]
    batches = only_source(eval_batches(config, tokenizer, tmp_path, 2))
    assert_same_batches(batches, only_source(eval_batches(config, tokenizer, tmp_path, 2)))
    picked = np.concatenate([b["tokens"] for b in batches])
    np.testing.assert_array_equal(picked, rows[np.arange(2 * B) * len(rows) // (2 * B)])
    many = np.concatenate([b["tokens"] for b in only_source(eval_batches(config, tokenizer, tmp_path, len(rows)))])
    np.testing.assert_array_equal(many, rows[np.arange(len(rows) * B) % len(rows)])  # wraps around


def test_empty_heldout_split_is_an_error(config, tokenizer, tmp_path):
    config.data.heldout_fraction = 0.0
    with pytest.raises(DataError, match=r"held-out split .* raise --config.data.heldout_fraction"):
        eval_batches(config, tokenizer, tmp_path, 1)


def test_bad_packing_and_too_short_sources_are_errors(config, tokenizer, tmp_path):
    config.data.packing = "concat"
    with pytest.raises(DataError, match=r"data.packing='concat' is unknown"):
        train_iterator(config, tokenizer, tmp_path)
    config.data.packing = "windows"
    config.data.seq_len = 100_000
    with pytest.raises(DataError, match=r"training tokens, less than one row of data.seq_len=100000"):
        train_iterator(config, tokenizer, tmp_path)


def test_documents_packing_through_the_iterator(config, tokenizer, tmp_path):
    config.data.packing = "documents"
    batch = next(train_iterator(config, tokenizer, tmp_path))
    assert batch["tokens"].shape == (B, L) and (batch["segment_ids"] >= 1).all()  # long documents fill rows


def test_build_data_caches_tokenizer_and_tokens_in_the_workdir(corpus_dir, tmp_path, monkeypatch):
    config = tiny_config(f"text:{corpus_dir}/*.txt")
    tokenizer, train, evals = build_data(config, tmp_path)
    cached = sorted(path.name for path in (tmp_path / "cache").iterdir())
    assert len(cached) == 2 and cached[0].startswith("store_") and cached[1].startswith("tokenizer_")
    first = take(train, 2)
    evals = only_source(evals)
    assert len(evals) == config.train.eval_batches and evals[0]["tokens"].shape == (B, L)

    def fail(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(tokenizer_lib, "train_sentencepiece", fail)
    monkeypatch.setattr(store_lib, "tokenize_documents", fail)
    again_tokenizer, again_train, again_evals = build_data(config, tmp_path)
    assert again_tokenizer.fingerprint == tokenizer.fingerprint
    assert_same_batches(take(again_train, 2), first)
    assert_same_batches(only_source(again_evals), evals)


def test_worker_processes_give_the_same_stream(config, tokenizer, tmp_path):
    flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags; a training binary parses them
    expected = take(train_iterator(config, tokenizer, tmp_path), 4)
    config.data.worker_count = 1
    iterator = train_iterator(config, tokenizer, tmp_path)
    assert_same_batches(take(iterator, 2), expected[:2])
    state = iterator.get_state()
    restored = train_iterator(config, tokenizer, tmp_path)
    restored.set_state(state)
    assert_same_batches(take(restored, 2), expected[2:])
