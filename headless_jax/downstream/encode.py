"""Examples → fixed-shape token arrays: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, padded to seq_len.

The model has no token-type embedding, so the two sentences of a pair are told apart by `[SEP]` (and their
positions) only; both sit in segment 1 so they attend to each other. Padding has segment id 0, which the
attention masks out. Over-long pairs are truncated longest-first (BERT's rule), so both sentences keep text.
"""
import numpy as np

from headless_jax.data.tokenizer import Tokenizer
from headless_jax.downstream.examples import Example


def truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Drops tokens from the end of the longer of `a`, `b` until len(a) + len(b) <= budget."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()  # BERT: ties shorten the second
    return a, b


def encode(tokenizer: Tokenizer, examples: list[Example], seq_len: int) -> dict[str, np.ndarray]:
    """{'tokens', 'segment_ids', 'positions': int32 [N, seq_len], 'labels': [N] (int32, or float32 if regression)}."""
    paired = examples[0].text_b is not None if examples else False
    ids_a = tokenizer.encode_batch([e.text_a for e in examples])
    ids_b = tokenizer.encode_batch([e.text_b for e in examples]) if paired else [[] for _ in examples]
    tokens_NxL = np.full((len(examples), seq_len), tokenizer.pad_id, np.int32)
    for row, (a, b) in enumerate(zip(ids_a, ids_b)):
        a, b = truncate_pair(a, b, seq_len - (3 if paired else 2))
        ids = [tokenizer.cls_id, *a, tokenizer.sep_id] + ([*b, tokenizer.sep_id] if paired else [])
        tokens_NxL[row, :len(ids)] = ids
    regression = any(isinstance(e.label, float) for e in examples)
    return {"tokens": tokens_NxL,
            "segment_ids": (tokens_NxL != tokenizer.pad_id).astype(np.int32),
            "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), tokens_NxL.shape).copy(),
            "labels": np.array([e.label for e in examples], np.float32 if regression else np.int32)}
