"""Tokenise a config's sources into a token store: `python -m headless_jax.prepare --config=configs/X.py --out=DIR`.

Every worker runs the same command (`launch/prepare.sh` starts it on each TPU worker, `srun` on each SLURM
task): worker w of W (`--worker`/`--workers`, else the process index and count jax.distributed finds there,
else 0 of 1) builds units w, w + W, … of the sources, and `--processes=P` splits its share over P local processes. Worker 0 first trains the tokenizer from a
sample of the sources (or takes data.tokenizer_model) and writes it into DIR; the others wait for it. Re-running
the command builds only the shards the ledger lacks. Then train with `--config.data.store=DIR`.
"""
import json
import multiprocessing
import os
import time

import jax
import ml_collections
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from headless_jax import command, distributed
from headless_jax.data import DataError, TokenStore, load_tokenizer, manifest, parse_sources
from headless_jax.data.tokenizer import load_run_tokenizer
from headless_jax.validate import validate_config

def worker_from_cluster(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(worker, workers): this process's index and the process count on a TPU pod or a SLURM allocation, as
    jax.distributed finds them for training (launch/prepare.sh, srun); (0, 1) on one machine."""
    distributed.initialize(config.distributed)
    return jax.process_index(), jax.process_count()


def store_tokenizer(config: ml_collections.ConfigDict, out: epath.Path, first: bool, wait_s: float):
    """Worker 0 trains (or loads) the tokenizer and writes it into the store; the others wait for it there."""
    if first:
        tokenizer = load_tokenizer(config, out / "cache")
        tokenizer.save_to_run(out)
        return tokenizer
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return load_run_tokenizer(out, config.model.vocab_size)
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise DataError(f"{out}: worker 0 wrote no tokenizer within {wait_s:.0f} s; start worker 0 (it trains "
                                "the tokenizer), or raise --tokenizer_wait_s") from None
            time.sleep(2.0)


def build_share(config_json: str, out: str, worker: int, workers: int, threads: int) -> int:
    """One process's units of the store (a top-level function: local processes are spawned with it), encoding on
    `threads` threads."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    tokenizer = load_run_tokenizer(out, config.model.vocab_size)
    tokenizer.threads = threads
    sources = parse_sources(config.data.sources)
    store = TokenStore(out, manifest(sources, tokenizer, config.data.heldout_fraction, config.data.shard_chars))
    return store.build(sources, tokenizer, worker, workers)


def prepare(config: ml_collections.ConfigDict, out: str, worker: int = 0, workers: int = 1, processes: int = 1,
            tokenizer_wait_s: float = 3600.0) -> dict:
    """Builds worker `worker`'s share of the store in `out`; returns what it did and what is still missing."""
    validate_config(config, None)
    start = time.perf_counter()
    out_path = epath.Path(out)
    tokenizer = store_tokenizer(config, out_path, worker == 0, tokenizer_wait_s)
    sources = parse_sources(config.data.sources)
    store = TokenStore(out, manifest(sources, tokenizer, config.data.heldout_fraction, config.data.shard_chars))
    store.check_manifest(create=True)
    config_json = config.to_json()
    threads = max(1, (os.cpu_count() or 1) // processes)  # the host's cores, shared by its processes
    shares = [(config_json, out, worker * processes + p, workers * processes, threads) for p in range(processes)]
    if processes == 1:
        written = build_share(*shares[0])
    else:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            written = sum(pool.starmap(build_share, shares))
    missing = store.missing_units()
    return {"shards_written": written, "seconds": time.perf_counter() - start, "units_missing": len(missing)}


if __name__ == "__main__":  # flags only for the command: importing `prepare` defines none
    _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
    _OUT = flags.DEFINE_string("out", None, "The store directory (local or gs://), shared by all workers.")
    _WORKER = flags.DEFINE_integer("worker", -1, "This worker's index (-1: the process index on a pod / SLURM, "
                                   "else 0).")
    _WORKERS = flags.DEFINE_integer("workers", 0, "Number of workers (0: the process count on a pod / SLURM, "
                                    "else 1).")
    _PROCESSES = flags.DEFINE_integer("processes", 1, "Local processes this worker's share is split over.")
    _WAIT_S = flags.DEFINE_float("tokenizer_wait_s", 3600.0, "How long workers other than 0 wait for the tokenizer.")
    flags.mark_flags_as_required(["config", "out"])

    def main(argv):
        command.no_arguments(argv)
        worker, workers = ((_WORKER.value, _WORKERS.value) if _WORKERS.value > 0 else
                           worker_from_cluster(_CONFIG.value))
        worker = max(worker, 0)
        if not 0 <= worker < workers:
            raise app.UsageError(f"--worker={worker} is not in 0..{workers - 1} (--workers={workers})")
        report = prepare(_CONFIG.value, _OUT.value, worker, workers, _PROCESSES.value, _WAIT_S.value)
        state = ("complete: train with --config.data.store=" + _OUT.value if not report["units_missing"] else
                 f"{report['units_missing']} units left to other workers (or a re-run)")
        print(f"worker {worker} of {workers}: {report['shards_written']} shards in {report['seconds']:.1f} s; "
              f"store {state}")

    command.run(main, "prepare", "out")
