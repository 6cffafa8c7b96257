"""Learning to Skip: per-token routed layers, their loss terms and statistics (docs/method.md).

A routed layer wraps one *step* of its block (the whole block, its attention or its MLP) — a function
`step(x, segment_ids, positions) → new x` — and decides per token whether the step runs:
- `skip`: a bias-free Linear(D→2) on the normed input; straight-through Gumbel-softmax (hard 0/1 forward, soft
  gradient backward) in training, argmax at evaluation. Dense compute, masked: attention keys/values stay
  computed for every token, so it saves no training FLOPs.
- `topk` (Mixture-of-Depths, expert choice): a scalar router score per token; the top k = max(1, round(c·L))
  real tokens of each sequence are gathered (with their positions and segment ids), run through the step on
  [B,k,D] and scattered back; the rest pass through. Top-k looks at the whole sequence, so a causal model
  decodes with a small causal *predictor* instead: an MLP on the stop-gradient router input, trained with
  BCE to predict top-k membership, thresholded at 0.5 at evaluation (dense compute, skipped tokens masked
  out of attention as padding, so executed tokens see only executed keys, as in training).

Both mix the step's output as `w·new + (1−w)·x` with a weight that is *exactly* 1 (execute) or 0 (skip) in the
forward pass, so a layer that executes every token equals the dense layer, and whose gradient reaches the
router: the Gumbel-softmax probability for `skip`, σ(score) for `topk` (MoD scales the block output by the
router weight; we keep the forward scale at 1 and take its gradient, w = 1 + σ − stop_gradient(σ)).
Statistics are sown into the `routing` collection and read back as a `RoutingStats` (`collect_stats`); the
objective adds `loss_and_metrics`: the budget or predictor loss, and each routed layer's executed fraction of
real (non-padding) tokens.
"""
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from headless_jax.model.layers import dense_init

ROUTING_KINDS = ("none", "skip", "topk")
ROUTED_PARTS = ("block", "attention", "mlp")
COLLECTION = "routing"

Step = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (x [B,L,D], segment_ids, positions) → new x


def routed_layers(model_cfg) -> tuple[int, ...]:
    """The indices of the routed layers (empty without routing); raises ValueError, naming the fix."""
    if model_cfg.routing.kind == "none":
        return ()
    spec, num_layers = str(model_cfg.routing.layers).strip(), model_cfg.num_layers
    fix = 'use "all", "every:N" (N ≥ 1) or comma-separated layer indices such as "1,3"'
    if spec == "all":
        return tuple(range(num_layers))
    if spec.startswith("every:"):
        try:
            every = int(spec[len("every:"):])
        except ValueError:
            every = 0
        if every < 1:
            raise ValueError(f"model.routing.layers={spec!r}: {fix}")
        layers = tuple(range(every - 1, num_layers, every))
    else:
        try:
            layers = tuple(sorted({int(v) for v in spec.split(",") if v.strip()}))
        except ValueError:
            raise ValueError(f"model.routing.layers={spec!r}: {fix}") from None
    if not layers or layers[0] < 0 or layers[-1] >= num_layers:
        raise ValueError(f"model.routing.layers={spec!r} selects no layer or one outside 0..{num_layers - 1} "
                         f"(model.num_layers={num_layers}); {fix}")
    return layers


def capacity_tokens(capacity: float, seq_len: int) -> int:
    """k: tokens per sequence a topk layer runs (static under jit)."""
    return max(1, round(capacity * seq_len))


def mix(weight_BxL: jax.Array, new_BxLxD: jax.Array, x_BxLxD: jax.Array) -> jax.Array:
    """w·new + (1−w)·x: new where w = 1, x where w = 0 (exactly), with the gradient new − x for w."""
    w = weight_BxL[..., None].astype(x_BxLxD.dtype)
    return w * new_BxLxD + (1 - w) * x_BxLxD


def straight_through(hard_BxL: jax.Array, soft_BxL: jax.Array) -> jax.Array:
    """Forward: `hard` exactly (soft − soft is exactly 0). Backward: the gradient of `soft`."""
    return jax.lax.stop_gradient(hard_BxL) + (soft_BxL - jax.lax.stop_gradient(soft_BxL))


def real_fraction(mask_BxL: jax.Array, segment_ids_BxL: jax.Array) -> jax.Array:
    """Mean of `mask` over real (non-padding) tokens; differentiable in `mask`."""
    real_BxL = (segment_ids_BxL != 0).astype(jnp.float32)
    return jnp.sum(mask_BxL * real_BxL) / jnp.maximum(jnp.sum(real_BxL), 1.0)


def skip_gate(logits_BxLx2: jax.Array, rng: jax.Array | None, temperature: float) -> jax.Array:
    """Execute gate in {0, 1} forward (index 1 = execute). rng None (evaluation): argmax, deterministic."""
    if rng is None:
        return jnp.argmax(logits_BxLx2, axis=-1).astype(jnp.float32)
    noisy_BxLx2 = logits_BxLx2 + jax.random.gumbel(rng, logits_BxLx2.shape, jnp.float32)
    soft_BxL = jax.nn.softmax(noisy_BxLx2 / temperature, axis=-1)[..., 1]
    hard_BxL = jnp.argmax(noisy_BxLx2, axis=-1).astype(jnp.float32)
    return straight_through(hard_BxL, soft_BxL)


def take_rows(a_BxL, idx_BxK):
    """a[b, idx[b, k]] for [B,L] or [B,L,D] arrays: a gather along the length axis, local to each batch row."""
    if a_BxL.ndim == 3:
        return jnp.take_along_axis(a_BxL, idx_BxK[..., None], axis=1)
    return jnp.take_along_axis(a_BxL, idx_BxK, axis=1)


def put_rows(a_BxLxD, idx_BxK, values_BxKxD):
    """a with rows idx of each sequence replaced by values (the scatter matching `take_rows`)."""
    return jax.vmap(lambda a, i, v: a.at[i].set(v))(a_BxLxD, idx_BxK, values_BxKxD)


def topk_indices(score_BxL: jax.Array, segment_ids_BxL: jax.Array, k: int) -> jax.Array:
    """The k highest-scoring real tokens of each sequence (padding only if fewer are real), in position order."""
    eligible_BxL = jnp.where(segment_ids_BxL != 0, jax.lax.stop_gradient(score_BxL), -jnp.inf)
    # A sort along the length axis, not lax.top_k: XLA partitions a sort over the batch axis, while its TopK
    # custom call all-gathers the batch (tests/test_routing.py checks the compiled step has no collectives).
    idx_BxK = jnp.argsort(-eligible_BxL, axis=-1, stable=True)[:, :k]
    return jnp.sort(idx_BxK, axis=-1)  # position order keeps the causal mask right among the gathered tokens


class SkipRouter(nn.Module):
    """Linear(D→2), bias-free: [skip, execute] logits per token."""
    cfg: object

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array) -> jax.Array:
        return nn.Dense(2, use_bias=False, dtype=jnp.float32, name="gate",
                        kernel_init=dense_init(self.cfg.init_std, ("embed", "router")))(h_BxLxD)


class TopkRouter(nn.Module):
    """Scalar router score per token; causal models add the causal predictor (on the stop-gradient input)."""
    cfg: object

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        cfg = self.cfg
        score_BxL = nn.Dense(1, use_bias=False, dtype=jnp.float32, name="score",
                             kernel_init=dense_init(cfg.init_std, ("embed", "router")))(h_BxLxD)[..., 0]
        if not cfg.causal:
            return score_BxL, None
        hidden_BxLxP = nn.gelu(nn.Dense(cfg.routing.predictor_dim, dtype=jnp.float32, name="predictor_hidden",
                                        kernel_init=dense_init(cfg.init_std, ("embed", "router")),
                                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                               ("router",)))(
            jax.lax.stop_gradient(h_BxLxD)))
        predictor_BxL = nn.Dense(1, use_bias=False, dtype=jnp.float32, name="predictor_out",
                                 kernel_init=dense_init(cfg.init_std, ("router", None)))(hidden_BxLxP)[..., 0]
        return score_BxL, predictor_BxL


def route_skip(logits_BxLx2, rng, temperature, step: Step, x_BxLxD, segment_ids_BxL, positions_BxL):
    """SkipLayer: the step runs on every token (dense); its output is kept where the gate is 1."""
    gate_BxL = skip_gate(logits_BxLx2, rng, temperature)
    out_BxLxD = mix(gate_BxL, step(x_BxLxD, segment_ids_BxL, positions_BxL), x_BxLxD)
    return out_BxLxD, {"executed_fraction": real_fraction(gate_BxL, segment_ids_BxL)}


def route_topk(score_BxL, predictor_BxL, capacity: float, use_predictor: bool, step: Step, x_BxLxD,
               segment_ids_BxL, positions_BxL):
    """Mixture-of-Depths: the top-k tokens run the step on [B,k,D]; or, for causal inference, the tokens the
    causal predictor selects (σ > 0.5) run it with the others masked out of attention as padding."""
    k = capacity_tokens(capacity, x_BxLxD.shape[1])
    idx_BxK = topk_indices(score_BxL, segment_ids_BxL, k)
    selected_BxL = jax.vmap(lambda idx_K: jnp.zeros(score_BxL.shape[1]).at[idx_K].set(1.0))(idx_BxK)
    stats = {}
    if predictor_BxL is not None:  # BCE on top-k membership; the predictor's input is already stop-gradient
        bce_BxL = optax.sigmoid_binary_cross_entropy(predictor_BxL, selected_BxL)
        stats["predictor_loss"] = real_fraction(bce_BxL, segment_ids_BxL)
        agree_BxL = ((predictor_BxL > 0) == (selected_BxL > 0)).astype(jnp.float32)
        stats["predictor_accuracy"] = real_fraction(agree_BxL, segment_ids_BxL)
    if use_predictor:
        execute_BxL = (predictor_BxL > 0).astype(jnp.float32)
        new_BxLxD = step(x_BxLxD, jnp.where(execute_BxL > 0, segment_ids_BxL, 0), positions_BxL)
        out_BxLxD = jnp.where(execute_BxL[..., None] > 0, new_BxLxD, x_BxLxD)
        stats["executed_fraction"] = real_fraction(execute_BxL, segment_ids_BxL)
        return out_BxLxD, stats
    weight_BxL = straight_through(jnp.ones_like(score_BxL), jax.nn.sigmoid(score_BxL))
    x_BxKxD = nn.with_logical_constraint(take_rows(x_BxLxD, idx_BxK), ("batch", "length", "act_embed"))
    new_BxKxD = step(x_BxKxD, take_rows(segment_ids_BxL, idx_BxK), take_rows(positions_BxL, idx_BxK))
    out_BxKxD = mix(take_rows(weight_BxL, idx_BxK), new_BxKxD, x_BxKxD)
    stats["executed_fraction"] = real_fraction(selected_BxL, segment_ids_BxL)
    return put_rows(x_BxLxD, idx_BxK, out_BxKxD), stats


class RoutingStats(NamedTuple):
    """What the routed layers of one forward pass report, each by layer index (all empty without routing)."""
    executed_fraction: dict[int, jax.Array]  # share of real tokens the layer's routed part ran on
    predictor_loss: dict[int, jax.Array]  # topk, causal: BCE of the causal predictor
    predictor_accuracy: dict[int, jax.Array]


def collect_stats(routing_vars: dict) -> RoutingStats:
    """The stats a LanguageModel sowed into its `routing` collection (applied with mutable=["routing"])."""
    stats = {field: {} for field in RoutingStats._fields}
    for name, layer_vars in routing_vars.get("body", {}).items():
        for stat, (value,) in layer_vars.items():
            if name == "layers":  # nn.scan: one value per layer, stacked (every layer is routed under scan)
                stats[stat].update({i: value[i] for i in range(value.shape[0])})
            else:
                stats[stat][int(name.removeprefix("layer_"))] = value
    return RoutingStats(**stats)


def fraction_metric(layer: int) -> str:
    return f"routing/executed_fraction/layer_{layer}"


def loss_and_metrics(model_cfg, stats: RoutingStats) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The routing terms of the loss and their metrics. skip: λ·Σ_l (r_l − P)² with r_l the executed fraction
    of routed layer l (soft gradient through the straight-through gates); topk, causal: predictor_weight·Σ_l
    BCE_l (it trains only the predictor, whose input is stop-gradient)."""
    fractions = stats.executed_fraction
    if not fractions:
        return jnp.float32(0.0), {}
    routing = model_cfg.routing
    metrics = {fraction_metric(i): r for i, r in sorted(fractions.items())}
    metrics["routing/executed_fraction"] = sum(fractions.values()) / len(fractions)
    loss = jnp.float32(0.0)
    if routing.kind == "skip":
        metrics["routing/budget_loss"] = routing.budget_weight * sum(
            jnp.square(r - routing.target) for r in fractions.values())
        loss += metrics["routing/budget_loss"]
    if stats.predictor_loss:
        metrics["routing/predictor_loss"] = sum(stats.predictor_loss.values())
        metrics["routing/predictor_accuracy"] = sum(stats.predictor_accuracy.values()) / len(fractions)
        loss += routing.predictor_weight * metrics["routing/predictor_loss"]
    return loss, metrics


def executed_fractions(model_cfg, metrics: dict[str, float]) -> dict[int, float] | None:
    """The per-layer executed fractions read back from (averaged) metrics; None if some are missing."""
    fractions = {layer: metrics.get(fraction_metric(layer)) for layer in routed_layers(model_cfg)}
    return fractions if fractions and None not in fractions.values() else None
