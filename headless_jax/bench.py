"""Speed benchmark: headless (CWT, no head) vs classical (CE + head) train steps at equal shape.

    python -m headless_jax.bench --config=configs/pythia70m.py --out=DIR [--config.x=y ...]
        [--sweep=none|vocab|group|batch|routing] [--steps=N] [--batch=N] [--vocabs=8192,...] [--groups=...]
        [--batches=...] [--capacities=0.5,...] [--objectives=cwt,ce] [--nohead_share]
        [--cwt_k [--cwt_ks=1024,...] [--cwt_time_max_k=N]]

Each case compiles the real train step (the config's experiment: its objective and optimiser, on a mesh over
the available devices, random token batches) and reports, per row:
- step time: median, min and max of --steps timed steps (the first call after compiling is a warm-up and
  not timed), each `time.perf_counter` around `jax.block_until_ready` of the outputs; cpu_ms_median: the
  process CPU time (all threads) of those steps, steadier than wall time on a shared CPU host;
- tokens/s = global batch · seq_len / median step time;
- MFU = flops.train_flops_per_step(config)['total'] / (median · peak FLOP/s per device · devices), with the
  formula of headless_jax.train.flops (6·N·tokens + attention, causal halved, + head) and its peak source;
- peak device memory from the compiled step's memory analysis: temp + argument + output − alias bytes
  (donated state is counted once), None where the backend reports nothing; bytes_accessed: XLA's cost
  analysis of the step (a scanned layer counts once), a load-independent view of vocabulary-sized work;
- head_share = 1 − t_body / t_full, where t_body times the same train step with a stand-in "body-only"
  objective, loss = mean(h²) over the final hidden states (no head, no CE/CWT), clipped at 0 (None with
  --nohead_share, which skips that second timing).
`--sweep=routing` times the dense model against `topk` routing (Mixture-of-Depths, docs/method.md) at each of
--capacities on the config's model.routing.layers (default every other layer), both objectives, layers not
scanned in any case (a routed/dense mix cannot be scanned); flops_per_step counts what the routed layers run.

`--cwt_k` instead compares the dense and blockwise CWT loss (value and gradient, jitted) on random o, t of
K rows: compiled memory for every K, and times where the dense [K,K] logits fit --host_memory_gb.
Outputs: a markdown table (printed and DIR/bench_<mode>.md), DIR/bench_<mode>.json, and for the vocabulary
sweep DIR/vocab_sweep.png (step time and memory vs vocabulary size, both objectives).
"""
import dataclasses
import json
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from headless_jax import objectives
from headless_jax.config import set_objective
from headless_jax.experiment import Experiment, build_experiment
from headless_jax.model import embedding_matrix
from headless_jax.train import flops

DEFAULT_VOCABS = (8192, 32768, 50304, 131072, 262144)
DEFAULT_CWT_KS = (1024, 2048, 4096, 8192, 16384, 32768, 65536)
FIRST_ORDINARY_TOKEN = 7  # random tokens avoid the special ids (0..6 by default)


def body_only_objective(model):
    """Stand-in objective for timing the body: loss = mean(h²) of the final hidden states (no head, no loss)."""
    def objective_fn(params, batch, rng, deterministic, embedding_rows_U=None):
        rows_UxD = None if embedding_rows_U is None else embedding_matrix(params)  # a sparse embedding update's rows
        h_BxLxD = model.apply({"params": params}, objectives.embedding_index(batch["tokens"], embedding_rows_U),
                              batch["segment_ids"], batch["positions"], deterministic=deterministic,
                              embedding_rows_UxD=rows_UxD, rngs={"dropout": rng})
        loss = jnp.mean(jnp.square(h_BxLxD.astype(jnp.float32)))
        return loss, {"loss": loss, "num_predictions": jnp.float32(h_BxLxD.shape[0] * h_BxLxD.shape[1])}
    return objective_fn


def random_batch(rows: int, seq_len: int, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(FIRST_ORDINARY_TOKEN, vocab, size=(rows, seq_len)).astype(np.int32)
    return {"tokens": tokens, "segment_ids": np.ones_like(tokens),
            "positions": np.tile(np.arange(seq_len, dtype=np.int32), (rows, 1))}


def memory_bytes(compiled) -> int | None:
    """Peak device memory of a compiled computation, or None where the backend has no analysis."""
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        return None
    if analysis is None:
        return None
    fields = [getattr(analysis, f"{name}_size_in_bytes", None) for name in ("temp", "argument", "output")]
    if all(f is None for f in fields):
        return None
    return int(sum(f or 0 for f in fields) - (getattr(analysis, "alias_size_in_bytes", 0) or 0))


def bytes_accessed(compiled) -> float | None:
    """XLA's estimate of the bytes a compiled computation reads and writes, or None where there is none.
    A loop body (scanned layers, microbatches) is counted once: use it to compare vocabulary-sized work."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return (cost or {}).get("bytes accessed")


def time_calls(call, steps: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds (all threads) of each of `steps` calls of `call()` (which returns
    the arrays to wait for). On a CPU shared with other jobs the CPU time is the steadier of the two."""
    times, cpu_times = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times


def time_train_steps(experiment: Experiment, objectives_of: list, batch, steps: int) -> list[tuple]:
    """For each objective (a function of the model), (step times in s, CPU times in s, compiled memory bytes,
    bytes accessed) of the experiment's train step with that objective; one state serves all."""
    results = []
    layout = experiment.layout
    with layout.active():
        state = experiment.init_state()
        device_batch = layout.global_batch(batch)
        for objective_of in objectives_of:
            step = dataclasses.replace(experiment, objective=objective_of(experiment.model)).train_step
            compiled = step.lower(state, device_batch).compile()
            state = jax.block_until_ready(compiled(state, device_batch)[0])  # warm-up, not timed
            holder = {"state": state}

            def call():
                holder["state"], metrics = compiled(holder["state"], device_batch)
                return holder["state"], metrics

            times, cpu_times = time_calls(call, steps)
            state = holder["state"]
            results.append((times, cpu_times, memory_bytes(compiled), bytes_accessed(compiled)))
    return results


def bench_case(config, name: str, steps: int, devices=None, peak: tuple[float, str] | None = None,
               head_share: bool = True) -> dict:
    """One row: the config's train step timed in full and (for head_share) with the body-only objective."""
    devices = jax.devices() if devices is None else devices
    experiment = build_experiment(config, devices)
    batch = random_batch(config.train.global_batch_size, config.data.seq_len, config.model.vocab_size, config.seed)
    configured = lambda model: experiment.objective  # noqa: E731
    timed = time_train_steps(experiment, [configured, body_only_objective][:2 if head_share else 1], batch, steps)
    (times, cpu_times, memory, accessed), median = timed[0], statistics.median(timed[0][0])
    body_median = statistics.median(timed[1][0]) if head_share else None
    peak_flops, peak_source = peak or flops.peak_flops_per_device(config.train.peak_flops_per_device)
    step_flops = flops.train_flops_per_step(config)
    tokens = config.train.global_batch_size * config.data.seq_len
    return {
        "config": name, "objective": config.objective.loss, "head": config.model.head,
        "embedding_update": config.optim.embedding_update,
        "task": config.objective.task, "vocab": config.model.vocab_size, "routing": routing_label(config.model),
        "batch": config.train.global_batch_size, "batch_per_device": config.train.global_batch_size // len(devices),
        "seq_len": config.data.seq_len, "group_size": config.objective.cwt_group_size,
        "step_ms_median": 1e3 * median, "step_ms_min": 1e3 * min(times), "step_ms_max": 1e3 * max(times),
        "cpu_ms_median": 1e3 * statistics.median(cpu_times),
        "body_step_ms_median": None if body_median is None else 1e3 * body_median, "tokens_per_s": tokens / median,
        "flops_per_step": step_flops["total"], "head_flops_per_step": step_flops["head"],
        "mfu": step_flops["total"] / (median * peak_flops * len(devices)),
        "peak_flops_per_device": peak_flops, "peak_flops_source": peak_source,
        "peak_memory_bytes": memory, "bytes_accessed": accessed,
        "head_share": None if body_median is None else max(0.0, 1.0 - body_median / median),
        "devices": len(devices), "device_kind": devices[0].device_kind, "jax_version": jax.__version__,
        "steps": steps,
    }


def routing_label(model_cfg) -> str:
    """'none', or e.g. 'topk c=0.5 every:2 block' for a routed model."""
    kind = model_cfg.routing.kind
    if kind == "none":
        return kind
    r = model_cfg.routing
    amount = f"c={r.capacity}" if kind == "topk" else f"P={r.target}"
    return f"{kind} {amount} {r.layers} {r.skip}"


def with_objective(config, loss: str, classical_head: str):
    """The config as its headless or classical twin; a classical twin updates E densely (its gradient is dense)."""
    c = set_objective(ml_collections.ConfigDict(config.to_dict()), loss, classical_head)
    if loss != "cwt":
        c.optim.embedding_update = "dense"
    return c


def classical_head_of(config) -> str:
    """The config's own head if it has one; else the repo's convention: untied for CLM, tied for MLM."""
    if config.model.head != "none":
        return config.model.head
    return "untied" if config.model.causal else "tied"


def sweep_configs(config, sweep: str, values, losses=("cwt", "ce")) -> list:
    """(headless, classical) twins of `config` (or only the `losses` asked for) for each value of the sweep."""
    head = classical_head_of(config)
    cases = []
    for value in values if sweep != "none" else [None]:
        for loss in losses:
            c = with_objective(config, loss, head)
            if sweep == "vocab":
                c.model.vocab_size = value
            elif sweep == "group":
                c.objective.cwt_group_size = value
            elif sweep == "batch":
                c.train.global_batch_size = value
                if c.objective.cwt_group_size:  # keep the group a divisor of the batch
                    c.objective.cwt_group_size = math.gcd(c.objective.cwt_group_size, value)
            elif sweep == "routing":  # value 0: the dense model; else topk at capacity `value`
                c.model.scan_layers = False
                c.model.routing.update(kind="topk" if value else "none", capacity=value or c.model.routing.capacity)
            if sweep == "group" and loss == "ce" and any(case.objective.loss == "ce" for case in cases):
                continue  # the classical step does not depend on the CWT group size: measure it once
            cases.append(c)
    return cases


def run_sweep(config, sweep: str, values, steps: int, name: str, devices=None, log=print,
              losses=("cwt", "ce"), head_share: bool = True, columns: tuple[str, ...] | None = None) -> list[dict]:
    devices = jax.devices() if devices is None else devices
    peak = flops.peak_flops_per_device(config.train.peak_flops_per_device)
    log(f"MFU = train_flops_per_step / (median step time × peak × {len(devices)} devices); peak "
        f"{peak[0]:.3g} FLOP/s per device ({peak[1]}). FLOPs formula: headless_jax.train.flops:\n"
        f"{flops.__doc__}")
    rows = []
    for c in sweep_configs(config, sweep, values, losses):
        rows.append(bench_case(c, name, steps, devices, peak, head_share))
        log(format_table(rows[-1:], columns or TABLE_COLUMNS, header=not rows[:-1]))
    return rows


ROUTING_COLUMNS = ("objective", "routing", "batch", "seq_len", "step_ms_median", "step_ms_min", "step_ms_max",
                   "tokens_per_s", "flops_per_step", "mfu", "peak_memory_bytes")
TABLE_COLUMNS = ("objective", "embedding_update", "vocab", "batch", "seq_len", "group_size", "step_ms_median",
                 "step_ms_min", "step_ms_max", "cpu_ms_median", "tokens_per_s", "mfu", "peak_memory_bytes",
                 "bytes_accessed", "head_share")


def format_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(rows: list[dict], columns=TABLE_COLUMNS, header: bool = True) -> str:
    lines = []
    if header:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_vocab_sweep(rows: list[dict], path: str) -> None:
    """Step time and peak memory vs vocabulary size for both objectives (cf. the headless-LM paper's Fig. 6)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    for loss, label in (("cwt", "headless (CWT)"), ("ce", "classical (CE)")):
        points = sorted((r["vocab"], r["step_ms_median"], r["peak_memory_bytes"]) for r in rows
                        if r["objective"] == loss)
        if not points:
            continue
        vocabs = [p[0] for p in points]
        ax_time.plot(vocabs, [p[1] for p in points], marker="o", label=label)
        if all(p[2] is not None for p in points):
            ax_mem.plot(vocabs, [p[2] / 2**30 for p in points], marker="o", label=label)
    for ax, ylabel in ((ax_time, "step time (ms, median)"), (ax_mem, "peak device memory (GiB, compiled)")):
        ax.set_xscale("log")
        ax.set_xlabel("vocabulary size")
        ax.set_ylabel(ylabel)
        ax.legend()
    device = rows[0]["device_kind"] if rows else ""
    fig.suptitle(f"{rows[0]['config'] if rows else ''}: train step vs vocabulary size ({device})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclasses.dataclass
class CwtCase:
    k: int
    dim: int
    block_size: int  # 0 = dense


def cwt_k_case(case: CwtCase, steps: int, host_memory_bytes: float, time_max_k: int = 0) -> dict:
    """Compiled memory, and times where feasible (and K ≤ time_max_k, if > 0), of the CWT loss's value and
    gradient on random o, t [K,D]."""
    rng_o, rng_t = jax.random.split(jax.random.PRNGKey(0))
    o = jax.random.normal(rng_o, (1, case.k, case.dim), jnp.float32) / math.sqrt(case.dim)
    t = jax.random.normal(rng_t, (1, case.k, case.dim), jnp.float32) / math.sqrt(case.dim)
    valid = jnp.ones((1, case.k), jnp.float32)

    def loss(o, t):
        return objectives.cwt_loss(o, t, valid, group_size=1, block_size=case.block_size)

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    compiled = value_and_grad.lower(o, t).compile()
    memory = memory_bytes(compiled)
    # The dense loss keeps [K,K] float32 logits and their softmax for the backward pass.
    needed = 2 * 4 * case.k**2 if case.block_size == 0 else (memory or 0)
    row = {"mode": "dense" if case.block_size == 0 else f"blockwise({case.block_size})", "k": case.k,
           "dim": case.dim, "block_size": case.block_size, "peak_memory_bytes": memory,
           "device_kind": jax.devices()[0].device_kind, "jax_version": jax.__version__, "note": ""}
    skip = (f"not run: needs ~{needed / 2**30:.1f} GiB > host budget {host_memory_bytes / 2**30:.1f} GiB"
            if needed > host_memory_bytes else
            f"not timed: K > --cwt_time_max_k={time_max_k}" if 0 < time_max_k < case.k else None)
    if skip:
        row.update(step_ms_median=None, step_ms_min=None, step_ms_max=None, cpu_ms_median=None, note=skip)
        return row
    jax.block_until_ready(compiled(o, t))  # warm-up
    times, cpu_times = time_calls(lambda: compiled(o, t), steps)
    row.update(step_ms_median=1e3 * statistics.median(times), step_ms_min=1e3 * min(times),
               step_ms_max=1e3 * max(times), cpu_ms_median=1e3 * statistics.median(cpu_times))
    return row


def run_cwt_k(ks, dim: int, block_size: int, steps: int, host_memory_bytes: float, log=print,
              time_max_k: int = 0) -> list[dict]:
    rows = []
    for k in ks:
        for block in (0, min(block_size, k)):
            rows.append(cwt_k_case(CwtCase(k, dim, block), steps, host_memory_bytes, time_max_k))
            log(format_table(rows[-1:], CWT_COLUMNS, header=len(rows) == 1))
    return rows


CWT_COLUMNS = ("mode", "k", "dim", "step_ms_median", "step_ms_min", "step_ms_max", "cpu_ms_median",
               "peak_memory_bytes", "note")


def write_outputs(rows: list[dict], out: str, mode: str, columns=TABLE_COLUMNS) -> dict[str, str]:
    os.makedirs(out, exist_ok=True)
    paths = {"json": os.path.join(out, f"bench_{mode}.json"), "md": os.path.join(out, f"bench_{mode}.md")}
    with open(paths["json"], "w") as f:
        json.dump(rows, f, indent=1)
    with open(paths["md"], "w") as f:
        f.write(format_table(rows, columns) + "\n")
    if mode == "vocab":
        paths["png"] = os.path.join(out, "vocab_sweep.png")
        plot_vocab_sweep(rows, paths["png"])
    return paths


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


if __name__ == "__main__":
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
    _OUT = flags.DEFINE_string("out", None, "Directory for the JSON, markdown table and plot.")
    _SWEEP = flags.DEFINE_enum("sweep", "none", ["none", "vocab", "group", "batch", "routing"], "What to sweep.")
    _STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per case (after one untimed warm-up).")
    _BATCH = flags.DEFINE_integer("batch", 8, "Sequences per device (global batch = this × devices).")
    _VOCABS = flags.DEFINE_string("vocabs", ",".join(map(str, DEFAULT_VOCABS)), "Vocabulary sizes (vocab sweep).")
    _GROUPS = flags.DEFINE_string("groups", "1,2,4,8", "CWT group sizes in sequences (group sweep; 0 = batch).")
    _BATCHES = flags.DEFINE_string("batches", "4,8,16,32", "Sequences per device (batch sweep).")
    _CAPACITIES = flags.DEFINE_string("capacities", "0.5", "topk capacities against dense (routing sweep).")
    _OBJECTIVES = flags.DEFINE_list("objectives", ["cwt", "ce"], "Which twins to time: cwt (headless), ce.")
    _HEAD_SHARE = flags.DEFINE_bool("head_share", True, "Also time the body-only step (doubles the run time).")
    _CWT_K = flags.DEFINE_bool("cwt_k", False, "Compare dense vs blockwise CWT over K instead of train steps.")
    _CWT_KS = flags.DEFINE_string("cwt_ks", ",".join(map(str, DEFAULT_CWT_KS)), "K values for --cwt_k.")
    _CWT_BLOCK = flags.DEFINE_integer("cwt_block", 1024, "Column block of the blockwise CWT in --cwt_k.")
    _HOST_GB = flags.DEFINE_float("host_memory_gb", 8.0, "--cwt_k: dense cases needing more are compiled only.")
    _CWT_TIME_MAX_K = flags.DEFINE_integer("cwt_time_max_k", 0, "--cwt_k: larger K are compiled only (0 = time all).")
    flags.mark_flags_as_required(["config", "out"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        config = _CONFIG.value
        if _CWT_K.value:
            rows = run_cwt_k(int_list(_CWT_KS.value), config.model.d_model, _CWT_BLOCK.value, _STEPS.value,
                             _HOST_GB.value * 2**30, time_max_k=_CWT_TIME_MAX_K.value)
            paths = write_outputs(rows, _OUT.value, "cwt_k", CWT_COLUMNS)
        else:
            devices = jax.devices()
            name = os.path.basename(config_flags.get_config_filename(flags.FLAGS["config"]))
            config.train.global_batch_size = _BATCH.value * len(devices)
            capacities = [0.0] + [float(v) for v in _CAPACITIES.value.split(",") if v]  # 0: the dense model
            values = {"vocab": int_list(_VOCABS.value), "group": int_list(_GROUPS.value),
                      "batch": [b * len(devices) for b in int_list(_BATCHES.value)], "routing": capacities,
                      "none": []}[_SWEEP.value]
            columns = ROUTING_COLUMNS if _SWEEP.value == "routing" else TABLE_COLUMNS
            rows = run_sweep(config, _SWEEP.value, values, _STEPS.value, name, devices, losses=_OBJECTIVES.value,
                             head_share=_HEAD_SHARE.value, columns=columns)
            paths = write_outputs(rows, _OUT.value, _SWEEP.value, columns)
        print("\n" + format_table(rows, CWT_COLUMNS if _CWT_K.value else columns))
        print("wrote " + ", ".join(paths.values()))

    app.run(main)
