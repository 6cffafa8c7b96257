"""Small builders shared by the training tests: a tiny config, random batches, n steps on a given mesh."""
import jax
import ml_collections
import numpy as np
import optax

from headless_jax.config import base_config
from headless_jax.data import book_names, read_book
from headless_jax.experiment import build_experiment

VOCAB, SEQ_LEN = 64, 16


def tiny_config(task: str = "clm", loss: str = "cwt", batch: int = 16) -> ml_collections.ConfigDict:
    c = base_config()
    causal = task == "clm"
    c.model.update(causal=causal, vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=2, head_dim=16, mlp_dim=64,
                   max_len=SEQ_LEN, head="none" if loss == "cwt" else ("untied" if causal else "tied"))
    c.objective.update(task=task, loss=loss, cwt_group_size=2, mask_rate=0.25)
    c.data.update(seq_len=SEQ_LEN)
    c.train.update(global_batch_size=batch, num_steps=10)
    c.optim.update(learning_rate=3e-3, warmup_steps=2)
    return c


def random_batches(n: int, batch: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(7, VOCAB, size=(n, batch, SEQ_LEN)).astype(np.int32)
    return [{"tokens": t, "segment_ids": np.ones_like(t), "positions": np.tile(np.arange(SEQ_LEN, dtype=np.int32),
                                                                              (batch, 1))} for t in tokens]


def run_steps(config, batches, devices=None, optimizer: optax.GradientTransformation | None = None):
    """Trains on `batches` with the config's mesh over `devices`; returns (losses, final params as numpy, state)."""
    experiment = build_experiment(config, devices, optimizer=optimizer)
    losses = []
    with experiment.layout.active():
        state = experiment.init_state()
        for batch in batches:
            state, metrics = experiment.train_step(state, experiment.layout.global_batch(batch))
            losses.append(float(metrics["loss"]))
        return np.array(losses), jax.device_get(state["params"]), state


def text_run_config(tmp_path, book: int, steps: int, checkpoint_every: int) -> ml_collections.ConfigDict:
    """A tiny CLM trained on 40k characters of a bundled novel, caching under tmp_path: the in-process runs of
    the fault tests."""
    (tmp_path / "book.txt").write_text(read_book(book_names()[book])[:40_000])
    c = tiny_config("clm", "cwt", batch=8)
    c.model.vocab_size = 512
    c.objective.cwt_group_size = 1
    c.data.update(sources=f"text:{tmp_path}/book.txt", cache_dir=str(tmp_path / "cache"))
    c.train.update(num_steps=steps, checkpoint_every=checkpoint_every, eval_every=1000, eval_batches=1, log_every=1)
    return c
