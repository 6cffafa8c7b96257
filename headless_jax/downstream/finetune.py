"""Sequence-classification fine-tuning of a pretrained encoder (`kind: classify`): GLUE, XNLI, books.

For every task and seed: the pretrained body + a fresh head, AdamW with linear warmup/decay over
`epochs` passes of the training set, then the task's metrics on its eval splits. Results (seed means) go to
`<workdir>/results.json` and `results.md`, rewritten after each task.
"""
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
import optax
import tqdm
from etils import epath

from headless_jax.downstream import metrics, results
from headless_jax.downstream.classifier import (Classifier, build_predict, class_weights, feature_stats,
                                                make_objective, pretrained_start)
from headless_jax.downstream.encode import encode
from headless_jax.downstream.examples import TaskData
from headless_jax.downstream.glue import GLUE_TASKS
from headless_jax.downstream.selection import choose, parse_grid
from headless_jax.downstream.tasks import load_task, task_names
from headless_jax.experiment import Experiment, Pretrained, load_pretrained
from headless_jax.model import BODY
from headless_jax.train.layout import Layout
from headless_jax.train.optim import head_only, make_optimizer


def parse_tasks(spec: str) -> tuple[str, ...]:
    """'sst2,mrpc' or 'glue' (all nine GLUE tasks) → task names, checked."""
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    names = tuple(name for part in parts for name in (GLUE_TASKS if part == "glue" else (part,)))
    unknown = [n for n in names if n not in task_names()]
    if unknown or not names:
        problem = f"unknown task {unknown[0]!r}" if unknown else "no task given"
        raise ValueError(f"tasks={spec!r}: {problem}; known tasks: {', '.join(task_names())} (or glue for all GLUE "
                         "tasks)")
    return names


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    names = parse_tasks(config.tasks)
    if config.standardize_features and (not config.freeze_body or config.body_dropout_rate):
        raise ValueError(f"standardize_features=True needs freeze_body=True and body_dropout_rate=0 (got "
                         f"{config.freeze_body}, {config.body_dropout_rate}): the statistics are the frozen body's "
                         "features as they are, which fine-tuning would change and dropout would drown (collapsed "
                         "features vary less than its noise); set --config.freeze_body=True "
                         "--config.body_dropout_rate=0 (a linear probe) or --config.standardize_features=False")
    layout = Layout.from_config(config.mesh)
    pretrained = load_pretrained(config.pretrained, layout, config.pretrained_step, config.tokenizer_model,
                                 causal=False)
    _check_shapes(config, pretrained, layout)
    report = {"model": config.name or epath.Path(config.pretrained).name, "pretrained": config.pretrained,
              "pretrained_step": pretrained.step, "config": config.to_dict(), "tasks": {}}
    for name in names:
        task = load_task(name, config, pretrained.config.data.heldout_fraction)
        report["tasks"][name] = finetune_task(task, pretrained, config, layout)
        if jax.process_index() == 0:
            results.write(workdir, report)
    return {"model": report["model"], **{name: task["score"] for name, task in report["tasks"].items()}}


def _check_shapes(config, pretrained: Pretrained, layout: Layout) -> None:
    pretrained.check_seq_len(config.seq_len)
    shards = layout.batch_shards
    for key in ("batch_size", "eval_batch_size"):
        if config[key] % shards:
            raise ValueError(f"{key}={config[key]} must be a multiple of the mesh's {shards} batch shards "
                             "(data × fsdp)")


def finetune_task(task: TaskData, pretrained: Pretrained, config, layout: Layout) -> dict:
    """Fine-tunes once per seed (per rate of the grid, with config.select_on); returns the task's summary (seed
    means, per-seed values, table score, and the selection made)."""
    train_examples = task.train[:config.max_train_examples] if config.max_train_examples else task.train
    train = encode(pretrained.tokenizer, train_examples, config.seq_len)
    evals = {split: encode(pretrained.tokenizer, examples, config.seq_len) for split, examples in task.eval.items()}
    if len(train["labels"]) < config.batch_size:
        raise ValueError(f"task {task.name}: {len(train['labels'])} training examples, fewer than "
                         f"batch_size={config.batch_size}; lower --config.batch_size")
    seeds = [config.seed + i for i in range(config.num_seeds)]
    runs = FineTuning(task, pretrained, config, train, layout)
    evals = {split: runs.inputs(data) for split, data in evals.items()}
    if config.select_on:
        per_seed, selection = selected(runs, evals, seeds, config)
    else:
        params_per_seed = [runs.train(seed, config.optim.learning_rate) for seed in seeds]
        per_seed = [{split: runs.evaluate(params, data) for split, data in evals.items()} for params in params_per_seed]
        selection = None
    return {"title": task.title, "metrics": list(task.metrics), "seeds": seeds, "num_train": len(train["labels"]),
            "num_eval": {split: len(e["labels"]) for split, e in evals.items()}, "selection": selection,
            **results.summarize(per_seed, task.score_splits)}


class FineTuning:
    """A task's fine-tuning runs on one pretrained body: the classifier and its predict step built once, a train
    step per learning rate (compiled once for all seeds).

    A frozen body without dropout (a linear probe) gives every example fixed features: they are computed once
    (`inputs`), and the probe trains and scores its head on them, not running the body at every step. Routed layers
    then take their inference-time decisions, as the frozen features a probe reads should."""

    def __init__(self, task: TaskData, pretrained: Pretrained, config, train: dict, layout: Layout):
        model_cfg = ml_collections.ConfigDict(pretrained.config.model)
        model_cfg.dropout_rate = config.body_dropout_rate
        self.classifier = Classifier(ml_collections.FrozenConfigDict(model_cfg), task.num_classes or 1,
                                     config.pooling, config.dropout_rate, config.standardize_features)
        self.task, self.pretrained, self.config, self.layout = task, pretrained, config, layout
        self.fixed_features = config.freeze_body and not config.body_dropout_rate
        self._pool = None
        self.data = self.inputs(train)
        self.steps_per_epoch = len(train["labels"]) // config.batch_size
        self.weights_C = (class_weights(train["labels"], task.num_classes)
                          if config.class_balanced and task.num_classes else None)
        self.last_losses: list[float] = []  # each train()'s mean loss over its last epoch
        self._experiments: dict[float, tuple[Experiment, object]] = {}
        self._predict = None

    def _experiment(self, rate: float) -> tuple[Experiment, object]:
        if rate not in self._experiments:
            config = ml_collections.ConfigDict(self.config.to_dict())
            config.optim.learning_rate = rate
            optimizer, schedule = finetune_optimizer(config, config.epochs * self.steps_per_epoch)
            experiment = Experiment(self.layout, self.classifier,
                                    make_objective(self.classifier, self.task.num_classes, self.weights_C), optimizer,
                                    schedule, config.seq_len)
            # standardize_features needs fixed features (run): their statistics over the training set
            stats = feature_stats(self.data["features"]) if config.standardize_features else None
            with self.layout.active():
                init = experiment.state_fn(pretrained_start(self.classifier, stats))
            self._experiments[rate] = experiment, init
        return self._experiments[rate]

    def inputs(self, data: dict) -> dict:
        """What the classifier reads of `data` (encoded examples): the examples themselves, or with fixed features
        their pooled features by the pretrained body ({'features': [N, D], 'labels'})."""
        if not self.fixed_features:
            return data
        with self.layout.active():
            if self._pool is None:
                shardings = {BODY: self.pretrained.param_shardings[BODY]}
                self._pool = build_predict(self.classifier, shardings, self.layout, features=True)
            body = {BODY: self.pretrained.params[BODY]}
            return {"features": outputs(self._pool, body, data, self.config.eval_batch_size, self.layout),
                    "labels": data["labels"]}

    def train(self, seed: int, rate: float, after_epoch: Callable[[int, dict], None] | None = None) -> dict:
        """The params after `epochs` epochs at peak rate `rate`; after_epoch(epoch, params) after each (1-based)."""
        config, layout = self.config, self.layout
        experiment, init = self._experiment(rate)
        with layout.active():
            state = init(self.pretrained.params[BODY], jax.random.PRNGKey(seed))
            order_rng = np.random.default_rng(seed)
            bar = tqdm.tqdm(total=config.epochs * self.steps_per_epoch, disable=jax.process_index() != 0,
                            desc=f"{self.task.name} seed {seed} lr {rate:g}", dynamic_ncols=True)
            for epoch in range(1, config.epochs + 1):
                order, losses = order_rng.permutation(len(self.data["labels"])), []
                for step in range(self.steps_per_epoch):
                    rows = order[step * config.batch_size:(step + 1) * config.batch_size]
                    state, step_metrics = experiment.train_step(state, layout.distribute(_take(self.data, rows)))
                    losses.append(step_metrics["loss"])
                    bar.update()
                bar.set_postfix(loss=f"{float(np.mean(losses)):.4f}")
                if after_epoch is not None:
                    after_epoch(epoch, state["params"])
            bar.close()
        self.last_losses.append(float(np.mean(losses)))
        return state["params"]

    def predict_step(self) -> Callable:
        """The classifier's predict step on this layout (build_predict), built once."""
        if self._predict is None:
            experiment, _ = self._experiment(self.config.optim.learning_rate)
            with self.layout.active():
                self._predict = build_predict(self.classifier, experiment.state_shardings["params"], self.layout)
        return self._predict

    def evaluate(self, params, data: dict) -> dict[str, float]:
        """The task's metrics on `data`, as `inputs` gives it."""
        predict = self.predict_step()
        with self.layout.active():
            return evaluate(predict, params, data, self.task, self.config.eval_batch_size, self.layout)


def selected(runs: FineTuning, evals: dict, seeds: list[int], config) -> tuple[list[dict], dict]:
    """Every rate of config.learning_rates × every seed, scored on config.select_on after each epoch; the choice
    (selection.choose) made on those dev scores alone; the other splits scored once, on each seed's chosen params.
    Returns (per seed {split: metrics}, the selection's record)."""
    task, split = runs.task, config.select_on
    if split not in evals:
        raise ValueError(f"select_on={split!r}: task {task.name} has the eval splits {', '.join(evals)}; pick one")
    if split in task.score_splits:
        raise ValueError(f"select_on={split!r} is a split task {task.name} reports ({', '.join(task.score_splits)}): "
                         "the split that chooses must not be the one scored; pick another")
    rates = parse_grid(config.learning_rates, config.optim.learning_rate)
    curves, kept, kept_losses = {}, None, None
    for rate in rates:
        rate_curves, snapshots = [], []
        for seed in seeds:
            curve, best = [], {}

            def after_epoch(epoch, params, curve=curve, best=best):
                score = dev_score(runs.evaluate(params, evals[split]))
                if not curve or score > max(curve):
                    best["params"] = jax.device_get(params)  # host copy: the chosen point is scored later
                curve.append(score)
            runs.train(seed, rate, after_epoch)
            rate_curves.append(curve)
            snapshots.append(best["params"])
        curves[rate] = rate_curves
        if choose(curves).learning_rate == rate:  # the best so far: keep its snapshots, drop the previous ones
            kept, kept_losses = snapshots, runs.last_losses[-len(seeds):]
    choice = choose(curves)
    per_seed = [{name: runs.evaluate(params, data) for name, data in evals.items()} for params in kept]
    record = {"split": split, "grid": {f"{rate:g}": score for rate, score in choice.grid.items()},
              "learning_rate": choice.learning_rate, "epochs": list(choice.epochs),
              "dev_scores": list(choice.dev_scores), "train_loss": kept_losses}
    return per_seed, record


def dev_score(split_metrics: dict[str, float]) -> float:
    """A split's score: the mean of the task's metrics (as results.summarize scores a task)."""
    return float(np.mean(list(split_metrics.values())))


def finetune_optimizer(config, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (train/optim.py) with warmup over the first warmup_fraction of `num_steps`; with freeze_body, a
    linear probe: only the head learns, the body gets no update and no weight decay."""
    warmup_steps = int(config.warmup_fraction * num_steps)
    opt_cfg = ml_collections.ConfigDict(dict(config.optim.to_dict(), warmup_steps=warmup_steps))
    optimizer, schedule = make_optimizer(opt_cfg, num_steps)
    return (head_only(optimizer) if config.freeze_body else optimizer), schedule


def evaluate(predict, params, data: dict, task: TaskData, batch_size: int, layout: Layout) -> dict[str, float]:
    """The task's metrics over all of `data`."""
    out_NxC = outputs(predict, params, data, batch_size, layout)
    predictions = out_NxC[:, 0] if task.num_classes == 0 else out_NxC.argmax(-1)
    return metrics.compute(task.metrics, predictions, data["labels"])


def outputs(predict, params, data: dict, batch_size: int, layout: Layout) -> np.ndarray:
    """predict's outputs for every row of `data`, in order (the last batch is padded, its padding rows dropped)."""
    n = len(data["labels"])
    found = []
    for start in range(0, n, batch_size):
        rows = np.arange(start, start + batch_size) % n  # padding repeats rows; they are cut below
        batch = _take({k: v for k, v in data.items() if k != "labels"}, rows)
        found.append(np.asarray(predict(params, layout.distribute(batch))))
    return np.concatenate(found)[:n]


def _take(arrays: dict, rows: np.ndarray) -> dict:
    return {k: v[rows] for k, v in arrays.items()}

