"""The comparison behind `python -m headless_jax.compare`: the steps it runs, the table.

It pretrains every model of the config (by default the headless and the classical twin of one config; a recipe
study lists more), each once per pretraining seed, plus an untrained control (a twin after a few steps), then
scores each run by its kind: an encoder is fine-tuned on the books task in each setting of the config (rate and
epochs chosen on dev, test scored once, several seeds; e.g. full fine-tuning and a linear probe) and scored on the
held-out MLM predictions of configs/mlm_eval.py (unless it has no MLM head of its own, as an ELECTRA
discriminator), a decoder by configs/lm_eval.py (held-out perplexity, last-word accuracy; a headless one also after
the LM-head phase of configs/lm_head.py, which makes it a language model). It writes comparison.md
and comparison.json: every number with its spread over seeds, and for each setting and pair of models whether
their difference lies outside the spread. Each step is the usual command (main,
evaluate) run in turn; running the comparison again resumes: a finished pretraining says so, a finished
evaluation (its results.json) is kept.
"""
import itertools
import json
import subprocess
import sys

import numpy as np
from etils import epath

CONTROL = "untrained"


class StepFailed(RuntimeError):
    """A step of the comparison exited non-zero; its own last message says why."""


def model_specs(config) -> dict[str, list[str]]:
    """name → that model's pretraining flags (without the seed): `config.models`' (name, config, flag, ...)
    entries, or the headless and classical twins of `config.pretraining`; then the control."""
    specs = {name: [f"--config={spec}", *flags] for name, spec, *flags in config.models} if config.models else {
        "headless": [f"--config={config.pretraining}:{config.headless_loss}"],
        "classical": [f"--config={config.pretraining}:{config.classical_loss}"]}
    if CONTROL in specs:
        raise ValueError(f"models: {CONTROL!r} is the control's name; rename that model")
    specs = {name: [*flags, *config.pretraining_overrides] for name, flags in specs.items()}
    if config.control_steps:
        specs[CONTROL] = [f"--config={config.pretraining}:{config.control_loss}", *config.pretraining_overrides,
                          f"--config.train.num_steps={config.control_steps}",
                          "--config.train.flops_budget=0"]  # a budget would set the steps
    return specs


def run_name(model: str, seed: int) -> str:
    """Seed 0 keeps the model's name (so a one-seed comparison's runs are a several-seed one's first)."""
    return model if seed == 0 else f"{model}_seed{seed}"


def runs(config) -> dict[str, dict[int, list[str]]]:
    """model → pretraining seed → the pretraining command's config flags. The control is pretrained once."""
    seeds = tuple(config.pretraining_seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"pretraining_seeds={seeds}: give distinct seeds, e.g. (0, 1, 2)")
    return {model: {seed: [*flags, *([f"--config.seed={seed}"] if seed else [])]
                    for seed in (seeds[:1] if model == CONTROL else seeds)}
            for model, flags in model_specs(config).items()}


def run_step(name: str, args: list[str], log: epath.Path) -> None:
    print(f"[compare] {name}: python -m {' '.join(args)}", flush=True)
    with log.open("a") as out:
        result = subprocess.run([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT)
    if result.returncode:
        raise StepFailed(f"{name} exited {result.returncode}; its log is {log} (the last line names the cause); "
                         "fix that and run the comparison again: finished steps are kept")


def evaluation(run: str, kind: str, args: list[str], workdir: epath.Path) -> dict:
    out = workdir / f"{run}_{kind}"
    if not (out / "results.json").exists():
        run_step(f"{run} {kind}", ["headless_jax.evaluate", *args, f"--workdir={out}",
                                   f"--config.pretrained={workdir / run}"], workdir / f"{run}_{kind}.log")
    return json.loads((out / "results.json").read_text())


def scores(config, run: str, workdir: epath.Path) -> dict:
    """The run's scores, by its kind (its saved config): each fine-tuning setting and held-out MLM for an encoder,
    configs/lm_eval.py for a decoder. Percentages; fine-tuning test accuracy per fine-tuning seed."""
    saved = json.loads((workdir / run / "config.json").read_text())
    found = {"steps": saved["train"]["num_steps"]}  # a FLOP budget sets them (train.flops_budget)
    if saved["model"]["causal"]:
        if not config.lm_eval:
            return found
        found.update(lm_scores(config, run, workdir))
        if config.lm_head and saved["objective"]["loss"] == "cwt":  # o·Eᵀ is no LM until a head is fitted
            head_run = f"{run}_lm_head"
            run_step(f"{run} lm_head", ["headless_jax.main", f"--config={config.lm_head}",
                                        *config.pretraining_overrides, f"--config.train.init_from={workdir / run}",
                                        f"--workdir={workdir / head_run}"], workdir / f"{head_run}.log")
            found.update({f"lm_head_{key}": value for key, value in lm_scores(config, head_run, workdir).items()})
        return found
    found["finetune"] = {}
    for setting, spec, *flags in config.finetune:
        task = evaluation(run, setting, [f"--config={spec}", *flags, *config.finetune_overrides],
                          workdir)["tasks"]["books"]
        found["finetune"][setting] = {"test": [100 * v for v in task["splits"]["test"]["accuracy"]["per_seed"]],
                                      "learning_rate": task["selection"]["learning_rate"] if task["selection"] else None}
    if config.mlm_eval and saved["objective"]["task"] != "electra":  # a discriminator has no MLM head to score
        heldout = evaluation(run, "mlm_eval", ["--config=configs/mlm_eval.py", *config.mlm_eval_overrides],
                             workdir)["heldout"]
        found.update(mlm_accuracy=100 * heldout["accuracy"], bits_per_byte=heldout.get("bits_per_byte"))
    return found


def lm_scores(config, run: str, workdir: epath.Path) -> dict:
    lm = evaluation(run, "lm_eval", ["--config=configs/lm_eval.py", *config.lm_eval_overrides], workdir)
    return {"perplexity": lm["perplexity"]["perplexity"], "last_word": 100 * lm["last_word"]["accuracy"]}


def summary(per_seed: dict[int, dict]) -> dict:
    """One model's row from its runs' scores: each fine-tuning setting over every (pretraining seed, fine-tuning
    seed) run, the other metrics over pretraining seeds; mean and std (population) of each."""
    row = {"pretraining_seeds": sorted(per_seed)}
    runs_scores = [per_seed[seed] for seed in row["pretraining_seeds"]]
    row["steps"] = [s["steps"] for s in runs_scores]
    if "finetune" in runs_scores[0]:
        row["finetune"] = {}
        for setting in runs_scores[0]["finetune"]:
            tests = [s["finetune"][setting]["test"] for s in runs_scores]
            pooled = [v for test in tests for v in test]
            row["finetune"][setting] = {
                "mean": float(np.mean(pooled)), "std": float(np.std(pooled)), "per_seed": pooled,
                "per_pretraining_seed": [float(np.mean(test)) for test in tests],
                "learning_rate": [s["finetune"][setting]["learning_rate"] for s in runs_scores]}
    for key in ("mlm_accuracy", "bits_per_byte", "perplexity", "last_word", "lm_head_perplexity", "lm_head_last_word"):
        values = [s[key] for s in runs_scores if s.get(key) is not None]
        if values:
            row[key] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    return row


def compare(config, workdir: epath.Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    planned = runs(config)
    rows = {}
    for model, seeds in planned.items():
        per_seed = {}
        for seed, flags in seeds.items():
            run = run_name(model, seed)
            run_step(f"{run} pretraining", ["headless_jax.main", *flags, f"--workdir={workdir / run}"],
                     workdir / f"{run}.log")
            per_seed[seed] = scores(config, run, workdir)
        rows[model] = summary(per_seed)
    result = {"models": rows, "differences": differences(rows, [tuple(p) for p in config.pairs])}
    (workdir / "comparison.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    (workdir / "comparison.md").write_text(table(result))
    return result


def differences(rows: dict, pairs: list[tuple[str, str]]) -> list[dict]:
    """For each fine-tuning setting and each pair (`pairs`, or every two fine-tuned models): the difference of the
    test means, and whether it exceeds the sum of the two standard deviations (outside the spread) or not."""
    scored = [name for name, row in rows.items() if "finetune" in row]
    unknown = sorted({name for pair in pairs for name in pair} - set(scored))
    if unknown:
        raise ValueError(f"pairs name {unknown}, which are not fine-tuned models ({scored}); fix pairs")
    found = []
    for setting in rows[scored[0]]["finetune"] if scored else ():
        for a, b in pairs or itertools.combinations(scored, 2):
            x, y = rows[a]["finetune"][setting], rows[b]["finetune"][setting]
            delta = x["mean"] - y["mean"]
            found.append({"setting": setting, "pair": f"{a} − {b}", "delta": delta, "spread": x["std"] + y["std"],
                          "outside_spread": abs(delta) > x["std"] + y["std"]})
    return found


def _cell(metric: dict | None, digits: int = 2) -> str:
    if metric is None:
        return "—"
    return f"{metric['mean']:.{digits}f}" + (f" ± {metric['std']:.{digits}f}" if metric["std"] else "")


def _steps(row: dict) -> str:
    """The pretraining steps of a model's runs (the same for every seed, unless a budget bought otherwise)."""
    return ", ".join(str(steps) for steps in dict.fromkeys(row["steps"]))


def table(result: dict) -> str:
    models = result["models"]
    encoders = [name for name, row in models.items() if "finetune" in row]
    decoders = [name for name, row in models.items() if "perplexity" in row]
    settings = list(models[encoders[0]]["finetune"]) if encoders else []
    lines = []
    if encoders:
        lines += ["| model | steps | " + " | ".join(f"{s} test % | per seed | chosen lr" for s in settings) +
                  " | held-out MLM accuracy % | bits per byte |", "|---" * (4 + 3 * len(settings)) + "|"]
        for name in encoders:
            row, cells = models[name], [_steps(models[name])]
            for setting in settings:
                found = row["finetune"][setting]
                per = found["per_pretraining_seed" if len(row["pretraining_seeds"]) > 1 else "per_seed"]
                rates = ", ".join("—" if r is None else f"{r:g}" for r in found["learning_rate"])
                cells += [_cell(found), ", ".join(f"{v:.1f}" for v in per), rates]
            cells += [_cell(row.get("mlm_accuracy")), _cell(row.get("bits_per_byte"), 3)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "| setting | pair | difference | spread (std + std) | outside the spread |", "|---|---|---|---|---|"]
        lines += [f"| {d['setting']} | {d['pair']} | {d['delta']:+.2f} | {d['spread']:.2f} | "
                  f"{'yes' if d['outside_spread'] else 'no'} |" for d in result["differences"]]
    if decoders:
        lines += [*([""] if lines else []), "| decoder | steps | held-out perplexity | last-word accuracy % | after "
                  "the LM-head phase: perplexity | last-word accuracy % |", "|---" * 6 + "|"]
        lines += ["| " + " | ".join([name, _steps(models[name]), *(_cell(models[name].get(key)) for key in (
            "perplexity", "last_word", "lm_head_perplexity", "lm_head_last_word"))]) + " |" for name in decoders]
    return "\n".join(lines) + "\n"
