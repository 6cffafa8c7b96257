"""Small builders shared by the training tests: a tiny config, random batches, n steps on a given mesh."""
import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from headless_jax import objectives
from headless_jax.config import base_config
from headless_jax.model import LanguageModel
from headless_jax.train.optim import learning_rate_schedule, make_optimizer
from headless_jax.train.sharding import axis_rules, global_batch, make_mesh
from headless_jax.train.state import create_state
from headless_jax.train.step import build_train_step

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
    """Trains on `batches` with the config's mesh over `devices`; returns (losses, final params as numpy)."""
    mesh, rules = make_mesh(config.mesh, devices), axis_rules(config.mesh)
    model = LanguageModel(ml_collections.FrozenConfigDict(config.model))
    objective = objectives.build_objective(config, model, objectives.SpecialTokens())
    optimizer = optimizer or make_optimizer(config.optim, config.train.num_steps)
    schedule = learning_rate_schedule(config.optim, config.train.num_steps)
    losses = []
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state, shardings = create_state(model, optimizer, config.data.seq_len, config.seed, mesh, rules)
        step = build_train_step(objective, optimizer, schedule, shardings, mesh, config.train.microbatches)
        for batch in batches:
            state, metrics = step(state, global_batch(batch, mesh))
            losses.append(float(metrics["loss"]))
        return np.array(losses), jax.device_get(state["params"]), state
