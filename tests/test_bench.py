"""The benchmark runs the real train step of both objectives and writes complete, sane rows (no timing asserts)."""
import json
import math

import jax
import pytest

from headless_jax import bench
from tests.train_helpers import tiny_config

FIELDS = ("config", "objective", "vocab", "batch", "seq_len", "group_size", "step_ms_median", "step_ms_min",
          "step_ms_max", "cpu_ms_median", "tokens_per_s", "mfu", "peak_memory_bytes", "bytes_accessed", "head_share",
          "device_kind", "jax_version")


def tiny_clm(vocab: int = 256):
    c = tiny_config("clm", "cwt", batch=8)
    c.model.update(num_layers=1, vocab_size=vocab)
    c.train.peak_flops_per_device = 1e12  # skip measuring the CPU matmul peak in a test
    return c


def check_row(row, devices):
    for field in FIELDS:
        assert field in row, field
    assert row["device_kind"] == devices[0].device_kind and row["jax_version"] == jax.__version__
    assert 0 < row["step_ms_min"] <= row["step_ms_median"] <= row["step_ms_max"]
    assert row["cpu_ms_median"] > 0
    assert math.isclose(row["tokens_per_s"], row["batch"] * row["seq_len"] / (row["step_ms_median"] / 1e3))
    assert 0 < row["mfu"] < 1
    assert 0 <= row["head_share"] < 1
    assert row["peak_memory_bytes"] is None or row["peak_memory_bytes"] > 0
    assert row["bytes_accessed"] is None or row["bytes_accessed"] > 0


@pytest.mark.parametrize("embedding_update", ["dense", "sparse"])
def test_vocab_sweep_writes_complete_rows(tmp_path, embedding_update):
    devices = jax.devices()[:1]
    config = tiny_clm()
    config.optim.embedding_update = embedding_update  # sparse: the headless twin's; the classical one stays dense
    rows = bench.run_sweep(config, "vocab", [512], steps=2, name="tiny", devices=devices, log=lambda _: None)
    paths = bench.write_outputs(rows, str(tmp_path), "vocab")
    written = json.load(open(paths["json"]))
    assert written == json.loads(json.dumps(rows))
    assert [(r["objective"], r["vocab"]) for r in written] == [("cwt", 512), ("ce", 512)]
    for row in written:
        check_row(row, devices)
        assert (row["config"], row["batch"], row["seq_len"], row["group_size"]) == ("tiny", 8, 16, 2)
        assert row["head"] == ("none" if row["objective"] == "cwt" else "untied")
    # The classical head adds 3·2·D·V FLOPs per predicted token; the headless step has only the K×K logits.
    assert written[1]["head_flops_per_step"] == 3 * 8 * 15 * 2 * 32 * 512
    assert written[0]["head_flops_per_step"] == 3 * 8 * 15 * 2 * (2 * 15) * 32
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert [r["embedding_update"] for r in written] == [embedding_update, "dense"]
    assert f"| cwt | {embedding_update} | 512 |" in open(paths["md"]).read()


def test_without_head_share_only_the_full_step_is_timed(monkeypatch):
    timed, original = [], bench.time_train_steps

    def counting(config, objective_fns, *args):
        timed.append(len(objective_fns))
        return original(config, objective_fns, *args)

    monkeypatch.setattr(bench, "time_train_steps", counting)
    [row] = bench.run_sweep(tiny_clm(), "none", [], steps=1, name="tiny", devices=jax.devices()[:1],
                            log=lambda _: None, losses=["cwt"], head_share=False)
    assert timed == [1] and row["objective"] == "cwt"
    assert row["head_share"] is None and row["body_step_ms_median"] is None and row["step_ms_median"] > 0


def test_batch_and_group_sweeps_keep_groups_dividing_the_batch():
    config = tiny_clm()
    config.objective.cwt_group_size = 4
    batch_cases = bench.sweep_configs(config, "batch", [2, 8])
    assert [(c.objective.loss, c.train.global_batch_size, c.objective.cwt_group_size) for c in batch_cases] == [
        ("cwt", 2, 2), ("ce", 2, 2), ("cwt", 8, 4), ("ce", 8, 4)]
    group_cases = bench.sweep_configs(config, "group", [1, 8])
    assert [(c.objective.loss, c.objective.cwt_group_size) for c in group_cases] == [("cwt", 1), ("ce", 1), ("cwt", 8)]
    assert config.objective.loss == "cwt" and config.model.head == "none"  # the sweep copies, never mutates
    only_headless = bench.sweep_configs(config, "vocab", [512, 1024], losses=["cwt"])
    assert [(c.objective.loss, c.model.vocab_size) for c in only_headless] == [("cwt", 512), ("cwt", 1024)]


def test_cwt_k_dense_vs_blockwise_skips_dense_over_budget_and_large_k():
    rows = bench.run_cwt_k([256, 512], dim=16, block_size=128, steps=2, host_memory_bytes=2**20,
                           log=lambda _: None, time_max_k=256)
    assert [(r["mode"], r["k"]) for r in rows] == [("dense", 256), ("blockwise(128)", 256), ("dense", 512),
                                                    ("blockwise(128)", 512)]
    ran = [r for r in rows if r["step_ms_median"] is not None]
    assert len(ran) == 2 and rows[2]["step_ms_median"] is None and "not run" in rows[2]["note"]
    assert rows[3]["step_ms_median"] is None and "not timed: K > --cwt_time_max_k=256" in rows[3]["note"]
    for r in ran:
        assert 0 < r["step_ms_min"] <= r["step_ms_median"] <= r["step_ms_max"] and r["cpu_ms_median"] > 0
    memory = {(r["mode"], r["k"]): r["peak_memory_bytes"] for r in rows}
    if memory[("dense", 512)] is not None:  # reported even when not run; the [K,K] logits dominate dense
        assert memory[("dense", 512)] >= 4 * 512**2
        assert memory[("blockwise(128)", 512)] < memory[("dense", 512)]
