"""Causal-LM evaluation: perplexity windows and counting, last-word accuracy, the runner on a tiny decoder."""
import dataclasses
import json
import os

import numpy as np
import pytest
from scipy.special import logsumexp

from headless_jax.config import base_config
from headless_jax.data import parse_sources
from headless_jax.data.tokenizer import RUN_TOKENIZER_FILE, Tokenizer, train_sentencepiece
from headless_jax.downstream.lm_eval import (last_word_accuracy, model_scorer, perplexity, read_texts, run,
                                             token_pieces)
from headless_jax.downstream.lm_rows import last_word_row, last_word_start, paragraph_passages, perplexity_rows
from headless_jax.downstream.results import RESULTS_JSON
from headless_jax.experiment import PretrainedError, build_experiment, load_pretrained
from headless_jax.model import HEAD, embedding_matrix
from headless_jax.train.layout import Layout
from lm_helpers import book_text, tiny_run
from test_configs import load_config

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "lambada_sample.jsonl")
VOCAB = 384


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return book_text(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def tokenizer(text):
    return Tokenizer(train_sentencepiece(parse_sources(f"text:{text}"), VOCAB, 0.2, 10**6), "test", VOCAB)


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, text):
    return tiny_run(tmp_path_factory.mktemp("decoder"), text, "clm_demo", 1)


def bigram_scorer(logits_VxV: np.ndarray):
    """A Scorer whose next-token logits depend on the current token only: logits_VxV[current]."""
    def scorer(batch):
        logits_BxSxV = logits_VxV[batch["tokens"][:, :-1]]
        logprob_BxSxV = logits_BxSxV - logsumexp(logits_BxSxV, axis=-1, keepdims=True)
        logprob_BxS = np.take_along_axis(logprob_BxSxV, batch["tokens"][:, 1:, None], axis=-1)[..., 0]
        return logprob_BxS, logits_BxSxV.argmax(-1)
    return scorer


@pytest.mark.parametrize("length,seq_len,stride", [(1, 8, 4), (2, 8, 4), (8, 8, 4), (9, 8, 4), (30, 8, 3),
                                                   (30, 8, 8), (31, 5, 1)])
def test_windows_predict_every_token_once_with_the_promised_context(length, seq_len, stride):
    tokens = list(range(100, 100 + length))  # token value = 100 + its index in the document
    predicted = []
    for row in perplexity_rows(tokens, seq_len, stride):
        assert len(row.tokens) <= seq_len and row.tokens == tokens[row.tokens[0] - 100:row.tokens[-1] - 99]
        for i in range(row.first, row.last):
            target = row.tokens[i + 1] - 100
            assert i + 1 >= min(target, seq_len - stride)  # context before each prediction after the first window
            predicted.append(target)
    assert predicted == list(range(1, length))


def test_perplexity_is_exp_mean_nll_across_windows_in_float64(tokenizer):
    texts = ["It is a truth universally acknowledged, that a single man in possession of a good fortune",
             "Call me Ishmael.", "", "x"]
    logits_VxV = np.random.default_rng(0).normal(size=(VOCAB, VOCAB)) * 3
    got = perplexity(bigram_scorer(logits_VxV), tokenizer, texts, seq_len=8, stride=3, batch_size=4)
    nlls = []
    for text in texts:
        ids = [tokenizer.eos_id] + tokenizer.encode(text)
        nlls += [logsumexp(logits_VxV[a]) - logits_VxV[a, b] for a, b in zip(ids[:-1], ids[1:])]
    assert got["tokens"] == len(nlls) == sum(len(tokenizer.encode(t)) for t in texts)
    np.testing.assert_allclose(got["perplexity"], np.exp(np.mean(nlls)), rtol=1e-12)


def test_last_word_tokens_cover_exactly_the_word(tokenizer):
    passage = "She said that the weather was extraordinary"
    row = last_word_row(token_pieces(tokenizer, passage), passage, tokenizer.eos_id, 32)
    word_tokens = row.tokens[row.first + 1:row.last + 1]
    assert len(word_tokens) > 1 and tokenizer.decode(word_tokens).strip() == "extraordinary"
    assert tokenizer.decode(row.tokens[1:row.first + 1]).strip() == "She said that the weather was"
    short = last_word_row(token_pieces(tokenizer, passage), passage, tokenizer.eos_id, len(word_tokens) + 1)
    assert short.tokens[short.first + 1:] == word_tokens and short.first == 0  # context cut from the left
    assert last_word_row(token_pieces(tokenizer, passage), passage, tokenizer.eos_id, len(word_tokens)) is None


def greedy_word_is_right(argmax_of_V: np.ndarray, context: list[int], word: list[int]) -> bool:
    """Brute force: decode len(word) tokens greedily after `context`, compare with the word."""
    generated = list(context)
    for _ in word:
        generated.append(int(argmax_of_V[generated[-1]]))
    return generated[len(context):] == word


def test_last_word_accuracy_equals_greedy_decoding(tokenizer):
    passages = [json.loads(line)["text"] for line in open(FIXTURE)]
    rng = np.random.default_rng(1)
    logits_VxV = rng.normal(size=(VOCAB, VOCAB))
    spans = []
    for passage in passages:
        row = last_word_row(token_pieces(tokenizer, passage), passage, tokenizer.eos_id, 64)
        spans.append((row.tokens[:row.first + 1], row.tokens[row.first + 1:row.last + 1]))
    # Teach the bigram model passage 0's word, and passage 1's word except its last token.
    for index, keep in ((0, None), (1, -1)):
        context, word = spans[index]
        chain = ([context[-1]] + word)[:keep]
        for previous, token in zip(chain[:-1], chain[1:]):
            logits_VxV[previous, token] = 100.0
    argmax_of_V = logits_VxV.argmax(-1)
    want = [greedy_word_is_right(argmax_of_V, context, word) for context, word in spans]
    assert want[0] and not want[1] and len(spans[1][1]) > 1 and argmax_of_V[spans[1][0][-1]] == spans[1][1][0]
    got = last_word_accuracy(bigram_scorer(logits_VxV), tokenizer, passages, seq_len=64, batch_size=3)
    assert got["correct"] == sum(want) and got["accuracy"] == sum(want) / len(passages)
    # LAMBADA's lines end in a newline, which is not part of the last word.
    assert last_word_accuracy(bigram_scorer(logits_VxV), tokenizer, [p + "\n" for p in passages], 64, 3) == got


def test_jsonl_passages_and_their_last_words():
    texts = read_texts(f"jsonl:{FIXTURE}", 0.0)
    assert len(texts) == 4 and texts[1].startswith("The captain checked")
    assert [t[last_word_start(t):] for t in texts] == ["sky", "again", "marriage", "Frederick"]


def test_lambada_config_reads_tfds_lambada(tmp_path):
    """configs/lm_eval.py:lambada names TFDS `lambada` (its own builder and features; the fixture's passages in
    place of the download, one per line like the release) by the right split and field."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core import registered
    passages = [json.loads(line)["text"] for line in open(FIXTURE)]
    plain_text = tmp_path / "lambada_test_plain_text.txt"
    plain_text.write_text("".join(p + "\n" for p in passages))

    with registered.skip_registration():
        class TinyLambada(tfds.builder_cls("lambada")):
            name = "lambada"

            def _split_generators(self, dl_manager):
                return {"test": self._generate_examples(str(plain_text))}

    TinyLambada(data_dir=str(tmp_path / "tfds"), file_format="array_record").download_and_prepare()
    sources = load_config("lm_eval", "lambada").last_word.sources
    texts = read_texts(f"{sources}&data_dir={tmp_path / 'tfds'}", 0.0)
    assert sorted(t.strip() for t in texts) == sorted(passages)


def test_paragraph_passages_end_on_a_word_and_skip_short_paragraphs():
    text = "Short one.\n\n\u201cWell,\n said he, I shall go to\n  London!\u201d\n\nAnd she was glad of it, truly"
    assert paragraph_passages(text, min_words=5) == ["\u201cWell,\n said he, I shall go to\n  London",
                                                     "And she was glad of it, truly"]


def load(workdir, **kwargs):
    mesh_cfg = base_config().mesh
    mesh_cfg.update(data=4, fsdp=2)
    layout = Layout.from_config(mesh_cfg)
    return load_pretrained(str(workdir), layout, **kwargs), layout


def hidden_states(pretrained, tokens: list[int]) -> np.ndarray:
    """The model's final hidden states [L,D] for one sequence, as float64."""
    batch = np.array([tokens], np.int32)
    h = pretrained.model.apply({"params": pretrained.params}, batch, np.ones_like(batch), np.arange(len(tokens))[None])
    return np.asarray(h[0], np.float64)


def test_headless_perplexity_through_o_dot_e_matches_float64(decoder_run, tmp_path):
    config = load_config("lm_eval", None)
    config.update(pretrained=str(decoder_run), batch_size=8)
    config.mesh.update(data=4, fsdp=2)
    config.perplexity.update(sources=f"jsonl:{FIXTURE}", heldout=False)
    config.last_word.update(sources=f"jsonl:{FIXTURE}", heldout=False, passages="documents")
    results = run(config, str(tmp_path))
    assert json.loads((tmp_path / RESULTS_JSON).read_text()) == results
    assert results["scoring"] == "o·Eᵀ (headless)" and results["last_word"]["passages"] == 4

    pretrained, _ = load(decoder_run)
    embedding_VxD = np.asarray(embedding_matrix(pretrained.params), np.float64)
    nlls, windows = [], {}
    for text in read_texts(f"jsonl:{FIXTURE}", 0.0):
        ids = [pretrained.tokenizer.eos_id] + pretrained.tokenizer.encode(text)
        for j in range(1, len(ids)):  # token j is predicted in the window ending at 32, 48, 64, ... (or at the end)
            end = min(32 + 16 * max(0, -(-(j - 31) // 16)), len(ids))
            begin = max(0, end - 32)
            if (text, end) not in windows:
                windows[text, end] = hidden_states(pretrained, ids[begin:end])
            logits_V = windows[text, end][j - begin - 1] @ embedding_VxD.T
            nlls.append(logsumexp(logits_V) - logits_V[ids[j]])
    assert results["perplexity"]["tokens"] == len(nlls)
    np.testing.assert_allclose(results["perplexity"]["perplexity"], np.exp(np.mean(nlls)), rtol=1e-5)


def test_model_last_word_check_is_greedy_decoding(decoder_run):
    pretrained, layout = load(decoder_run)
    embedding_VxD = np.asarray(embedding_matrix(pretrained.params), np.float64)
    context = [pretrained.tokenizer.eos_id] + pretrained.tokenizer.encode("It was a dark and stormy night; the")
    greedy = list(context)
    for _ in range(3):  # brute force: the whole prefix through the model for each new token, float64 o·Eᵀ
        greedy.append(int(np.argmax(hidden_states(pretrained, greedy)[-1] @ embedding_VxD.T)))
    scorer = model_scorer(pretrained, layout, vocab_chunk=100)  # 4 vocabulary chunks
    variants = {"greedy": greedy, "last token off": greedy[:-1] + [(greedy[-1] + 1) % VOCAB],
                "first token off": greedy[:-3] + [(greedy[-3] + 1) % VOCAB] + greedy[-2:]}
    tokens = np.zeros((8, 32), np.int32)
    for i, variant in enumerate(variants.values()):
        tokens[i, :len(variant)] = variant
    _, argmax_BxS = scorer({"tokens": tokens, "segment_ids": (tokens != 0).astype(np.int32),
                            "positions": np.tile(np.arange(32, dtype=np.int32), (8, 1))})
    n = len(greedy)
    right = {name: bool(np.all(argmax_BxS[i, n - 4:n - 1] == np.array(v[n - 3:]))) for i, (name, v) in
             enumerate(variants.items())}
    assert right == {"greedy": True, "last token off": False, "first token off": False}


def test_an_encoder_is_refused(text, tmp_path):
    encoder = tiny_run(tmp_path / "encoder", text, "demo", 1)
    config = load_config("lm_eval", None)
    config.pretrained = str(encoder)
    with pytest.raises(PretrainedError, match="is an encoder .* needs a decoder"):
        run(config, str(tmp_path / "eval"))


def test_another_tokenizer_is_refused(decoder_run, tokenizer, tmp_path):
    other = tmp_path / "other.model"
    other.write_bytes(tokenizer.processor.serialized_model_proto())  # trained without the held-out split
    assert other.read_bytes() != (decoder_run / RUN_TOKENIZER_FILE).read_bytes()
    config = load_config("lm_eval", None)
    config.update(pretrained=str(decoder_run), tokenizer_model=str(other))
    with pytest.raises(PretrainedError, match="is not the tokenizer"):
        run(config, str(tmp_path / "eval"))


def test_a_head_copied_from_e_scores_exactly_like_o_dot_e(decoder_run):
    """The LM-head phase starts from the headless model's own language model: head = E gives the same scores."""
    pretrained, layout = load(decoder_run)
    config = pretrained.config.copy_and_resolve_references()
    config.model.head = "untied"
    params = dict(pretrained.params, **{HEAD: {"decoder": embedding_matrix(pretrained.params)}})
    with_head = dataclasses.replace(pretrained, config=config, experiment=build_experiment(config, layout=layout),
                                    params=params)
    tokens = np.array([pretrained.tokenizer.encode("It was the best of times, it was the worst of times.")[:32]] * 8,
                      np.int32)
    batch = {"tokens": tokens, "segment_ids": np.ones_like(tokens),
             "positions": np.tile(np.arange(tokens.shape[1], dtype=np.int32), (8, 1))}
    headless_logprob, headless_argmax = model_scorer(pretrained, layout, 0)(batch)
    head_logprob, head_argmax = model_scorer(with_head, layout, 0)(batch)
    np.testing.assert_allclose(head_logprob, headless_logprob, rtol=1e-6)
    np.testing.assert_array_equal(head_argmax, headless_argmax)
