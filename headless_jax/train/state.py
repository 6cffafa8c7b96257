"""The train state — params, optimiser state, step, base RNG — created directly in its sharded layout."""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from headless_jax.train.sharding import logical_shardings

TrainState = dict  # {'params', 'opt_state', 'step', 'rng'}: a plain pytree Orbax saves as is


def dummy_batch(seq_len: int) -> dict:
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    return {"tokens": tokens, "segment_ids": jnp.ones_like(tokens), "positions": jnp.arange(seq_len)[None]}


def boxed_init_fn(model: nn.Module, optimizer: optax.GradientTransformation, seq_len: int) -> Callable:
    """rng → state whose params and moments keep their logical-axis boxes (for computing shardings)."""
    def init(rng: jax.Array) -> TrainState:
        batch = dummy_batch(seq_len)
        params = model.init(rng, batch["tokens"], batch["segment_ids"], batch["positions"])["params"]
        return {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32),
                "rng": rng}
    return init


def abstract_state(model, optimizer, seq_len: int, mesh, rules) -> tuple[TrainState, TrainState]:
    """(shape/dtype/sharding structs of the unboxed state, its NamedShardings) — without allocating it."""
    boxed = jax.eval_shape(boxed_init_fn(model, optimizer, seq_len), jax.random.PRNGKey(0))
    shardings = logical_shardings(boxed, mesh, rules)
    shapes = jax.tree.map(lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
                          boxed, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
    abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
    return abstract, shardings


def create_state(model, optimizer, seq_len: int, seed: int, mesh, rules) -> tuple[TrainState, TrainState]:
    """Initialises the state already sharded (jit with out_shardings: no full copy on any host)."""
    _, shardings = abstract_state(model, optimizer, seq_len, mesh, rules)
    init = boxed_init_fn(model, optimizer, seq_len)
    with nn.logical_axis_rules(rules):
        state = jax.jit(lambda rng: nn.unbox(init(rng)), out_shardings=shardings)(jax.random.PRNGKey(seed))
    return state, shardings


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
