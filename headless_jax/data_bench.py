"""Data-path benchmark: `python -m headless_jax.data_bench --out=DIR [--corpus_mb=100,1000] [--processes=1,2]`.

On synthetic JSON Lines corpora of the given sizes (paragraphs of the embedded novels, shuffled, 16 MB files):
- the tokenizer's own batch encoder (the ceiling) in tokens/s, on the first corpus;
- `headless_jax.prepare` in tokens/s per worker process with 1 and 2 local processes (the host's cores shared
  among them), each run in a fresh subprocess whose peak resident memory (the largest process) is reported,
  per corpus size; the time is prepare()'s own (tokenizer load, spawning, tokenising, writing), without the
  interpreter's start-up and imports;
- the training input: the time to fetch one demo batch from the store, mapped and by byte ranges, against the
  demo's train step time (measured here with the real step).
Prints a markdown table and writes DIR/data_bench.json and DIR/data_bench.md.
"""
import json
import os
import random
import statistics
import subprocess
import sys
import time

from absl import app, flags

_OUT = flags.DEFINE_string("out", None, "Directory for the corpora, stores and results.")
_CORPUS_MB = flags.DEFINE_list("corpus_mb", ["100", "1000"], "Synthetic corpus sizes in MB.")
_PROCESSES = flags.DEFINE_list("processes", ["1", "2"], "Local prepare processes to compare.")
_BATCHES = flags.DEFINE_integer("batches", 50, "Batches fetched per input timing.")
flags.mark_flags_as_required(["out"])

FILE_MB = 16


def synthetic_corpus(directory: str, megabytes: int, seed: int = 0) -> str:
    """JSON Lines files of shuffled paragraphs of the embedded books, `megabytes` in all; returns the glob."""
    from headless_jax.data import book_names, read_book

    os.makedirs(directory, exist_ok=True)
    paragraphs = [p for name in book_names() for p in read_book(name).split("\n\n") if p.strip()]
    rng, written, index = random.Random(seed), 0, 0
    while written < megabytes * 2**20:
        lines = []
        size = 0
        while size < FILE_MB * 2**20 and written + size < megabytes * 2**20:
            document = "\n\n".join(rng.sample(paragraphs, 20))
            lines.append(json.dumps({"text": document}) + "\n")
            size += len(lines[-1])
        with open(os.path.join(directory, f"part-{index:05d}.jsonl"), "w") as f:
            f.writelines(lines)
        written, index = written + size, index + 1
    return os.path.join(directory, "*.jsonl")


def bench_config(sources: str):
    from headless_jax.config import base_config

    config = base_config()
    config.data.update(sources=sources, tokenizer_sample_chars=2_000_000)
    return config


def tokenizer_ceiling(config, pattern: str) -> dict:
    """The tokenizer's own encode_batch over the corpus: tokens/s (all threads, one process)."""
    from headless_jax.data import load_tokenizer, parse_sources

    tokenizer = load_tokenizer(config, os.path.join(_OUT.value, "tokenizer"))
    (source,) = parse_sources(f"jsonl:{pattern}")
    tokens, seconds, batch = 0, 0.0, []
    for document in source.documents():
        batch.append(document)
        if sum(map(len, batch)) >= config.data.shard_chars:
            start = time.perf_counter()
            tokens += sum(map(len, tokenizer.encode_batch(batch)))
            seconds += time.perf_counter() - start
            batch = []
    if batch:
        start = time.perf_counter()
        tokens += sum(map(len, tokenizer.encode_batch(batch)))
        seconds += time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


# Runs its arguments as a command and prints the peak RSS (KiB) of the largest process it waited for.
_PEAK_RSS = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def timed_prepare(pattern: str, out: str, processes: int, tokenizer_model: str) -> dict:
    """`python -m headless_jax.prepare` in a fresh subprocess: wall time and the peak RSS of its largest process."""
    start = time.perf_counter()
    measured = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, sys.executable, "-m", "headless_jax.prepare", "--config=configs/demo.py",
         f"--out={out}", f"--config.data.sources=jsonl:{pattern}", f"--config.data.tokenizer_model={tokenizer_model}",
         f"--processes={processes}"], check=True, capture_output=True, text=True,
        cwd=os.path.join(os.path.dirname(__file__), ".."))
    wall_s = time.perf_counter() - start
    peak_kb = int(measured.stdout.split()[-1])
    seconds = float(measured.stdout.split(" shards in ", 1)[1].split(" s;", 1)[0])  # prepare()'s own time
    ledger = [json.load(open(os.path.join(root, f))) for root, _, names in os.walk(os.path.join(out, "ledger"))
              for f in names if "-" in f]
    tokens = sum(entry["train"]["tokens"] + entry["heldout"]["tokens"] for entry in ledger)
    return {"processes": processes, "tokens": tokens, "seconds": seconds, "wall_s": wall_s,
            "tokens_per_s_per_process": tokens / seconds / processes,
            "peak_rss_mb": peak_kb / 1024}


def input_share(store: str, tokenizer_model: str, sources: str) -> list[dict]:
    """Fetching a demo batch from the store (mapped, then by ranges) against the demo's train step."""
    import jax

    from headless_jax import data as data_lib
    from headless_jax.bench import random_batch, time_calls
    from headless_jax.config import sibling_config
    from headless_jax.experiment import build_experiment

    config = sibling_config(os.path.join(os.path.dirname(__file__), "..", "configs", "x.py"), "demo")
    config.data.update(store=store, tokenizer_model=tokenizer_model, sources=sources)
    experiment = build_experiment(config)
    with experiment.layout.active():
        state = experiment.init_state()
        batch = experiment.layout.global_batch(random_batch(32, 128, 8192))
        state, _ = experiment.train_step(state, batch)  # compile
        holder = {"state": state}

        def step():
            holder["state"], metrics = experiment.train_step(holder["state"], batch)
            return metrics
        step_s = statistics.median(time_calls(step, 10)[0])
    rows = []
    for ranges in (False, True):
        config.data.range_reads = ranges
        tokenizer = data_lib.data_tokenizer(config, os.path.join(_OUT.value, "cache"))
        iterator = data_lib.train_iterator(config, tokenizer, os.path.join(_OUT.value, "cache"))
        next(iterator)
        times = []
        for _ in range(_BATCHES.value):
            start = time.perf_counter()
            next(iterator)
            times.append(time.perf_counter() - start)
        fetch = statistics.median(times)
        rows.append({"read": "byte ranges" if ranges else "mapped", "fetch_ms_median": 1e3 * fetch,
                     "step_ms_median": 1e3 * step_s, "share_of_step": fetch / step_s,
                     "device": jax.devices()[0].device_kind})
    return rows


def main(argv):
    del argv
    out = _OUT.value
    os.makedirs(out, exist_ok=True)
    from headless_jax.data import load_tokenizer

    results = {"prepare": [], "input": []}
    corpora = {int(mb): synthetic_corpus(os.path.join(out, f"corpus_{mb}mb"), int(mb)) for mb in _CORPUS_MB.value}
    first = next(iter(corpora.values()))
    config = bench_config(f"jsonl:{first}")
    tokenizer = load_tokenizer(config, os.path.join(out, "tokenizer"))
    tokenizer_model = os.path.join(out, "tokenizer.model")
    tokenizer.save_to_run(out)
    results["ceiling"] = tokenizer_ceiling(config, first)
    print(f"tokenizer encode_batch (ceiling): {results['ceiling']['tokens_per_s']:.0f} tokens/s")
    for mb, pattern in corpora.items():
        for processes in map(int, _PROCESSES.value):
            store = os.path.join(out, f"store_{mb}mb_{processes}p")
            subprocess.run(["rm", "-rf", store], check=True)
            row = dict(timed_prepare(pattern, store, processes, tokenizer_model), corpus_mb=mb)
            row["share_of_ceiling"] = row["tokens_per_s_per_process"] * processes / results["ceiling"]["tokens_per_s"]
            results["prepare"].append(row)
            print(row)
    smallest = min(corpora)
    results["input"] = input_share(os.path.join(out, f"store_{smallest}mb_{_PROCESSES.value[0]}p"), tokenizer_model,
                                   f"jsonl:{corpora[smallest]}")
    lines = ["| corpus MB | processes | tokens | s (command s) | tokens/s per process | share of ceiling | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['corpus_mb']} | {r['processes']} | {r['tokens']} | {r['seconds']:.1f} ({r['wall_s']:.1f}) | "
              f"{r['tokens_per_s_per_process']:.0f} | {r['share_of_ceiling']:.2f} | {r['peak_rss_mb']:.0f} |"
              for r in results["prepare"]]
    lines += ["", "| read | fetch ms (median) | demo step ms (median) | share of step |", "|---|---|---|---|"]
    lines += [f"| {r['read']} | {r['fetch_ms_median']:.3f} | {r['step_ms_median']:.1f} | {r['share_of_step']:.4f} |"
              for r in results["input"]]
    table = "\n".join(lines)
    print(f"ceiling: {results['ceiling']['tokens_per_s']:.0f} tokens/s\n" + table)
    with open(os.path.join(out, "data_bench.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(out, "data_bench.md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    app.run(main)
