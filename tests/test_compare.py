"""`python -m headless_jax.compare` end to end on tiny twins: its table is the jobs' own results, its spread test is
what it says, and a second run resumes without redoing anything."""
import json

import numpy as np
import pytest

from headless_jax import comparison
from headless_jax.train.flops import steps_within_budget
from tests.test_configs import load_config

STEPS = 20


@pytest.fixture(scope="module")
def compared(corpus, tmp_path_factory):
    config = load_config("comparison", None)
    config.models = (("headless", "configs/demo.py:cwt"), ("classical", "configs/demo.py:ce"),
                     ("clm", "configs/clm_demo.py:cwt", "--config.optim.learning_rate=1e-3"))
    config.pretraining_overrides = (
        f"--config.data.sources=text:{corpus}/text/*.txt", f"--config.data.cache_dir={corpus}/cache_compare",
        "--config.model.vocab_size=512", "--config.model.num_layers=1", "--config.model.d_model=32",
        "--config.model.num_heads=2", "--config.model.head_dim=16", "--config.model.mlp_dim=64",
        "--config.data.seq_len=32", "--config.model.max_len=32", "--config.train.global_batch_size=8",
        f"--config.train.num_steps={STEPS}", "--config.train.eval_every=1000", f"--config.train.checkpoint_every={STEPS}",
        "--config.optim.warmup_steps=2")
    config.finetune_overrides = ("--config.seq_len=32", "--config.epochs=1", "--config.num_seeds=2",
                                 "--config.learning_rates=1e-3,1e-2", "--config.batch_size=8",
                                 "--config.eval_batch_size=8", "--config.books.passage_words=12",
                                 "--config.books.passages_per_book=20")
    config.mlm_eval_overrides = ("--config.batch_size=8", "--config.eval_batches=2")
    config.lm_eval_overrides = ("--config.batch_size=8", f"--config.perplexity.sources=text:{corpus}/text/*.txt",
                                f"--config.last_word.sources=text:{corpus}/text/*.txt")
    workdir = tmp_path_factory.mktemp("comparison")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XLA_FLAGS", "")  # one CPU device per step, as a user's machine
        result = comparison.compare(config, workdir)
        mtimes = {p: p.stat().st_mtime for p in workdir.glob("*/results.json")}
        again = comparison.compare(config, workdir)
    return workdir, result, again, mtimes


def test_the_table_is_the_jobs_own_results(compared):
    workdir, result, _, _ = compared
    assert list(result["models"]) == ["headless", "classical", "clm", "untrained"]
    for name, row in result["models"].items():
        steps = json.loads((workdir / name / "config.json").read_text())["train"]["num_steps"]
        assert steps == (1 if name == "untrained" else STEPS) and row["pretraining_seeds"] == [0]
        if name == "clm":  # a decoder: scored by configs/lm_eval.py, not fine-tuned
            lm = json.loads((workdir / "clm_lm_eval" / "results.json").read_text())
            assert row["perplexity"]["mean"] == lm["perplexity"]["perplexity"] > 1
            assert row["last_word"]["mean"] == 100 * lm["last_word"]["accuracy"]
            # A headless decoder is scored again after the LM-head phase, a run initialised from it.
            head = json.loads((workdir / "clm_lm_head_lm_eval" / "results.json").read_text())
            assert row["lm_head_perplexity"]["mean"] == head["perplexity"]["perplexity"] < row["perplexity"]["mean"]
            head_config = json.loads((workdir / "clm_lm_head" / "config.json").read_text())
            assert head_config["train"]["init_from"] == str(workdir / "clm")
            assert head_config["model"]["head"] == "untied"
            assert "finetune" not in row and not (workdir / "clm_books").exists()
            continue
        books = json.loads((workdir / f"{name}_books" / "results.json").read_text())["tasks"]["books"]
        per_seed = 100 * np.array(books["splits"]["test"]["accuracy"]["per_seed"])
        assert len(per_seed) == 2
        found = row["finetune"]["books"]
        assert found["mean"] == pytest.approx(per_seed.mean()) and found["std"] == pytest.approx(per_seed.std())
        assert found["learning_rate"][0] in (1e-3, 1e-2) and books["selection"]["split"] == "dev"
        heldout = json.loads((workdir / f"{name}_mlm_eval" / "results.json").read_text())["heldout"]
        assert row["mlm_accuracy"]["mean"] == pytest.approx(100 * heldout["accuracy"])
    for d in result["differences"]:
        a, b = (result["models"][n]["finetune"]["books"] for n in d["pair"].split(" − "))
        assert d["delta"] == pytest.approx(a["mean"] - b["mean"])
        assert d["outside_spread"] == (abs(a["mean"] - b["mean"]) > a["std"] + b["std"])
    assert [d["pair"] for d in result["differences"]] == ["headless − classical", "headless − untrained",
                                                           "classical − untrained"]
    table = (workdir / "comparison.md").read_text()
    assert table.count("\n| headless |") == 1 and "| books | headless − classical |" in table
    header, rule = table.splitlines()[:2]
    assert header.count("|") == rule.count("|") == 1 + 7  # model, steps, books × (test, per seed, lr), MLM, bpb
    assert f"\n| headless | {STEPS} | " in table and "\n| untrained | 1 | " in table
    assert f"\n| clm | {STEPS} | " in table and ("\n| decoder | steps | held-out perplexity | last-word accuracy % | "
                                                "after the LM-head phase: perplexity | last-word accuracy % |") in table


def test_running_it_again_redoes_nothing(compared):
    workdir, result, again, mtimes = compared
    assert again == result
    assert {p: p.stat().st_mtime for p in workdir.glob("*/results.json")} == mtimes


def test_the_study_scale_is_the_same_comparison_on_the_study_twins():
    demo, study = load_config("comparison", None), load_config("comparison", "study")
    assert comparison.model_specs(study) == {name: [flags[0].replace("demo.py", "study.py"), *flags[1:]]
                                        for name, flags in comparison.model_specs(demo).items()}
    assert comparison.model_specs(study)["classical"][0] == "--config=configs/study.py:ce"
    with pytest.raises(ValueError, match="unknown scale 'pod'; choose from"):
        load_config("comparison", "pod")


def test_several_pretraining_seeds_pretrain_each_model_per_seed_and_the_control_once():
    config = load_config("comparison", None)
    config.pretraining_seeds = (0, 2)
    planned = comparison.runs(config)
    assert {model: sorted(seeds) for model, seeds in planned.items()} == {
        "headless": [0, 2], "classical": [0, 2], "untrained": [0]}
    assert planned["classical"][0] == ["--config=configs/demo.py:ce"]  # seed 0: the one-seed comparison's run
    assert planned["classical"][2] == ["--config=configs/demo.py:ce", "--config.seed=2"]
    assert [comparison.run_name("classical", s) for s in (0, 2)] == ["classical", "classical_seed2"]
    config.pretraining_seeds = (1, 1)
    with pytest.raises(ValueError, match=r"pretraining_seeds=\(1, 1\): give distinct seeds"):
        comparison.runs(config)
    config.pretraining_seeds, config.models = (0,), (("untrained", "configs/demo.py"),)
    with pytest.raises(ValueError, match="'untrained' is the control's name; rename that model"):
        comparison.runs(config)


def test_a_row_pools_books_over_every_run_and_other_metrics_over_pretraining_seeds():
    def scores(books, rate, probe, **more):
        return {"steps": 600, "finetune": {"books": {"test": books, "learning_rate": rate},
                                           "probe": {"test": probe, "learning_rate": 1e-2}}, **more}

    per_seed = {0: scores([50.0, 54.0], 1e-3, [30.0, 30.0], mlm_accuracy=10.0),
                3: scores([60.0, 62.0], 3e-3, [40.0, 42.0], mlm_accuracy=14.0)}
    row = comparison.summary(per_seed)
    books = row["finetune"]["books"]
    assert books["mean"] == pytest.approx(56.5) and books["std"] == pytest.approx(np.std([50, 54, 60, 62]))
    assert books["per_pretraining_seed"] == [52.0, 61.0] and books["learning_rate"] == [1e-3, 3e-3]
    assert row["finetune"]["probe"]["mean"] == pytest.approx(35.5)
    assert row["mlm_accuracy"] == {"mean": 12.0, "std": 2.0} and "perplexity" not in row
    assert row["steps"] == [600, 600]
    rows = {"a": row, "b": comparison.summary({0: scores([40.0, 40.0], 1e-3, [36.0, 36.0])})}
    books_d, probe_d = comparison.differences(rows, [("b", "a")])
    assert books_d["setting"] == "books" and probe_d["setting"] == "probe"
    assert books_d["delta"] == pytest.approx(-16.5) and books_d["outside_spread"] == (16.5 > books["std"])
    assert probe_d["delta"] == pytest.approx(0.5) and not probe_d["outside_spread"]
    with pytest.raises(ValueError, match=r"pairs name \['c'\], which are not fine-tuned models"):
        comparison.differences(rows, [("a", "c")])


def test_the_recipe_study_at_equal_flops_gives_each_family_its_classical_baselines_compute():
    steps, flops = load_config("recipes_comparison", None), load_config("recipes_comparison", "flops")
    assert len(steps.models) == len(flops.models) == 18 and steps.pretraining_seeds == (0, 1, 2)
    assert all(len(model) == 2 for model in steps.models)  # equal steps: each twin's own num_steps
    budget = {name: float(flag.split("=")[1]) for name, _, flag in flops.models}
    for name, spec, _ in flops.models:
        path, arg = spec.removeprefix("configs/").split(".py:")
        config = load_config(path, arg)
        if name in ("mlm_ce", "clm_ce"):  # the baselines train their own 600 steps
            assert steps_within_budget(config, budget[name]) == config.train.num_steps == 600
    assert budget["mosaicbert_cwt"] == budget["mlm_ce"] != budget["meap_cwt"] == budget["clm_ce"]
    assert steps_within_budget(load_config("demo", None), budget["mlm_cwt"]) > 600  # headless MLM is cheaper
    assert ("spanbert_cwt", "spanbert_ce") in flops.pairs and ("bpdec_ce", "mlm_ce") in flops.pairs


def test_one_family_of_the_recipe_study_is_the_whole_studys_runs_of_that_family():
    whole, flops = load_config("recipes_comparison", None), load_config("recipes_comparison", "flops")
    decoders = load_config("recipes_comparison", "decoders")
    encoders = load_config("recipes_comparison", "flops,encoders")
    assert set(decoders.models) == {m for m in whole.models if m[1].split(".py")[0] in (
        "configs/clm_demo", "configs/meap", "configs/prefix_lm")} and len(decoders.models) == 6
    assert decoders.control_steps == 0 and decoders.pairs == ()  # the control and the pairs are read on books
    assert set(encoders.models) == set(flops.models) - {m for m in flops.models if m[0].split("_")[0] in (
        "clm", "meap", "prefix")} and len(encoders.models) == 12
    assert encoders.control_steps == whole.control_steps == 1 and encoders.pairs == whole.pairs
    assert [s for s, *_ in whole.finetune] == ["books", "books_probe"]
    with pytest.raises(ValueError, match=r"unknown \['decoder'\]; use no argument .* flops, encoders, decoders"):
        load_config("recipes_comparison", "flops,decoder")
