"""Fine-tuning selection on dev alone (headless_jax/downstream/selection.py), and the regression test for the
classical twin that could not be fine-tuned with CLS pooling (docs/downstream.md)."""
import math
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from headless_jax.config import base_config, set_objective
from headless_jax.data import book_names, read_book
from headless_jax.data.sources import parse_sources
from headless_jax.data.tokenizer import Tokenizer, train_sentencepiece
from headless_jax.downstream.examples import Example, TaskData
from headless_jax.downstream.finetune import finetune_task
from headless_jax.downstream.finetune_config import classify_base_config
from headless_jax.downstream.selection import choose, parse_grid
from headless_jax.experiment import build_experiment, load_pretrained
from headless_jax.interop.importer import write_run
from headless_jax.train.layout import Layout
from tests.main_runs import ENV, ROOT

VOCAB, L = 384, 16


def test_each_seed_keeps_its_best_epoch_and_the_best_mean_rate_wins():
    curves = {1e-4: [[0.5, 0.7, 0.6], [0.6, 0.6, 0.65]],  # best per seed 0.7 (epoch 2), 0.65 (epoch 3): mean 0.675
              1e-3: [[0.9, 0.4, 0.4], [0.3, 0.4, 0.44]],  # 0.9, 0.44: mean 0.67
              1e-2: [[0.6, 0.675, 0.5], [0.675, 0.6, 0.6]]}  # 0.675, 0.675: a tie with 1e-4 goes to the first
    choice = choose(curves)
    assert choice.learning_rate == 1e-4 and choice.epochs == (2, 3) and choice.dev_scores == (0.7, 0.65)
    assert choice.grid == pytest.approx({1e-4: 0.675, 1e-3: 0.67, 1e-2: 0.675})
    assert parse_grid("", 3e-4) == (3e-4,) and parse_grid("1e-4, 1e-3", 0.1) == (1e-4, 1e-3)
    with pytest.raises(ValueError, match="learning_rates"):
        parse_grid("1e-4,-1", 0.1)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(read_book(book_names()[0])[:40_000])
    return Tokenizer(train_sentencepiece(parse_sources(f"text:{path}"), VOCAB, 0.0, 10**6), "test", VOCAB)


def separable_task(seed: int, flip_test: bool = False) -> TaskData:
    """Binary: does the passage hold the word 'mother' or 'father'? Passages of other words around it."""
    rng = np.random.default_rng(seed)
    words = read_book(book_names()[1])[:20_000].split()

    def examples(n: int, flip: bool = False) -> list[Example]:
        out = []
        for _ in range(n):
            label = int(rng.integers(2))
            start = int(rng.integers(len(words) - 6))
            text = " ".join(words[start:start + 3] + [("father" if label else "mother")] + words[start + 3:start + 6])
            out.append(Example(text, None, 1 - label if flip else label))
        return out
    train, dev, test = examples(64), examples(32), examples(32, flip=flip_test)
    return TaskData("separable", "Separable", 2, ("accuracy",), train, {"dev": dev, "test": test}, ("test",))


def finetune_config(**overrides) -> ml_collections.ConfigDict:
    c = classify_base_config("separable")
    c.update(**{**dict(seq_len=L, batch_size=8, eval_batch_size=8, epochs=3, num_seeds=2, dropout_rate=0.0,
                       body_dropout_rate=0.0, select_on="dev", learning_rates="1e-4,1e-3,1e-2"), **overrides})
    return c


def random_encoder(workdir, tokenizer, loss: str = "ce") -> None:
    c = base_config()
    c.model.update(vocab_size=VOCAB, num_layers=1, d_model=32, num_heads=2, head_dim=16, mlp_dim=64, max_len=L)
    c.data.seq_len = L
    config = set_objective(c, loss, classical_head="tied")
    experiment = build_experiment(config)
    write_run(workdir, config, experiment.init_state(), tokenizer, {})


def test_the_test_split_never_influences_the_choice(tokenizer, tmp_path):
    """Two runs that differ only in their test split's labels (flipped: dev and test disagree) choose the same rate
    and epochs, reach the same dev scores, and report complementary test accuracies."""
    random_encoder(tmp_path / "run", tokenizer)
    layout = Layout.from_config(base_config().mesh, jax.devices()[:1])
    pretrained = load_pretrained(str(tmp_path / "run"), layout)
    config = finetune_config()
    plain = finetune_task(separable_task(0), pretrained, config, layout)
    flipped = finetune_task(separable_task(0, flip_test=True), pretrained, config, layout)
    assert plain["selection"] == flipped["selection"]
    assert plain["selection"]["split"] == "dev" and set(plain["selection"]["grid"]) == {"0.0001", "0.001", "0.01"}
    assert plain["splits"]["dev"] == flipped["splits"]["dev"]
    for a, b in zip(plain["splits"]["test"]["accuracy"]["per_seed"], flipped["splits"]["test"]["accuracy"]["per_seed"]):
        assert a + b == pytest.approx(1.0)
    assert plain["score"] != flipped["score"]


def test_a_selection_split_that_is_also_reported_is_refused(tokenizer, tmp_path):
    random_encoder(tmp_path / "run", tokenizer)
    layout = Layout.from_config(base_config().mesh, jax.devices()[:1])
    pretrained = load_pretrained(str(tmp_path / "run"), layout)
    task = separable_task(0)
    with pytest.raises(ValueError, match="select_on='test' is a split task separable reports"):
        finetune_task(task, pretrained, finetune_config(select_on="test"), layout)
    with pytest.raises(ValueError, match="select_on='validation'.*dev, test"):
        finetune_task(task, pretrained, finetune_config(select_on="validation"), layout)


@pytest.mark.parametrize("exclude_special", [True, False])
def test_a_pretrained_classical_encoder_fine_tunes_below_chance_loss_with_cls_pooling(corpus, tmp_path,
                                                                                     exclude_special):
    """The regression test of the classical twin whose CLS fine-tuning stayed at chance (ln 2 here): pretrained
    with CE over the whole vocabulary, the never-target special ids' tied embeddings ([CLS] among them) are pushed
    away from every feature, and a seed's CLS fine-tuning stays at chance; with objective.ce_exclude_special every
    seed learns (at the rate and epoch selected on dev)."""
    run = tmp_path / "classical"
    command = [sys.executable, "-m", "headless_jax.main", "--config=configs/demo.py:ce", f"--workdir={run}",
               f"--config.data.sources=text:{corpus}/text/*.txt", f"--config.data.cache_dir={corpus}/cache_mlm",
               f"--config.model.vocab_size={VOCAB}", "--config.model.num_layers=1", "--config.model.d_model=32",
               "--config.model.num_heads=2", "--config.model.head_dim=16", "--config.model.mlp_dim=64",
               "--config.data.seq_len=32", "--config.model.max_len=32", "--config.train.global_batch_size=16",
               "--config.train.num_steps=150", "--config.train.eval_every=1000", "--config.train.checkpoint_every=150",
               "--config.optim.warmup_steps=10", "--config.optim.learning_rate=3e-3",
               f"--config.objective.ce_exclude_special={exclude_special}"]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    layout = Layout.from_config(base_config().mesh, jax.devices()[:1])
    pretrained = load_pretrained(str(run), layout)
    assert pretrained.config.model.head == "tied"
    summary = finetune_task(separable_task(1), pretrained, finetune_config(pooling="cls", seq_len=32, epochs=8),
                            layout)
    stuck = max(summary["selection"]["train_loss"]) > 0.9 * math.log(2)  # a seed's last-epoch loss near chance
    assert stuck != exclude_special
