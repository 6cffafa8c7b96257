"""Causal-LM evaluation of a pretrained decoder: perplexity on held-out text, LAMBADA-style last-word accuracy.

`python -m headless_jax.evaluate --config=configs/lm_eval.py --workdir=DIR --config.pretrained=RUN` writes
DIR/results.json. A run with a vocabulary head (classical, or after configs/lm_head.py) is scored through it;
a headless decoder (model.head='none') ranks the vocabulary by o·Eᵀ, the "no fine-tuning" language model.
Last-word accuracy is greedy: a passage counts only if the argmax prediction of every token of its last word
is right, each given the true tokens before it (teacher-forced argmax equals greedy decoding of the word).
"""
import math
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from headless_jax.data import Tokenizer, parse_sources
from headless_jax.data.split import split_document
from headless_jax.downstream.lm_rows import Row, last_word_row, paragraph_passages, perplexity_rows
from headless_jax.downstream.results import write_json
from headless_jax.experiment import Pretrained, load_pretrained
from headless_jax.model import embedding_matrix
from headless_jax.objectives import vocab_stats
from headless_jax.train.layout import Layout

PASSAGES = ("documents", "paragraphs")

# batch {tokens, segment_ids, positions: int32 [B,L]} → (log-probability of each next token [B,L-1],
# the argmax token at each position [B,L-1]), as NumPy
Scorer = Callable[[dict], tuple[np.ndarray, np.ndarray]]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The evaluate entry point for kind='lm_eval': scores the run in config.pretrained, writes results.json."""
    layout = Layout.from_config(config.mesh)
    pretrained = load_pretrained(config.pretrained, layout, config.pretrained_step, config.tokenizer_model,
                                 causal=True)
    seq_len = config.seq_len or pretrained.config.data.seq_len
    pretrained.check_seq_len(seq_len)
    p, w = config.perplexity, config.last_word
    if w.sources and w.passages not in PASSAGES:
        raise ValueError(f"last_word.passages={w.passages!r} is not one of {PASSAGES}")
    scorer = model_scorer(pretrained, layout, config.vocab_chunk)
    heldout_fraction = pretrained.config.data.heldout_fraction
    batch_size = -(-config.batch_size // layout.batch_shards) * layout.batch_shards
    results = {"pretrained": config.pretrained, "step": pretrained.step, "seq_len": seq_len,
               "scoring": "o·Eᵀ (headless)" if pretrained.config.model.head == "none" else "vocabulary head"}
    if p.sources:
        texts = read_texts(p.sources, heldout_fraction if p.heldout else 0.0)
        results["perplexity"] = dict(perplexity(scorer, pretrained.tokenizer, texts, seq_len,
                                                p.stride or max(seq_len // 2, 1), batch_size), sources=p.sources,
                                     heldout=p.heldout)
    if w.sources:
        texts = read_texts(w.sources, heldout_fraction if w.heldout else 0.0)
        passages = ([passage for text in texts for passage in paragraph_passages(text, w.min_words)]
                    if w.passages == "paragraphs" else [text for text in texts if text.strip()])
        results["last_word"] = dict(last_word_accuracy(scorer, pretrained.tokenizer, passages, seq_len, batch_size),
                                    sources=w.sources, heldout=w.heldout, passages_from=w.passages)
    if jax.process_index() == 0:
        write_json(workdir, results)
    return results


def read_texts(sources: str, heldout_fraction: float) -> list[str]:
    """The documents of a data.sources-style spec (embedded | text: | jsonl: | tfds:), or with heldout_fraction
    > 0 their held-out tails (the text a pretraining run with that fraction never trained on)."""
    documents: Iterator[str] = (doc for source in parse_sources(sources) for doc in source.documents())
    return [split_document(doc, heldout_fraction)[1] if heldout_fraction > 0 else doc for doc in documents]


def perplexity(scorer: Scorer, tokenizer: Tokenizer, texts: list[str], seq_len: int, stride: int,
               batch_size: int) -> dict:
    """exp(mean NLL) over every token of `texts` (each predicted once, given up to seq_len - 1 tokens before it,
    at least seq_len - stride of them after the first window), and next-token accuracy."""
    rows = [row for ids in tokenizer.encode_batch(texts) for row in
            perplexity_rows([tokenizer.eos_id] + ids, seq_len, stride)]
    nll, correct, count = 0.0, 0, 0
    for row, (logprob_S, argmax_S) in zip(rows, score_rows(scorer, rows, seq_len, batch_size, "perplexity")):
        nll -= float(np.sum(logprob_S, dtype=np.float64))
        correct += int(np.sum(argmax_S == row.tokens[row.first + 1:row.last + 1]))
        count += len(logprob_S)
    if not count:
        raise ValueError("perplexity: the texts hold no tokens to predict; point perplexity.sources at text")
    return {"documents": len(texts), "tokens": count, "nll": nll / count, "perplexity": math.exp(nll / count),
            "accuracy": correct / count}


def last_word_accuracy(scorer: Scorer, tokenizer: Tokenizer, passages: list[str], seq_len: int,
                       batch_size: int) -> dict:
    """The share of passages whose last word the model predicts greedily from the text before it."""
    rows = [last_word_row(token_pieces(tokenizer, passage), passage, tokenizer.eos_id, seq_len) for passage in passages]
    scored = [row for row in rows if row is not None]
    if not scored:
        raise ValueError("last_word: no passage with a last word that fits seq_len; point last_word.sources at "
                         "passages of several words")
    correct = sum(bool(np.all(argmax_S == row.tokens[row.first + 1:row.last + 1])) for row, (_, argmax_S) in
                  zip(scored, score_rows(scorer, scored, seq_len, batch_size, "last word")))
    return {"passages": len(scored), "skipped": len(rows) - len(scored), "correct": correct,
            "accuracy": correct / len(scored)}


def score_rows(scorer: Scorer, rows: list[Row], seq_len: int, batch_size: int,
               desc: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(log-probabilities, argmax) of each row's counted predictions, scoring `batch_size` padded rows at a time."""
    for start in tqdm.trange(0, len(rows), batch_size, desc=desc, disable=jax.process_index() != 0,
                             dynamic_ncols=True):
        batch_rows = rows[start:start + batch_size]
        tokens_BxL = np.zeros((batch_size, seq_len), np.int32)  # pad id 0; padding rows are all padding
        segment_ids_BxL = np.zeros((batch_size, seq_len), np.int32)
        for i, row in enumerate(batch_rows):
            tokens_BxL[i, :len(row.tokens)] = row.tokens
            segment_ids_BxL[i, :len(row.tokens)] = 1
        positions_BxL = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch_size, seq_len))
        logprob_BxS, argmax_BxS = scorer({"tokens": tokens_BxL, "segment_ids": segment_ids_BxL,
                                          "positions": positions_BxL})
        for i, row in enumerate(batch_rows):
            yield logprob_BxS[i, row.first:row.last], argmax_BxS[i, row.first:row.last]


def model_scorer(pretrained: Pretrained, layout: Layout, vocab_chunk: int) -> Scorer:
    """The pretrained model as a Scorer: its head's logits, or o·Eᵀ when headless; batches sharded over the mesh,
    each process feeding its own rows of every batch."""
    model, headless = pretrained.model, pretrained.config.model.head == "none"

    def score(params, batch):
        h_BxLxD = model.apply({"params": params}, batch["tokens"], batch["segment_ids"], batch["positions"])
        batch_size, length, dim = h_BxLxD.shape
        o_NxD = h_BxLxD[:, :-1].reshape(-1, dim)
        if headless:
            features_NxD, weight_VxD, bias_V = o_NxD, embedding_matrix(params), None
        else:
            features_NxD, weight_VxD, bias_V = model.apply({"params": params}, o_NxD, method="decoder")
        chunk = vocab_chunk if 0 < vocab_chunk < weight_VxD.shape[0] else 0
        stats = vocab_stats(features_NxD, weight_VxD, bias_V, batch["tokens"][:, 1:].reshape(-1), chunk)
        logprob_N = stats.label_logit_N - stats.logsumexp_N
        return logprob_N.reshape(batch_size, length - 1), stats.argmax_N.reshape(batch_size, length - 1)

    jitted = jax.jit(score, in_shardings=(pretrained.param_shardings, layout.batch_sharding))

    def scorer(batch: dict) -> tuple[np.ndarray, np.ndarray]:
        with layout.active():
            outputs = jitted(pretrained.params, layout.distribute(batch))
        return tuple(np.asarray(x) for x in multihost_utils.process_allgather(outputs, tiled=True))

    return scorer


def token_pieces(tokenizer: Tokenizer, text: str) -> list[tuple[int, int, int]]:
    """(id, begin byte, end byte) of each token of `text` (trailing whitespace dropped)."""
    return tokenizer.encode_with_offsets(text.rstrip())
