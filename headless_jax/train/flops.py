"""FLOP accounting for MFU, and device peak FLOP/s.

Training FLOPs per step = 3 × forward FLOPs (the backward pass costs twice the forward), with
forward = tokens · Σ_layers [2·N_layer + attention] + predictions · head, where
- N_layer = matmul weights of one layer: 4·D·H·Dh (q, k, v, out) + 2·D·F (GELU) or 3·D·F (SwiGLU);
- attention = 2 · 2·L·H·Dh per token (scores QKᵀ and the weighted sum AV), halved for causal models (a prefix
  LM's prefix adds its square's upper half: (1 + (N/L)²)/2, or (1 + E[(N/L)²])/2 for random N);
- head per predicted token: classical 2·D·V (+ 2·D·D for the BERT transform); headless CWT 2·K·D, where K
  is the negative-group size in predicted tokens (the [K,K] logits are the whole "head").
Embedding lookups, norms, softmax and the optimiser are not counted (standard MFU convention).

Routed layers (model.routing) count what they execute. A `topk` layer runs its routed part
(block, attention or MLP) on k = round(c·L) of L tokens: its matmuls scale by r = k/L and, when attention
is routed, its scores by r² (k queries × k keys). A `skip` layer computes densely in training (r = 1); at
inference its skipped tokens still give keys/values, so only queries, outputs, scores and MLP scale by r.
Routers add 2·D·(1 topk | 2 skip) per token, the causal topk predictor 2·(D·P + P).
`routing_flops_metrics` is the inference view: body FLOPs per token at the measured executed fractions, and
their saving against the dense model.

A biphasic clm_then_mlm run's steps cost what their phase's task costs: `train_flops_between` sums them.
An ELECTRA step adds its generator (its narrower layers on every token, its head on the predictions) and the
discriminator's detector on every token; its sampling (the generator's scores once more, no backward) counts 1×.
BPDec's decoder blocks (`mlm_decoder`) count as layers of the model on every token.
"""
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from headless_jax.model.generator import generator_config
from headless_jax.model.routing import capacity_tokens, executed_fractions, routed_layers
from headless_jax.objectives.masking import num_masked
from headless_jax.objectives.tasks import MASKED_TASKS, final_task, switch_step, trained_tasks

# bf16 dense peak FLOP/s per device (chip), from vendor data sheets.
PEAK_FLOPS = {
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12, "tpu v5e": 197e12,
    "tpu v5p": 459e12, "tpu v5": 459e12,
    "tpu v6 lite": 918e12, "tpu v6e": 918e12,
    "a100": 312e12,
    "h100": 989e12,
    "h200": 989e12,
}


def attention_share(config, task: str) -> float:
    """Share of the L² query-key pairs a step of `task` attends: 1 bidirectional, about ½ causal (more with a
    prefix LM's prefix)."""
    if task != "clm":
        return 1.0
    seq_len, prefix = config.data.seq_len, config.objective.prefix_length
    if prefix > 0:
        prefix_square = (prefix / seq_len) ** 2
    elif prefix < 0:  # N uniform in 1 … L-1
        prefix_square = sum(n * n for n in range(1, seq_len)) / ((seq_len - 1) * seq_len ** 2)
    else:
        prefix_square = 0.0
    return 0.5 * (1.0 + prefix_square)


def layer_forward_flops_per_token(model_cfg, seq_len: int, kind: str = "none", fraction: float = 1.0,
                                  share: float | None = None) -> tuple[float, float]:
    """(matmul FLOPs, attention-score FLOPs) of one layer per token, for a layer whose routed part (of router
    `kind`, none for a dense layer) runs on a `fraction` of the tokens; `share`: of the attention's L² pairs
    (default ½ for a causal model, else 1)."""
    m = model_cfg
    heads = m.num_heads * m.head_dim
    query_out, key_value = 2 * 2 * m.d_model * heads, 2 * 2 * m.d_model * heads
    mlp = 2 * (3 if m.activation == "swiglu" else 2) * m.d_model * m.mlp_dim
    scores = 2 * 2 * seq_len * heads * ((0.5 if m.causal else 1.0) if share is None else share)
    if kind == "none":
        return float(query_out + key_value + mlp), float(scores)
    r = fraction
    attention_routed, mlp_routed = m.routing.skip in ("block", "attention"), m.routing.skip in ("block", "mlp")
    key_value_fraction = r if kind == "topk" else 1.0  # skip: every token still gives keys and values
    router = 2 * m.d_model * (2 if kind == "skip" else 1)
    if kind == "topk" and m.causal:
        router += 2 * (m.d_model * m.routing.predictor_dim + m.routing.predictor_dim)
    matmuls = (query_out * (r if attention_routed else 1.0) + key_value * (key_value_fraction if attention_routed
               else 1.0) + mlp * (r if mlp_routed else 1.0) + router)
    return float(matmuls), float(scores * (r * key_value_fraction if attention_routed else 1.0))


def train_fractions(config) -> dict[int, float]:
    """Routed layer → share of tokens its routed part runs on in training: topk k/L; skip 1 (computed densely)."""
    seq_len = config.data.seq_len
    fraction = (capacity_tokens(config.model.routing.capacity, seq_len) / seq_len
                if config.model.routing.kind == "topk" else 1.0)
    return {layer: fraction for layer in routed_layers(config.model)}


def body_flops_per_token(config, fractions: dict[int, float], task: str | None = None) -> tuple[float, float]:
    """(matmul, attention-score) forward FLOPs per token over all layers, routed layers at `fractions`, in a step
    of `task` (default: the run's final task)."""
    m, kind = config.model, config.model.routing.kind
    share = attention_share(config, task or final_task(config))
    parts = [layer_forward_flops_per_token(m, config.data.seq_len, kind if i in fractions else "none",
                                           fractions.get(i, 1.0), share) for i in range(m.num_layers)]
    return sum(p[0] for p in parts), sum(p[1] for p in parts)


def routing_flops_metrics(config, metrics: dict[str, float]) -> dict[str, float]:
    """Effective body FLOPs per token at the executed fractions measured in `metrics`, and the saving
    against the dense model; {} without routing."""
    fractions = executed_fractions(config.model, metrics)
    if fractions is None:
        return {}
    effective = sum(body_flops_per_token(config, fractions))
    dense = sum(body_flops_per_token(config, {}))
    return {"routing/effective_flops_per_token": effective, "routing/flops_saving": 1.0 - effective / dense}


def predictions_per_sequence(config, task: str | None = None) -> int:
    """Predicted positions per sequence in a step of `task` (default: the run's final task): the static number
    the loss is computed on (a prefix LM's prefix among them, weighted 0)."""
    seq_len = config.data.seq_len
    if (task or final_task(config)) in MASKED_TASKS:
        return num_masked(seq_len, config.objective.mask_rate)
    return seq_len - 1


def group_predictions(config, microbatch_rows: int, task: str | None = None) -> int:
    """K: predicted tokens in one CWT negative group."""
    sequences = config.objective.cwt_group_size or microbatch_rows
    return sequences * predictions_per_sequence(config, task)


def forward_flops_per_sequence(config, microbatch_rows: int, task: str | None = None) -> dict[str, float]:
    """Forward FLOPs for one sequence, split into body matmuls, attention scores and head+loss; ELECTRA adds its
    generator's (body, attention and head: all in `generator`) and its draws (`sampling`, forward only)."""
    m, seq_len, task = config.model, config.data.seq_len, task or final_task(config)
    body, attention = (seq_len * f for f in body_flops_per_token(config, train_fractions(config), task))
    predictions = predictions_per_sequence(config, task)
    parts = {"body": float(body), "attention": float(attention)}
    if m.mlm_decoder_layers:  # BPDec's pretraining-only blocks, bidirectional, on every token
        parts["mlm_decoder"] = float(seq_len * sum(layer_forward_flops_per_token(m, seq_len, share=1.0))
                                     * m.mlm_decoder_layers)
    if task == "electra":
        generator = generator_config(m, m.electra_generator)
        generator_body = sum(layer_forward_flops_per_token(generator, seq_len)) * m.num_layers * seq_len
        embedding_projection = 2 * m.d_model * generator.d_model * seq_len
        # headless: its projection to E's width; classical: BERT's transform to it (then the vocabulary below)
        parts["generator"] = float(generator_body + embedding_projection + predictions * (
            2 * generator.d_model * m.d_model + vocabulary_head_flops(config, microbatch_rows, task, transform=False)))
        parts["head"] = float(seq_len * (2 * m.d_model * m.d_model + 2 * m.d_model))  # the replaced-token detector
        parts["sampling"] = float(predictions * vocabulary_head_flops(config, microbatch_rows, task, transform=False))
        return parts
    ce_rows = seq_len if task == "mlm" and config.objective.ce_all_positions else predictions
    head = 0.0
    if "ce" in config.objective.loss.split("+"):
        head += ce_rows * vocabulary_head_flops(config, microbatch_rows, task, terms=("ce",))
    if "cwt" in config.objective.loss.split("+"):
        head += predictions * vocabulary_head_flops(config, microbatch_rows, task, terms=("cwt",))
    parts["head"] = float(head)
    return parts


def vocabulary_head_flops(config, microbatch_rows: int, task: str, terms: tuple[str, ...] = ("cwt", "ce"),
                          transform: bool = True) -> float:
    """Forward FLOPs per prediction of scoring its targets: classical 2·D·V (+ 2·D·D for the BERT transform, unless
    `transform` is False), headless CWT 2·K·D; for the loss terms of objective.loss among `terms`."""
    m, used = config.model, config.objective.loss.split("+")
    flops = 0.0
    if "ce" in used and "ce" in terms:
        flops += 2 * m.d_model * m.vocab_size
        if transform and not m.causal and m.mlm_head_transform:
            flops += 2 * m.d_model * m.d_model
    if "cwt" in used and "cwt" in terms:
        flops += 2 * group_predictions(config, microbatch_rows, task) * m.d_model
    return float(flops)


FORWARD_ONLY_PARTS = ("sampling",)  # ELECTRA's draws: integers, no backward pass


def train_flops_per_step(config, task: str | None = None) -> dict[str, float]:
    """Training FLOPs of one optimiser step of `task` (default: the run's final task) over the global batch, by
    part and in total: 3 × forward, but 1 × for the forward-only parts."""
    rows = config.train.global_batch_size
    per_sequence = forward_flops_per_sequence(config, rows // config.train.microbatches, task)
    parts = {k: (1 if k in FORWARD_ONLY_PARTS else 3) * rows * v for k, v in per_sequence.items()}
    parts["total"] = sum(parts.values())
    return parts


def train_flops_between(config, start, end):
    """Training FLOPs of the steps start … end-1 (each at its phase's cost in a biphasic run); start and end may
    be NumPy arrays of steps."""
    if config.objective.task != "clm_then_mlm":
        return (end - start) * train_flops_per_step(config)["total"]
    switch = switch_step(config.objective, config.train.num_steps)
    clm_steps = np.maximum(0, np.minimum(end, switch) - start)
    return (clm_steps * train_flops_per_step(config, "clm")["total"]
            + (end - start - clm_steps) * train_flops_per_step(config, "mlm")["total"])


def steps_within_budget(config, budget: float) -> int:
    """The most steps N whose training FLOPs (train_flops_between(config at num_steps=N, 0, N)) fit `budget`: what a
    run with train.flops_budget trains. A biphasic run's phases follow N, so N is searched (the cost grows with N)."""
    def cost(num_steps: int) -> float:
        trial = ml_collections.ConfigDict(config.to_dict())
        trial.train.num_steps = num_steps
        return float(train_flops_between(trial, 0, num_steps))

    cheapest = min(train_flops_per_step(config, task)["total"] for task in trained_tasks(config))
    low, high = 0, int(budget // cheapest) + 1  # cost(high) ≥ high · cheapest > budget
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if cost(middle) <= budget else (low, middle)
    return low


def measured_peak_flops(size: int = 1024, repeats: int = 5) -> float:
    """A float32 matmul's measured FLOP/s on the default device: the 'peak' for CPUs, which have no table."""
    x = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul(x).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul(x).block_until_ready()
    return repeats * 2 * size ** 3 / (time.perf_counter() - start)


def peak_flops_per_device(configured: float = 0.0) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the figure comes from)."""
    if configured > 0:
        return configured, "configured"
    kind = jax.devices()[0].device_kind.lower()
    for name, flops in PEAK_FLOPS.items():
        if name in kind:
            return flops, f"table ({name})"
    return measured_peak_flops(), "measured float32 matmul"
