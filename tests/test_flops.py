"""The FLOP counter against hand counts for a tiny model, written out as plain arithmetic (no helpers reused).

Tiny shape: 2 layers, D = 32, 2 heads × 16 dims, MLP 64, sequence 16, vocabulary 64, batch 8.
Per layer matmul weights: q, k, v, out = 4 · 32 · 32 = 4096; GELU MLP 2 · 32 · 64 = 4096 (SwiGLU 3 · 32 · 64).
"""
import pytest

from headless_jax.loop import train
from headless_jax.objectives import trained_tasks
from headless_jax.train import flops
from headless_jax.train.checkpoint import Checkpointer
from headless_jax.validate import ConfigError
from tests.train_helpers import text_run_config, tiny_config

TOKENS, LAYERS = 16, 2
BODY_GELU = TOKENS * LAYERS * 2 * (4096 + 4096)            # 524 288: 2 FLOPs per weight per token
BODY_SWIGLU = TOKENS * LAYERS * 2 * (4096 + 6144)          # 655 360
ATTENTION_FULL = TOKENS * LAYERS * (2 * 16 * 32 + 2 * 16 * 32)  # QKᵀ and AV: 2·L·(H·Dh) each, per token
ATTENTION_CAUSAL = ATTENTION_FULL // 2


def per_sequence(task, loss, activation="gelu", **objective):
    c = tiny_config(task, loss, batch=8)
    c.model.activation = activation
    c.objective.update(**objective)
    return c, flops.forward_flops_per_sequence(c, c.train.global_batch_size // c.train.microbatches)


def test_decoder_headless_cwt():
    c, parts = per_sequence("clm", "cwt")  # 15 predictions per sequence, groups of 2 sequences: K = 30
    assert parts == {"body": BODY_GELU, "attention": ATTENTION_CAUSAL, "head": 15 * 2 * 30 * 32}
    total = flops.train_flops_per_step(c)
    assert total["total"] == 3 * 8 * (524288 + 32768 + 28800)
    assert total["head"] == 3 * 8 * 28800


def test_decoder_classical_untied_head_has_no_transform():
    _, parts = per_sequence("clm", "ce")
    assert parts == {"body": BODY_GELU, "attention": ATTENTION_CAUSAL, "head": 15 * 2 * 32 * 64}


def test_decoder_swiglu():
    _, parts = per_sequence("clm", "cwt", activation="swiglu")
    assert parts["body"] == BODY_SWIGLU == 655360


def test_encoder_mlm_classical_head_with_bert_transform():
    # mask rate 0.25 of 16 → 4 predictions; head = decoder 2·D·V + transform 2·D·D per prediction
    _, parts = per_sequence("mlm", "ce")
    assert parts == {"body": BODY_GELU, "attention": ATTENTION_FULL, "head": 4 * (2 * 32 * 64 + 2 * 32 * 32)}
    assert ATTENTION_FULL == 65536


def test_encoder_mlm_ce_all_positions_pays_the_head_at_every_token():
    _, parts = per_sequence("mlm", "ce", ce_all_positions=True)
    assert parts["head"] == 16 * (4096 + 2048) == 98304


def test_encoder_cwt_whole_batch_group_and_microbatches():
    c, parts = per_sequence("mlm", "cwt", cwt_group_size=0)  # K = 8 sequences · 4 predictions = 32
    assert parts["head"] == 4 * 2 * 32 * 32
    c.train.microbatches = 2  # each microbatch of 4 sequences is a group: K = 16
    assert flops.train_flops_per_step(c)["head"] == 3 * 8 * 4 * 2 * 16 * 32
    assert flops.train_flops_per_step(c)["total"] == 3 * 8 * (524288 + 65536 + 4096)


def test_mixed_loss_counts_both_heads():
    _, parts = per_sequence("clm", "cwt+ce")
    assert parts["head"] == 15 * 2 * 32 * 64 + 15 * 2 * 30 * 32


@pytest.mark.parametrize("configured", [123e12])
def test_configured_peak_wins(configured):
    assert flops.peak_flops_per_device(configured) == (configured, "configured")


def budget_config(loss: str, task: str = "mlm"):
    config = tiny_config(task, loss)
    if task == "clm_then_mlm":
        config.model.causal = False
    config.train.flops_budget = 3e9
    return config


def test_runs_of_different_objectives_given_one_budget_spend_it_to_within_a_step():
    """The most steps whose FLOPs fit the budget, for each objective; so the runs' FLOPs match to within one step."""
    spent = {}
    for loss, task in (("cwt", "mlm"), ("ce", "mlm"), ("cwt", "clm_then_mlm")):
        config = budget_config(loss, task)
        steps = flops.steps_within_budget(config, config.train.flops_budget)
        config.train.num_steps = steps
        total = flops.train_flops_between(config, 0, steps)
        longer = budget_config(loss, task)
        longer.train.num_steps = steps + 1
        assert total <= 3e9 < flops.train_flops_between(longer, 0, steps + 1), (loss, task)  # one more step won't fit
        step_cost = max(flops.train_flops_per_step(config, phase)["total"] for phase in trained_tasks(config))
        spent[(loss, task)] = (steps, total, step_cost)
    assert len({steps for steps, _, _ in spent.values()}) == 3  # the objectives cost differently: unequal steps
    totals = [total for _, total, _ in spent.values()]
    assert max(totals) - min(totals) <= max(cost for _, _, cost in spent.values())


def test_a_budgeted_run_stops_where_its_budget_is_spent(tmp_path):
    config = text_run_config(tmp_path, book=0, steps=1000, checkpoint_every=1000)
    per_step = flops.train_flops_per_step(config)["total"]
    config.train.flops_budget = 5.5 * per_step
    train(config, str(tmp_path / "run"))
    assert config.train.num_steps == 5
    assert Checkpointer(str(tmp_path / "run" / "checkpoints")).latest_step() == 5


def test_a_budget_that_buys_no_step_is_refused(tmp_path):
    config = text_run_config(tmp_path, book=0, steps=10, checkpoint_every=10)
    config.train.flops_budget = 1.0
    with pytest.raises(ConfigError, match="buys no step"):
        train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
