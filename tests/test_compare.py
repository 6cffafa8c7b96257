"""`python -m headless_jax.compare` end to end on tiny twins: its table is the jobs' own results, its spread test is
what it says, and a second run resumes without redoing anything."""
import json

import numpy as np
import pytest

from headless_jax import comparison
from tests.test_configs import load_config

STEPS = 20


@pytest.fixture(scope="module")
def compared(corpus, tmp_path_factory):
    config = load_config("comparison", None)
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
    workdir = tmp_path_factory.mktemp("comparison")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XLA_FLAGS", "")  # one CPU device per step, as a user's machine
        result = comparison.compare(config, workdir)
        mtimes = {p: p.stat().st_mtime for p in workdir.glob("*/results.json")}
        again = comparison.compare(config, workdir)
    return workdir, result, again, mtimes


def test_the_table_is_the_jobs_own_results(compared):
    workdir, result, _, _ = compared
    assert set(result["models"]) == {"headless", "classical", "untrained"}
    for name, row in result["models"].items():
        books = json.loads((workdir / f"{name}_books" / "results.json").read_text())["tasks"]["books"]
        per_seed = 100 * np.array(books["splits"]["test"]["accuracy"]["per_seed"])
        assert len(per_seed) == 2
        assert row["books_test"]["mean"] == pytest.approx(per_seed.mean())
        assert row["books_test"]["std"] == pytest.approx(per_seed.std())
        assert row["learning_rate"] in (1e-3, 1e-2) and books["selection"]["split"] == "dev"
        heldout = json.loads((workdir / f"{name}_mlm_eval" / "results.json").read_text())["heldout"]
        assert row["mlm_accuracy"] == pytest.approx(100 * heldout["accuracy"])
        steps = json.loads((workdir / name / "config.json").read_text())["train"]["num_steps"]
        assert steps == (1 if name == "untrained" else STEPS)
    for d in result["differences"]:
        a, b = (result["models"][n]["books_test"] for n in d["pair"].split(" − "))
        assert d["delta"] == pytest.approx(a["mean"] - b["mean"])
        assert d["outside_spread"] == (abs(a["mean"] - b["mean"]) > a["std"] + b["std"])
    table = (workdir / "comparison.md").read_text()
    assert table.count("\n| headless |") == 1 and "| headless − classical |" in table


def test_running_it_again_redoes_nothing(compared):
    workdir, result, again, mtimes = compared
    assert again == result
    assert {p: p.stat().st_mtime for p in workdir.glob("*/results.json")} == mtimes
