"""Sequence-classification fine-tuning of a pretrained encoder (`kind: classify`): GLUE, XNLI, books.

For every task and seed: the pretrained body + a fresh head, AdamW with linear warmup/decay over
`epochs` passes of the training set, then the task's metrics on its eval splits. Results (seed means) go to
`<workdir>/results.json` and `results.md`, rewritten after each task.
"""
import jax
import ml_collections
import numpy as np
import optax
import tqdm
from etils import epath

from headless_jax.downstream import metrics, results
from headless_jax.downstream.classifier import (Classifier, build_predict, class_weights, make_objective,
                                                pretrained_start)
from headless_jax.downstream.encode import encode
from headless_jax.downstream.examples import TaskData
from headless_jax.downstream.glue import GLUE_TASKS
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
    """Fine-tunes once per seed; returns the task's summary (seed means, per-seed values, table score)."""
    train_examples = task.train[:config.max_train_examples] if config.max_train_examples else task.train
    train = encode(pretrained.tokenizer, train_examples, config.seq_len)
    evals = {split: encode(pretrained.tokenizer, examples, config.seq_len) for split, examples in task.eval.items()}
    if len(train["labels"]) < config.batch_size:
        raise ValueError(f"task {task.name}: {len(train['labels'])} training examples, fewer than "
                         f"batch_size={config.batch_size}; lower --config.batch_size")
    seeds = [config.seed + i for i in range(config.num_seeds)]
    per_seed = finetune(task, pretrained, config, train, evals, seeds, layout)
    return {"title": task.title, "metrics": list(task.metrics), "seeds": seeds, "num_train": len(train["labels"]),
            "num_eval": {split: len(e["labels"]) for split, e in evals.items()},
            **results.summarize(per_seed, task.score_splits)}


def finetune(task: TaskData, pretrained: Pretrained, config, train: dict, evals: dict, seeds: list[int],
             layout: Layout) -> list[dict[str, dict[str, float]]]:
    """Fine-tunes once per seed (the steps compiled once for all); per seed, {eval split: {metric: value}} after
    the last epoch."""
    model_cfg = ml_collections.ConfigDict(pretrained.config.model)
    model_cfg.dropout_rate = config.body_dropout_rate
    classifier = Classifier(ml_collections.FrozenConfigDict(model_cfg), task.num_classes or 1, config.pooling,
                            config.dropout_rate)
    steps_per_epoch = len(train["labels"]) // config.batch_size
    num_steps = config.epochs * steps_per_epoch
    optimizer, schedule = finetune_optimizer(config, num_steps)
    weights_C = class_weights(train["labels"], task.num_classes) if config.class_balanced and task.num_classes else None
    experiment = Experiment(layout, classifier, make_objective(classifier, task.num_classes, weights_C), optimizer,
                            schedule, config.seq_len)
    with layout.active():
        init = experiment.state_fn(pretrained_start(classifier, config.seq_len))
        predict = build_predict(classifier, experiment.state_shardings["params"], layout)
        per_seed = []
        for seed in seeds:
            state = init(pretrained.params[BODY], jax.random.PRNGKey(seed))
            order_rng = np.random.default_rng(seed)
            bar = tqdm.tqdm(total=num_steps, desc=f"{task.name} seed {seed}", disable=jax.process_index() != 0,
                            dynamic_ncols=True)
            for _ in range(config.epochs):
                order = order_rng.permutation(len(train["labels"]))
                for step in range(steps_per_epoch):
                    rows = order[step * config.batch_size:(step + 1) * config.batch_size]
                    state, step_metrics = experiment.train_step(state, layout.distribute(_take(train, rows)))
                    bar.update()
                bar.set_postfix(loss=f"{float(step_metrics['loss']):.4f}")
            bar.close()
            per_seed.append({split: evaluate(predict, state["params"], data, task, config.eval_batch_size, layout)
                             for split, data in evals.items()})
        return per_seed


def finetune_optimizer(config, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (train/optim.py) with warmup over the first warmup_fraction of `num_steps`; with freeze_body, a
    linear probe: only the head learns, the body gets no update and no weight decay."""
    warmup_steps = int(config.warmup_fraction * num_steps)
    opt_cfg = ml_collections.ConfigDict(dict(config.optim.to_dict(), warmup_steps=warmup_steps))
    optimizer, schedule = make_optimizer(opt_cfg, num_steps)
    return (head_only(optimizer) if config.freeze_body else optimizer), schedule


def evaluate(predict, params, data: dict, task: TaskData, batch_size: int, layout: Layout) -> dict[str, float]:
    """The task's metrics over all of `data` (the last batch is padded, its padding rows dropped)."""
    n = len(data["labels"])
    outputs = []
    for start in range(0, n, batch_size):
        rows = np.arange(start, start + batch_size) % n  # padding repeats rows; they are cut below
        batch = _take({k: v for k, v in data.items() if k != "labels"}, rows)
        outputs.append(np.asarray(predict(params, layout.distribute(batch))))
    out_NxC = np.concatenate(outputs)[:n]
    predictions = out_NxC[:, 0] if task.num_classes == 0 else out_NxC.argmax(-1)
    return metrics.compute(task.metrics, predictions, data["labels"])


def _take(arrays: dict, rows: np.ndarray) -> dict:
    return {k: v[rows] for k, v in arrays.items()}

