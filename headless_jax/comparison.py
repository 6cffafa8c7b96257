"""The headless vs classical comparison behind `python -m headless_jax.compare`: the steps it runs, the table.

It pretrains the headless twin, the classical twin and an untrained control (the same config, a few steps),
fine-tunes each on the books task (rate and epochs chosen on dev, test scored once, several seeds), scores each on
the held-out MLM predictions of configs/mlm_eval.py, and writes comparison.md and comparison.json: every number
with its seed spread, and for each pair of models whether their difference lies outside the spread. Each step is
the usual command (main, evaluate) run in turn; running the comparison again resumes: a finished pretraining says
so, a finished evaluation (its results.json) is kept.
"""
import itertools
import json
import subprocess
import sys

from etils import epath


class StepFailed(RuntimeError):
    """A step of the comparison exited non-zero; its own last message says why."""


def models(config) -> dict[str, list[str]]:
    """name → the pretraining command's config flags."""
    shared = [f"--config={config.pretraining}:{{loss}}", *config.pretraining_overrides]
    flags_of = {"headless": (config.headless_loss, []), "classical": (config.classical_loss, []),
                "untrained": (config.control_loss, [f"--config.train.num_steps={config.control_steps}",
                                                    "--config.train.flops_budget=0"])}  # a budget would set steps
    return {name: [shared[0].format(loss=loss), *shared[1:], *extra] for name, (loss, extra) in flags_of.items()}


def run_step(name: str, args: list[str], log: epath.Path) -> None:
    print(f"[compare] {name}: python -m {' '.join(args)}", flush=True)
    with log.open("a") as out:
        result = subprocess.run([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise StepFailed(f"{name} exited {result.returncode}; its log is {log} (the last line names the cause); "
                         "fix that and run the comparison again: finished steps are kept")


def evaluation(name: str, kind: str, args: list[str], workdir: epath.Path) -> dict:
    out = workdir / f"{name}_{kind}"
    if not (out / "results.json").exists():
        run_step(f"{name} {kind}", ["headless_jax.evaluate", *args, f"--workdir={out}",
                                    f"--config.pretrained={workdir / name}"], workdir / f"{name}_{kind}.log")
    return json.loads((out / "results.json").read_text())


def compare(config, workdir: epath.Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, pretraining in models(config).items():
        run_step(f"{name} pretraining", ["headless_jax.main", *pretraining, f"--workdir={workdir / name}"],
                 workdir / f"{name}.log")
        books = evaluation(name, "books", [f"--config={config.finetune}", *config.finetune_overrides], workdir)
        task = books["tasks"]["books"]
        test = task["splits"]["test"]["accuracy"]
        rows[name] = {"books_test": {"mean": 100 * test["mean"], "std": 100 * test["std"],
                                     "per_seed": [100 * v for v in test["per_seed"]]},
                      "learning_rate": task["selection"]["learning_rate"] if task["selection"] else None}
        if config.mlm_eval:
            heldout = evaluation(name, "mlm_eval", ["--config=configs/mlm_eval.py", *config.mlm_eval_overrides],
                                 workdir)["heldout"]
            rows[name]["mlm_accuracy"] = 100 * heldout["accuracy"]
            rows[name]["bits_per_byte"] = heldout.get("bits_per_byte")
    result = {"models": rows, "differences": differences(rows)}
    (workdir / "comparison.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    (workdir / "comparison.md").write_text(table(result))
    return result


def differences(rows: dict) -> list[dict]:
    """Books test accuracy, each pair: the difference of seed means, and whether it exceeds the sum of the two seed
    standard deviations (outside the spread) or not."""
    found = []
    for a, b in itertools.combinations(rows, 2):
        x, y = rows[a]["books_test"], rows[b]["books_test"]
        delta = x["mean"] - y["mean"]
        found.append({"pair": f"{a} − {b}", "delta": delta, "spread": x["std"] + y["std"],
                      "outside_spread": abs(delta) > x["std"] + y["std"]})
    return found


def table(result: dict) -> str:
    lines = ["| model | books test % (mean ± std) | per seed | chosen lr | held-out MLM accuracy % | bits per byte |",
             "|---|---|---|---|---|---|"]
    for name, row in result["models"].items():
        books, bpb = row["books_test"], row.get("bits_per_byte")
        mlm = f"{row['mlm_accuracy']:.2f}" if "mlm_accuracy" in row else "—"
        lines.append(f"| {name} | {books['mean']:.2f} ± {books['std']:.2f} | "
                     f"{', '.join(f'{v:.1f}' for v in books['per_seed'])} | {row['learning_rate'] or '—'} | {mlm} | "
                     f"{'—' if bpb is None else f'{bpb:.3f}'} |")
    lines += ["", "| books test: pair | difference | spread (std + std) | outside the spread |", "|---|---|---|---|"]
    lines += [f"| {d['pair']} | {d['delta']:+.2f} | {d['spread']:.2f} | {'yes' if d['outside_spread'] else 'no'} |"
              for d in result["differences"]]
    return "\n".join(lines) + "\n"
