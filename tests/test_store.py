"""The token store: the same tokens as tokenising the documents one by one, resumable, parallel, refusing
another configuration's store, read mapped or by ranges; preparation as a command; mixture weights."""
import json
import pathlib

import numpy as np
import pytest

from headless_jax.config import base_config
from headless_jax.data import DataError, TokenStore, book_names, manifest, parse_sources, read_book
from headless_jax.data import store as store_lib
from headless_jax.data.pipeline import mixed_row_ids, token_store
from headless_jax.data.split import split_document
from headless_jax.data.store import ShardedTokens
from headless_jax.data.tokenizer import Tokenizer, train_sentencepiece
from headless_jax.prepare import prepare

VOCAB = 512


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six JSON Lines files of paragraphs of the novels (a unit per file, several 10k-character shards each)."""
    directory = tmp_path_factory.mktemp("corpus")
    for i, name in enumerate(book_names()[:6]):
        paragraphs = [p for p in read_book(name)[5000:5000 + 12_000 * (i + 1)].split("\n\n") if p.strip()]
        (directory / f"{i}.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs))
    return directory


def documents_of(corpus) -> list[str]:
    return [json.loads(line)["text"] for path in sorted(corpus.glob("*.jsonl")) for line in path.open()]


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return Tokenizer(train_sentencepiece(parse_sources(f"jsonl:{corpus}/*.jsonl"), VOCAB, 0.1, 10**6), "test", VOCAB)


def config_of(sources: str, **data):
    c = base_config()
    c.model.vocab_size = VOCAB
    c.data.update(sources=sources, heldout_fraction=0.1, shard_chars=10_000, **data)
    return c


def store_of(directory, config, tokenizer) -> TokenStore:
    sources = parse_sources(config.data.sources)
    return TokenStore(directory, manifest(sources, tokenizer, config.data.heldout_fraction, config.data.shard_chars))


def files(directory) -> dict[str, bytes]:
    root = pathlib.Path(directory)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def reference(documents: list[str], tokenizer, split: int) -> np.ndarray:
    """Tokenising each document's part on its own, eos after each: what the store must hold, in order."""
    return np.concatenate([tokenizer.encode(part) + [tokenizer.eos_id] for part in
                           (split_document(d, 0.1)[split] for d in documents) if part])


def test_the_store_holds_the_tokens_of_each_document_in_order(corpus, tokenizer, tmp_path):
    config = config_of(f"jsonl:{corpus}/*.jsonl")
    store = store_of(tmp_path, config, tokenizer)
    assert store.build(parse_sources(config.data.sources), tokenizer) > 6  # several shards per large file
    (source,) = parse_sources(config.data.sources)
    documents = documents_of(corpus)
    for split_index, split in enumerate(store_lib.SPLITS):
        stream = store.streams(source.name, split)
        want = reference(documents, tokenizer, split_index)
        np.testing.assert_array_equal(stream.tokens[np.arange(len(want))], want)
        assert len(stream.tokens) == len(want)
        assert stream.doc_ends[-1] == len(want) and len(stream.doc_ends) == sum(bool(split_document(d, 0.1)[split_index])
                                                                                for d in documents)
        assert all(want[end - 1] == tokenizer.eos_id for end in stream.doc_ends)


def test_the_embedded_store_equals_tokenising_the_books_one_by_one(tmp_path):
    config = config_of("embedded", tokenizer_sample_chars=300_000)
    config.data.shard_chars = 8_000_000
    sources = parse_sources("embedded")
    tokenizer = Tokenizer(train_sentencepiece(sources, VOCAB, 0.1, 300_000), "embedded", VOCAB)
    stream = token_store(config, tokenizer, tmp_path).streams("embedded", "train")
    want = reference([read_book(name) for name in book_names()], tokenizer, 0)
    assert len(stream.tokens) == len(want)
    np.testing.assert_array_equal(stream.tokens[np.arange(len(want))], want)


def test_an_interrupted_build_resumes_with_only_the_missing_shards(corpus, tokenizer, tmp_path, monkeypatch):
    config = config_of(f"jsonl:{corpus}/*.jsonl")
    sources = parse_sources(config.data.sources)
    whole = store_of(tmp_path / "whole", config, tokenizer)
    total = whole.build(sources, tokenizer)
    real, calls = store_lib.tokenize_documents, []

    def dies_on_the_fifth_shard(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real(*args)

    monkeypatch.setattr(store_lib, "tokenize_documents", dies_on_the_fifth_shard)
    interrupted = store_of(tmp_path / "interrupted", config, tokenizer)
    with pytest.raises(KeyboardInterrupt):
        interrupted.build(sources, tokenizer)
    assert interrupted.missing_units()
    with pytest.raises(DataError, match="is incomplete .* headless_jax.prepare"):
        interrupted.streams(sources[0].name, "train")
    monkeypatch.setattr(store_lib, "tokenize_documents", real)
    assert interrupted.build(sources, tokenizer) == total - 4
    assert files(tmp_path / "interrupted") == files(tmp_path / "whole")


def test_two_workers_build_the_same_store_as_one(corpus, tokenizer, tmp_path):
    config = config_of(f"jsonl:{corpus}/*.jsonl")
    sources = parse_sources(config.data.sources)
    store_of(tmp_path / "one", config, tokenizer).build(sources, tokenizer)
    two = store_of(tmp_path / "two", config, tokenizer)
    first = two.build(sources, tokenizer, worker=0, workers=2)
    assert two.missing_units() and first > 0
    second = two.build(sources, tokenizer, worker=1, workers=2)
    assert not two.missing_units() and second > 0
    assert files(tmp_path / "two") == files(tmp_path / "one")


def test_a_store_of_another_configuration_is_refused(corpus, tokenizer, tmp_path):
    config = config_of(f"jsonl:{corpus}/*.jsonl")
    store_of(tmp_path, config, tokenizer).build(parse_sources(config.data.sources), tokenizer)
    config.data.heldout_fraction = 0.2
    with pytest.raises(DataError, match="another configuration .* heldout_fraction"):
        store_of(tmp_path, config, tokenizer).build(parse_sources(config.data.sources), tokenizer)
    other = Tokenizer(train_sentencepiece(parse_sources(f"jsonl:{corpus}/0.jsonl"), VOCAB, 0.1, 10**6), "other", VOCAB)
    config.data.update(heldout_fraction=0.1, store=str(tmp_path))
    with pytest.raises(DataError, match="another configuration .* tokenizer"):
        token_store(config, other, tmp_path / "cache")
    with pytest.raises(DataError, match="holds no token store"):
        token_store(config_of("embedded", store=str(tmp_path / "empty")), other, tmp_path / "cache")
    before = files(tmp_path)
    assert token_store(config, tokenizer, tmp_path / "cache").streams(parse_sources(config.data.sources)[0].name,
                                                                      "train")
    assert files(tmp_path) == before  # reading never writes


def test_a_damaged_shard_is_refused_naming_it(corpus, tokenizer, tmp_path):
    config = config_of(f"jsonl:{corpus}/*.jsonl")
    store = store_of(tmp_path, config, tokenizer)
    store.build(parse_sources(config.data.sources), tokenizer)
    (shard,) = (tmp_path / "shards" / "jsonl").glob("00002-00000.train.tokens")
    shard.write_bytes(b"")  # emptied, say by a full disk outside this code
    with pytest.raises(DataError, match="00002-00000.train.tokens: holds 0 bytes where the ledger counts .* damaged"):
        store.streams("jsonl", "train")


def test_range_reads_equal_mapped_reads(corpus, tokenizer, tmp_path):
    config = config_of(f"jsonl:{corpus}/*.jsonl")
    store = store_of(tmp_path, config, tokenizer)
    store.build(parse_sources(config.data.sources), tokenizer)
    mapped = store.streams(parse_sources(config.data.sources)[0].name, "train").tokens
    ranged = ShardedTokens(mapped.paths, np.diff(mapped.starts), mapped.dtype, ranges=True)
    rows = np.random.default_rng(0).integers(0, len(mapped) - 64, 16)[:, None] + np.arange(64)  # across shards too
    rows[0] = mapped.starts[1] - 32 + np.arange(64)
    np.testing.assert_array_equal(ranged[rows], mapped[rows])
    assert ranged.ranges and not mapped.ranges


def test_the_prepare_command_splits_its_share_over_local_processes(corpus, tmp_path):
    config = config_of(f"jsonl:{corpus}/*.jsonl", tokenizer_sample_chars=10**6)
    report = prepare(config, str(tmp_path / "store"), processes=2)
    assert report["units_missing"] == 0 and report["shards_written"] > 6
    assert json.loads((tmp_path / "store" / "store.json").read_text())["shard_chars"] == 10_000
    config.data.store = str(tmp_path / "store")
    tokenizer = Tokenizer.from_file(tmp_path / "store" / "tokenizer.model", VOCAB)
    stream = token_store(config, tokenizer, tmp_path / "cache").streams(parse_sources(config.data.sources)[0].name,
                                                                        "heldout")
    documents = documents_of(corpus)
    np.testing.assert_array_equal(stream.tokens[np.arange(len(stream.tokens))], reference(documents, tokenizer, 1))
    assert prepare(config, str(tmp_path / "store"))["shards_written"] == 0  # a re-run finds it complete


def test_explicit_weights_set_the_mixture():
    ids = mixed_row_ids([100, 10_000, 50], alpha=0.3, seed=0, weights=[3.0, 1.0, 1.0])
    sources = np.array([ids[i][0] for i in range(20_000)])
    np.testing.assert_allclose(np.bincount(sources) / len(sources), [0.6, 0.2, 0.2], atol=0.01)
    with pytest.raises(DataError, match="weight= to every source or to none"):
        mixed_row_ids([100, 100], alpha=0.3, seed=0, weights=[1.0, None])


def byte_level_bpe(texts: list[str], path) -> str:
    """A tiny Hugging Face byte-level BPE tokenizer (GPT-NeoX style special tokens), trained here, offline."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>",
                                                                                             "<|padding|>"]))
    tokenizer.save(str(path))
    return str(path)


def test_a_hugging_face_tokenizer_prepares_a_store_and_trains_a_tiny_model(corpus, tokenizer, tmp_path):
    from headless_jax.loop import train

    hf_file = byte_level_bpe(documents_of(corpus), tmp_path / "tokenizer.json")
    config = config_of(f"jsonl:{corpus}/*.jsonl", tokenizer_model=hf_file, seq_len=32)
    config.model.update(vocab_size=320, num_layers=1, d_model=32, num_heads=2, head_dim=16, mlp_dim=64, max_len=32,
                        causal=True)
    config.objective.task = "clm"
    config.train.update(global_batch_size=8, num_steps=30, log_every=1, eval_every=30, eval_batches=1,
                        checkpoint_every=30)
    config.optim.update(learning_rate=1e-2, warmup_steps=1)
    assert prepare(config, str(tmp_path / "store"))["units_missing"] == 0
    config.data.update(store=str(tmp_path / "store"), tokenizer_model="")  # the store's own tokenizer
    results = train(config, str(tmp_path / "run"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05 and 0 < results["bits_per_byte"] < 20
    assert (tmp_path / "run" / "tokenizer.json").read_text() == (tmp_path / "store" / "tokenizer.json").read_text()
    sentencepiece = tmp_path / "sp.model"
    sentencepiece.write_bytes(tokenizer.processor.serialized_model_proto())
    config.model.vocab_size = VOCAB
    config.data.tokenizer_model = str(sentencepiece)
    with pytest.raises(DataError, match="another configuration .* tokenizer"):
        train(config, str(tmp_path / "other_run"))


def test_weights_can_change_when_a_stream_resumes(corpus, tokenizer, tmp_path):
    from headless_jax.data import train_iterator

    def config_with(weights):
        sources = ",".join(f"jsonl:{corpus}/{i}.jsonl?weight={w}" for i, w in enumerate(weights))
        config = config_of(sources, tokenizer_model="", seq_len=32)
        config.train.global_batch_size = 8
        return config

    before = train_iterator(config_with([1, 1]), tokenizer, tmp_path)
    for _ in range(3):
        next(before)
    state = before.get_state()
    resumed = train_iterator(config_with([9, 1]), tokenizer, tmp_path)
    resumed.set_state(state)
    sources = np.concatenate([next(resumed)["source_ids"] for _ in range(25)])
    assert 0.85 < np.mean(sources == 0) < 0.95  # the new proportions, from where the old stream stopped
