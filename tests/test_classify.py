"""Fine-tuning a tiny pretrained encoder end to end (TSV task → results files), the loss against NumPy, errors."""
import dataclasses
import json
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax
import pytest

from headless_jax.config import base_config
from headless_jax.downstream import results
from headless_jax.downstream.classifier import Classifier, class_weights, make_objective, pretrained_start
from headless_jax.downstream.encode import encode
from headless_jax.downstream.finetune import FineTuning, finetune_optimizer, outputs, parse_tasks, run
from headless_jax.downstream.tasks import load_task
from headless_jax.downstream.finetune_config import classify_base_config
from headless_jax.evaluate import RUNNERS, runner
from headless_jax.experiment import Experiment, PretrainedError, load_pretrained
from headless_jax.model import BODY, HEAD
from headless_jax.train.layout import Layout
from headless_jax.train.optim import FIXED_STATS
from test_configs import DOWNSTREAM_CONFIGS, load_config
from test_pretrained import ROOT, pretrain

CLASS_0_WORDS, CLASS_1_WORDS = ("the", "of", "and", "to"), ("she", "her", "was", "had")


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    return pretrain(tmp_path_factory.mktemp("encoder"), tmp_path_factory.mktemp("text"))


def easy_sst2(directory, seed=0):
    """SST-2 layout; the label is which word list a sentence is drawn from; 60% of rows are class 0."""
    rng = np.random.default_rng(seed)
    for split, size in (("train", 160), ("dev", 40)):
        labels = (np.arange(size) % 5 >= 3).astype(int)  # 3 of every 5 rows are class 0
        rows = ["sentence\tlabel"] + [" ".join(rng.choice((CLASS_0_WORDS, CLASS_1_WORDS)[y], 6)) + f"\t{y}"
                                      for y in labels]
        (directory / "SST-2").mkdir(parents=True, exist_ok=True)
        (directory / "SST-2" / f"{split}.tsv").write_text("\n".join(rows) + "\n")


def tiny_config(pretrained, data_dir) -> ml_collections.ConfigDict:
    config = classify_base_config("sst2")
    config.update(pretrained=str(pretrained), data_source="tsv", data_dir=str(data_dir), seq_len=16, batch_size=16,
                  eval_batch_size=16, epochs=6, num_seeds=2, body_dropout_rate=0.0, name="tiny")
    config.optim.learning_rate = 3e-3
    return config


def test_fine_tuning_beats_the_majority_class(encoder_run, tmp_path):
    easy_sst2(tmp_path / "glue")
    config = tiny_config(encoder_run, tmp_path / "glue")
    config.mesh.update(data=2, fsdp=2, tensor=2)  # not the data 2 × tensor 2 layout the run was saved from
    summary = runner("classify")(config, str(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / results.RESULTS_JSON).read_text())
    accuracy = saved["tasks"]["sst2"]["splits"]["validation"]["accuracy"]
    assert len(accuracy["per_seed"]) == 2 and accuracy["mean"] == pytest.approx(np.mean(accuracy["per_seed"]))
    assert min(accuracy["per_seed"]) >= 0.9  # the majority class is 60% of the dev set
    assert summary == {"model": "tiny", "sst2": pytest.approx(100 * accuracy["mean"])}
    assert saved["pretrained_step"] == 4 and saved["tasks"]["sst2"]["num_eval"] == {"validation": 40}
    table = (tmp_path / "out" / results.RESULTS_MD).read_text().splitlines()
    assert table[0] == "| Model | SST-2 | Avg. |" and table[2].startswith(f"| tiny | {100 * accuracy['mean']:.2f} |")
    assert table[-1] == (f"| SST-2 | validation | accuracy | {100 * accuracy['mean']:.2f} | "
                         f"{100 * np.std(accuracy['per_seed']):.2f} |")


def test_the_state_starts_from_the_pretrained_body(encoder_run):
    config = tiny_config(encoder_run, "")
    config.mesh.update(data=4, fsdp=2)
    layout = Layout.from_config(config.mesh)
    pretrained = load_pretrained(str(encoder_run), layout, causal=False)
    classifier = Classifier(ml_collections.FrozenConfigDict(pretrained.config.model), 3, "cls", 0.1)
    experiment = Experiment(layout, classifier, make_objective(classifier, 3, None), optax.adamw(1e-3),
                            optax.constant_schedule(1e-3), 16)
    shardings = experiment.state_shardings
    with layout.active():
        state = experiment.state_fn(pretrained_start(classifier))(pretrained.params[BODY], jax.random.PRNGKey(0))
    body = jax.tree_util.tree_leaves_with_path(state["params"][BODY])
    want = jax.tree.leaves(pretrained.params[BODY])
    assert len(body) == len(want)
    for (path, got), expected in zip(body, want):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=str(path))
        assert got.sharding == expected.sharding, path
    head = state["params"][HEAD]["classifier"]
    assert head["kernel"].shape == (32, 3) and not np.asarray(head["bias"]).any()
    assert jax.tree.structure(state) == jax.tree.structure(shardings)


@pytest.mark.parametrize("freeze_body", [False, True])
def test_the_optimizer_warms_up_and_a_linear_probe_freezes_the_body(freeze_body):
    config = classify_base_config("sst2")
    config.update(freeze_body=freeze_body, warmup_fraction=0.25)
    optimizer, schedule = finetune_optimizer(config, num_steps=8)
    assert float(schedule(0)) == 0.0 and float(schedule(2)) == pytest.approx(config.optim.learning_rate)
    params = {"body": {"layer": {"kernel": np.ones((2, 2), np.float32)}},
              "head": {"kernel": np.ones(2, np.float32), FIXED_STATS: {"mean": np.ones(2, np.float32)}}}
    state = optimizer.init(params)
    for _ in range(2):  # the first step has learning rate 0 (warmup)
        updates, state = optimizer.update(params, state, params)  # gradients = params: none is zero
    assert np.asarray(updates["head"]["kernel"]).any()
    assert np.asarray(updates["body"]["layer"]["kernel"]).any() != freeze_body
    assert np.asarray(updates["head"][FIXED_STATS]["mean"]).any() != freeze_body  # a probe's statistics stay fixed


def probe_outputs(pretrained, config, task, layout, scale_D=1.0, shift_D=0.0):
    """A probe trained on `pretrained` whose final norm is scaled and shifted (its features become an affine map of
    the original's): the trained head's params and its dev logits."""
    body = jax.tree.map(np.asarray, pretrained.params[BODY])
    norm = body["final_norm"]
    body["final_norm"] = {"scale": norm["scale"] * scale_D, "bias": norm["bias"] * scale_D + shift_D}
    shardings = jax.tree.map(lambda a: a.sharding, pretrained.params[BODY])
    moved = dataclasses.replace(pretrained, params={BODY: jax.device_put(body, shardings)})
    train = encode(pretrained.tokenizer, task.train, config.seq_len)
    runs = FineTuning(task, moved, config, train, layout)
    params = runs.train(0, config.optim.learning_rate)
    dev = encode(pretrained.tokenizer, task.eval["validation"], config.seq_len)
    return params, outputs(runs.predict_step(), params, dev, config.eval_batch_size, layout), (moved, dev)


def test_a_standardized_probe_reads_features_at_any_scale(encoder_run, tmp_path):
    easy_sst2(tmp_path / "glue")
    config = tiny_config(encoder_run, tmp_path / "glue")
    config.update(freeze_body=True, pooling="mean", standardize_features=True, epochs=2, dropout_rate=0.0)
    assert config.body_dropout_rate == 0.0  # tiny_config's, as the probe's
    layout = Layout.from_config(config.mesh)
    pretrained = load_pretrained(str(encoder_run), layout, causal=False)
    task = load_task("sst2", config, pretrained.config.data.heldout_fraction)
    d_model = pretrained.config.model.d_model
    scale_D, shift_D = np.linspace(20.0, 200.0, d_model, dtype=np.float32), np.float32(7.0)
    params, logits, _ = probe_outputs(pretrained, config, task, layout)
    moved_params, moved_logits, (moved, dev) = probe_outputs(pretrained, config, task, layout, scale_D, shift_D)
    np.testing.assert_allclose(moved_logits, logits, rtol=1e-3, atol=1e-3)  # the same probe, whatever the scale
    np.testing.assert_allclose(moved_params[HEAD]["classifier"]["kernel"], params[HEAD]["classifier"]["kernel"],
                               rtol=1e-3, atol=1e-4)
    # The fixed statistics are the moved body's mean-pooled training features' (float64 NumPy), untouched by training.
    train = encode(pretrained.tokenizer, task.train, config.seq_len)
    classifier = Classifier(ml_collections.FrozenConfigDict(pretrained.config.model), 2, "mean", 0.0)
    h_NxLxD = np.asarray(classifier.apply({"params": {BODY: moved.params[BODY]}}, train["tokens"], train["segment_ids"],
                                          train["positions"], method=lambda m, *a: m.body(*a, True)), np.float64)
    w_NxL = train["segment_ids"].astype(np.float64)
    pooled_NxD = (h_NxLxD * w_NxL[..., None]).sum(1) / w_NxL.sum(1, keepdims=True)
    stats = moved_params[HEAD][FIXED_STATS]
    np.testing.assert_allclose(stats["mean"], pooled_NxD.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["std"], pooled_NxD.std(0), rtol=1e-3)
    # Without standardization the same transform changes what the probe learns.
    config.standardize_features = False
    _, plain_logits, _ = probe_outputs(pretrained, config, task, layout)
    _, plain_moved_logits, _ = probe_outputs(pretrained, config, task, layout, scale_D, shift_D)
    assert np.abs(plain_moved_logits - plain_logits).max() > 1.0


class BodyAtEveryStep(FineTuning):
    """The probe as it would run without fixed features: the frozen body run in every train and predict step."""

    def inputs(self, data: dict) -> dict:
        return data


def test_a_probe_on_fixed_features_learns_what_running_its_body_learns(encoder_run, tmp_path):
    """Features computed once give the probe the head (and dev outputs) that running the frozen body at every step
    gives, to float32 rounding, head dropout included; full fine-tuning keeps reading tokens."""
    easy_sst2(tmp_path / "glue")
    config = tiny_config(encoder_run, tmp_path / "glue")
    config.update(freeze_body=True, pooling="mean", epochs=2, dropout_rate=0.1)
    layout = Layout.from_config(config.mesh)
    pretrained = load_pretrained(str(encoder_run), layout, causal=False)
    task = load_task("sst2", config, pretrained.config.data.heldout_fraction)
    train, dev = (encode(pretrained.tokenizer, examples, config.seq_len) for examples in (task.train,
                                                                                           task.eval["validation"]))
    fixed, every_step = FineTuning(task, pretrained, config, train, layout), BodyAtEveryStep(
        task, pretrained, config, train, layout)
    assert fixed.fixed_features and set(fixed.data) == {"features", "labels"}
    assert fixed.data["features"].shape == (len(train["labels"]), pretrained.config.model.d_model)
    fixed_params, every_step_params = fixed.train(0, 3e-3), every_step.train(0, 3e-3)
    np.testing.assert_allclose(fixed_params[HEAD]["classifier"]["kernel"],
                               every_step_params[HEAD]["classifier"]["kernel"], rtol=1e-4, atol=1e-6)
    assert np.abs(np.asarray(fixed_params[HEAD]["classifier"]["kernel"])).max() > 0.05  # it learnt something
    fixed_dev = outputs(fixed.predict_step(), fixed_params, fixed.inputs(dev), 16, layout)
    every_step_dev = outputs(every_step.predict_step(), every_step_params, dev, 16, layout)
    np.testing.assert_allclose(fixed_dev, every_step_dev, rtol=1e-4, atol=1e-5)
    config.freeze_body = False
    assert FineTuning(task, pretrained, config, train, layout).data is train


@pytest.mark.parametrize("freeze_body,body_dropout_rate", [(False, 0.0), (True, 0.1)])
def test_standardized_features_need_a_frozen_deterministic_body(tmp_path, freeze_body, body_dropout_rate):
    config = tiny_config(tmp_path / "no_such_run", tmp_path)
    config.update(standardize_features=True, freeze_body=freeze_body, body_dropout_rate=body_dropout_rate)
    with pytest.raises(ValueError, match=r"standardize_features=True needs freeze_body=True and body_dropout_rate=0 "
                                         rf"\(got {freeze_body}, {body_dropout_rate}\).*--config.body_dropout_rate=0"):
        run(config, str(tmp_path / "out"))


def test_a_decoder_checkpoint_is_refused(tmp_path):
    decoder = pretrain(tmp_path / "decoder", tmp_path, "configs/clm_demo.py", 1)
    with pytest.raises(PretrainedError, match=r"is a decoder \(model.causal=True\) but this job needs an encoder"):
        run(tiny_config(decoder, tmp_path), str(tmp_path / "out"))


def test_unknown_task_fails_before_loading_anything(tmp_path):
    config = tiny_config(tmp_path / "no_such_run", tmp_path)
    config.tasks = "sst2,glu"
    with pytest.raises(ValueError, match=r"unknown task 'glu'; known tasks: cola, sst2"):
        run(config, str(tmp_path / "out"))


def test_losses_match_numpy():
    model_cfg = base_config().model
    model_cfg.update(vocab_size=64, num_layers=1, d_model=16, num_heads=2, head_dim=8, mlp_dim=32, max_len=8)
    rng = np.random.default_rng(0)
    tokens = rng.integers(7, 64, (6, 8)).astype(np.int32)
    batch = {"tokens": tokens, "segment_ids": np.ones_like(tokens), "positions": np.tile(np.arange(8), (6, 1))}
    for num_classes, labels in ((3, np.array([0, 1, 1, 1, 2, 1], np.int32)),
                                (0, rng.normal(size=6).astype(np.float32))):
        classifier = Classifier(ml_collections.FrozenConfigDict(model_cfg), num_classes or 1, "mean", 0.0)
        params = classifier.init(jax.random.PRNGKey(1), tokens, batch["segment_ids"], batch["positions"])["params"]
        out = np.asarray(classifier.apply({"params": params}, tokens, batch["segment_ids"], batch["positions"]),
                         np.float64)
        batch["labels"] = labels
        if num_classes == 0:
            want = np.mean((out[:, 0] - labels) ** 2)
            objective = jax.jit(make_objective(classifier, 0, None), static_argnums=3)
            got, _ = objective(params, batch, jax.random.PRNGKey(0), True)
            assert float(got) == pytest.approx(want, rel=1e-5)
            continue
        nll = -(out - np.log(np.exp(out).sum(1, keepdims=True)))[np.arange(6), labels]
        weights = class_weights(labels, 3)
        np.testing.assert_allclose(weights, [6 / 3, 6 / 12, 6 / 3])  # N / (C · n_c) for counts 1, 4, 1
        for w, want in ((None, nll.mean()), (weights, (weights[labels] * nll).sum() / weights[labels].sum())):
            objective = jax.jit(make_objective(classifier, 3, w), static_argnums=3)
            got, _ = objective(params, batch, jax.random.PRNGKey(0), True)
            assert float(got) == pytest.approx(want, rel=1e-5)


def test_tables_combine_runs_into_rows():
    def run_result(model, scores):
        return {"model": model, "tasks": {name: {"title": title, "score": score}
                                          for name, (title, score) in scores.items()}}
    runs = [run_result("headless", {"sst2": ("SST-2", 90.0)}),
            run_result("classical", {"sst2": ("SST-2", 88.0), "cola": ("CoLA", 40.0)}),
            run_result("headless", {"cola": ("CoLA", 45.5)})]  # a second task of the same model: the same row
    assert results.markdown_table(runs).splitlines() == [
        "| Model | CoLA | SST-2 | Avg. |", "|---|---|---|---|",
        "| headless | 45.50 | 90.00 | 67.75 |", "| classical | 40.00 | 88.00 | 64.00 |"]
    assert results.markdown_table([run_result("only", {"books": ("Books", 50.0)}), runs[1]]).splitlines()[2:] == [
        "| only | – | – | 50.00 | 50.00 |", "| classical | 40.00 | 88.00 | – | 64.00 |"]


@pytest.mark.parametrize("name", ["glue", "xnli", "books"])
def test_downstream_configs_name_known_tasks(name):
    for arg in DOWNSTREAM_CONFIGS[name]:
        config = load_config(name, arg)
        assert config.kind in RUNNERS and parse_tasks(config.tasks)
    assert parse_tasks(load_config("glue", "rte,mrpc").tasks) == ("rte", "mrpc")


def test_results_command_combines_json_files(tmp_path):
    for model, score in (("headless", 61.0), ("classical", 55.5)):
        run_result = {"model": model, "tasks": {"books": {"title": "Books", "score": score}}}
        (tmp_path / f"{model}.json").write_text(json.dumps(run_result))
    command = [sys.executable, "-m", "headless_jax.downstream.results", str(tmp_path / "headless.json"),
               str(tmp_path / "classical.json"), f"--out={tmp_path / 'table.md'}"]
    printed = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, timeout=120).stdout
    assert printed == (tmp_path / "table.md").read_text() == (
        "| Model | Books | Avg. |\n|---|---|---|\n| headless | 61.00 | 61.00 |\n| classical | 55.50 | 55.50 |\n")
    missing = subprocess.run(command[:3] + [str(tmp_path / "nope.json")], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode != 0 and "nope.json: no such file" in missing.stderr
