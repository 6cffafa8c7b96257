"""Bits per byte: the held-out metric that compares across tokenizers, against a float64 hand computation on text
with multi-byte UTF-8 characters; and per-source held-out metrics in a run."""
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from headless_jax.config import base_config
from headless_jax.data import book_names, parse_sources, read_book
from headless_jax.data.tokenizer import Tokenizer, train_sentencepiece
from headless_jax.experiment import special_tokens
from headless_jax.loop import train
from headless_jax.model import LanguageModel, embedding_matrix
from headless_jax.objectives import bits_per_byte, build_objective

VOCAB, L = 384, 48
MULTIBYTE = "Café crème, naïve façade — 中文字符 and emoji 😀🎉 in a sentence; Ærøskøbing, Łódź, Ωmega.\n\n"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(read_book(book_names()[0])[:30_000] + MULTIBYTE * 20)
    return Tokenizer(train_sentencepiece(parse_sources(f"text:{path}"), VOCAB, 0.0, 10**6), "test", VOCAB)


@pytest.mark.parametrize("task,loss,head", [("clm", "cwt", "none"), ("clm", "ce", "untied")])
def test_bits_per_byte_equals_a_float64_hand_computation(tokenizer, task, loss, head):
    config = base_config()
    config.model.update(causal=True, vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, head_dim=16,
                        mlp_dim=64, max_len=L, head=head)
    config.objective.update(task=task, loss=loss)
    model = LanguageModel(config.model)
    ids = tokenizer.encode(MULTIBYTE * 3)
    assert tokenizer.token_bytes(VOCAB)[ids].sum() == len((MULTIBYTE * 3).encode("utf-8"))  # multi-byte pieces
    tokens = np.array([ids[:L], ids[L:2 * L]], np.int32)
    batch = {"tokens": jnp.asarray(tokens), "segment_ids": jnp.ones_like(tokens),
             "positions": jnp.asarray(np.tile(np.arange(L, dtype=np.int32), (2, 1)))}
    params = nn.unbox(model.init(jax.random.key(0), batch["tokens"], batch["segment_ids"], batch["positions"]))["params"]
    objective = build_objective(config, model, special_tokens(tokenizer), tokenizer.token_bytes(VOCAB))
    metrics = jax.jit(objective, static_argnums=3)(params, batch, jax.random.key(1), True)[1]

    h = np.asarray(model.apply({"params": params}, *(batch[k] for k in ("tokens", "segment_ids", "positions"))),
                   np.float64)[:, :-1].reshape(-1, 32)
    if head == "none":
        logits = h @ np.asarray(embedding_matrix(params), np.float64).T
    else:
        logits = h @ np.asarray(params["head"]["decoder"], np.float64).T
    targets = tokens[:, 1:].reshape(-1)
    nll = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1) - logits[np.arange(len(targets)),
                                                                                                 targets]
    want = nll.sum() / (math.log(2) * tokenizer.token_bytes(VOCAB)[targets].sum())
    np.testing.assert_allclose(bits_per_byte(jax.device_get(metrics)), want, rtol=1e-5)
    np.testing.assert_allclose(metrics["nll"], nll.mean(), rtol=1e-5)


def test_a_run_reports_held_out_metrics_per_source(tmp_path):
    for i, name in enumerate(book_names()[:2]):
        (tmp_path / f"{i}.txt").write_text(read_book(name)[:40_000])
    config = base_config()
    config.model.update(vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, head_dim=16, mlp_dim=64, max_len=32)
    config.data.update(sources=f"text:{tmp_path}/0.txt?name=first&weight=3,text:{tmp_path}/1.txt?name=second&weight=1",
                       seq_len=32)
    config.train.update(global_batch_size=8, num_steps=4, eval_every=4, eval_batches=1, checkpoint_every=4,
                        log_every=2)
    results = train(config, str(tmp_path / "run"))
    for name in ("first", "second"):
        assert 0 < results[f"{name}/bits_per_byte"] < 20
    overall = (results["first/nll"] * results["first/num_predictions"] + results["second/nll"] *
               results["second/num_predictions"]) / results["num_predictions"]
    assert results["nll"] == pytest.approx(overall, rel=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    seen = [r for r in rows if r["split"] == "train"][-1]
    assert seen["tokens_seen/first"] + seen["tokens_seen/second"] == 4 * 8 * 32
    assert seen["tokens_seen/first"] > 2 * seen["tokens_seen/second"]  # weights 3 : 1
