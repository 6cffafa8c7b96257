"""Causal-LM evaluation of a pretrained decoder: perplexity and LAMBADA-style last-word accuracy.

`python -m headless_jax.evaluate --config=configs/lm_eval.py --workdir=DIR --config.pretrained=RUN` scores the
held-out tails of the bundled novels offline (perplexity; last words of their paragraphs).
`configs/lm_eval.py:lambada` scores TFDS `lambada` (test split, prepared as ArrayRecord) instead; any
`jsonl:FILE` of {"text": ...} passages works too:
`--config.last_word.sources=jsonl:FILE --config.last_word.heldout=False --config.last_word.passages=documents`.
"""
import ml_collections

from headless_jax.downstream.config import downstream_base_config


def get_config(task: str | None = None):
    c = downstream_base_config("lm_eval")
    c.seq_len = 0  # window length; 0: the pretraining run's data.seq_len
    c.batch_size = 32  # rows scored at a time (rounded up to a multiple of the batch shards)
    c.vocab_chunk = 4096  # vocabulary rows scored at a time: [rows·L, chunk] logits at most

    p = c.perplexity = ml_collections.ConfigDict()
    p.sources = "embedded"  # as data.sources: embedded | text:GLOB | jsonl:GLOB?field=text | tfds:...; "" skips
    p.heldout = True  # only each document's held-out tail (the pretraining run's data.heldout_fraction)
    p.stride = 0  # new tokens per window after the first; 0: seq_len // 2 (the rest is extra context)

    w = c.last_word = ml_collections.ConfigDict()
    w.sources = "embedded"  # "" skips
    w.heldout = True
    w.passages = "paragraphs"  # documents: each document is a passage (LAMBADA) | paragraphs: split running text
    w.min_words = 20  # paragraphs: shorter ones are skipped

    if task == "lambada":
        p.sources = ""
        w.update(sources="tfds:lambada?split=test&field=passage", heldout=False, passages="documents")
    elif task:
        raise ValueError(f"configs/lm_eval.py:{task}: unknown task; use configs/lm_eval.py or "
                         "configs/lm_eval.py:lambada")
    return c
