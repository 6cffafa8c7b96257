"""Fine-tuning results: averaged over seeds, written as JSON and as a markdown table (one row per pretrained
model, one column per task, then the average — the shape of the headless-LM paper's GLUE table).

Several runs' results combine into one table: `python -m headless_jax.downstream.results RUN1/results.json
RUN2/results.json ... [--out=table.md]` (runs of the same model, e.g. one task each, merge into one row).
"""
import json

import numpy as np
from absl import app, flags
from etils import epath

from headless_jax.downstream.tasks import task_names

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def summarize(per_seed: list[dict[str, dict[str, float]]], score_splits: tuple[str, ...]) -> dict:
    """per_seed: one {split: {metric: value}} per seed → {'splits': {split: {metric: {mean, std, per_seed}}},
    'score': 100 × the mean over `score_splits` and their metrics of the seed means}."""
    splits = {split: {metric: {"mean": float(np.mean(values)), "std": float(np.std(values)),
                               "per_seed": [float(v) for v in values]}
                      for metric, values in _transpose([seed[split] for seed in per_seed]).items()}
              for split in per_seed[0]}
    score = np.mean([m["mean"] for split in score_splits for m in splits[split].values()])
    return {"splits": splits, "score": float(100 * score)}


def _transpose(dicts: list[dict[str, float]]) -> dict[str, list[float]]:
    return {key: [d[key] for d in dicts] for key in dicts[0]}


def write_json(workdir: epath.PathLike, results: dict) -> None:
    workdir = epath.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / RESULTS_JSON).write_text(json.dumps(results, indent=2, sort_keys=True))


def write(workdir: epath.PathLike, results: dict) -> None:
    """Fine-tuning results as JSON and as markdown tables."""
    write_json(workdir, results)
    (epath.Path(workdir) / RESULTS_MD).write_text(markdown_table([results]) + "\n" + details_table(results))


def markdown_table(runs: list[dict]) -> str:
    """Rows: models (runs with the same model name merge); columns: every task present, in the known order,
    then 'Avg.' over the row's tasks. Cells: the task score (seed mean, ×100)."""
    rows: dict[str, dict[str, dict]] = {}
    for run in runs:
        rows.setdefault(run["model"], {}).update(run["tasks"])
    present = {name for tasks in rows.values() for name in tasks}
    columns = [name for name in task_names() if name in present]
    titles = [next(tasks[name]["title"] for tasks in rows.values() if name in tasks) for name in columns]
    lines = ["| Model | " + " | ".join(titles) + " | Avg. |", "|---" * (len(columns) + 2) + "|"]
    for model, tasks in rows.items():
        scores = [tasks[name]["score"] if name in tasks else None for name in columns]
        cells = [f"{s:.2f}" if s is not None else "–" for s in scores]
        average = np.mean([s for s in scores if s is not None])
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {average:.2f} |")
    return "\n".join(lines) + "\n"


def details_table(run: dict) -> str:
    """Every task's metrics per eval split (e.g. each XNLI language), seed mean ± std, ×100."""
    lines = ["| Task | Split | Metric | Mean | Std |", "|---|---|---|---|---|"]
    for task in run["tasks"].values():
        for split, split_metrics in task["splits"].items():
            lines += [f"| {task['title']} | {split} | {metric} | {100 * m['mean']:.2f} | {100 * m['std']:.2f} |"
                      for metric, m in split_metrics.items()]
    return "\n".join(lines) + "\n"


_OUT = flags.DEFINE_string("out", "", "Also write the table to this file.")


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("give one or more results.json files of fine-tuning runs")
    runs = []
    for path in map(epath.Path, argv[1:]):
        if not path.exists():
            raise app.UsageError(f"{path}: no such file; give the results.json of a fine-tuning run's --workdir")
        runs.append(json.loads(path.read_text()))
    table = markdown_table(runs)
    if _OUT.value:
        epath.Path(_OUT.value).write_text(table)
    print(table, end="")


if __name__ == "__main__":
    app.run(main)
