"""Loading a pretraining run for downstream jobs: parameters on another mesh, its tokenizer, clear errors."""
import os
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from headless_jax.config import base_config
from headless_jax.data import book_names, read_book
from headless_jax.data.tokenizer import RUN_TOKENIZER_FILE
from headless_jax.experiment import PretrainedError, load_pretrained
from headless_jax.model import embedding_matrix
from headless_jax.train.layout import Layout, axis_rules

ROOT = os.path.join(os.path.dirname(__file__), "..")


def pretrain(workdir, corpus_dir, config="configs/demo.py", steps=4, *overrides, cwd=ROOT):
    """A tiny pretraining run of `config` on the first 40k characters of a novel, on 4 devices (data × tensor),
    started in `cwd` (a relative workdir is relative to it)."""
    text = corpus_dir / "book.txt"
    if not text.exists():
        text.write_text(read_book(book_names()[0])[:40_000])
    subprocess.run(
        [sys.executable, "-m", "headless_jax.main", f"--config={os.path.join(ROOT, config)}", f"--workdir={workdir}",
         f"--config.data.sources=text:{text}", "--config.model.vocab_size=384", "--config.model.num_layers=1",
         "--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.head_dim=16",
         "--config.model.mlp_dim=64", "--config.data.seq_len=32", "--config.model.max_len=32",
         "--config.train.global_batch_size=8", f"--config.train.num_steps={steps}", "--config.train.eval_every=1000",
         "--config.train.eval_batches=1", "--config.mesh.data=2", "--config.mesh.tensor=2", *overrides],
        cwd=cwd, env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4"),
        check=True, capture_output=True, timeout=600)
    return workdir


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    return pretrain(tmp_path_factory.mktemp("encoder"), tmp_path_factory.mktemp("text"))


def load(workdir, **kwargs):
    mesh_cfg = base_config().mesh
    mesh_cfg.update(data=2, fsdp=4)  # 8 devices, FSDP: not the 2 × tensor 2 layout the run was saved from
    return load_pretrained(str(workdir), Layout.from_config(mesh_cfg), **kwargs)


def test_parameters_restore_exactly_onto_a_different_mesh(encoder_run):
    pretrained = load(encoder_run, causal=False)
    saved = ocp.StandardCheckpointer().restore(os.path.join(encoder_run, "checkpoints", "4", "state"))["params"]
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(pretrained.params), jax.tree.leaves(saved)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=str(path))
    embedding = embedding_matrix(pretrained.params)
    assert embedding.sharding.spec == nn.logical_to_mesh_axes(("vocab", "embed"), axis_rules(base_config().mesh))
    assert len(embedding.sharding.device_set) == 8
    assert pretrained.step == 4 and pretrained.config.model.vocab_size == 384
    assert pretrained.tokenizer.vocab_size == 384


def test_a_workdir_relative_to_the_current_directory_saves_and_restores(tmp_path, monkeypatch):
    """As in the README (`--workdir=runs/demo`, `--config.pretrained=runs/demo`): Orbax itself needs absolute paths."""
    pretrain("runs/demo", tmp_path, "configs/demo.py", 2, cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert sorted(os.listdir("runs/demo/checkpoints")) == ["2"]
    assert load("runs/demo", causal=False).step == 2


def test_a_window_longer_than_the_learned_position_table_names_the_fix(encoder_run):
    pretrained = load(encoder_run)
    pretrained.check_seq_len(32)
    with pytest.raises(PretrainedError, match=r"seq_len=33 exceeds .*max_len=32\); set --config.seq_len=32 or less"):
        pretrained.check_seq_len(33)


def test_a_decoder_job_refuses_an_encoder(encoder_run):
    with pytest.raises(PretrainedError, match="is an encoder .* needs a decoder"):
        load(encoder_run, causal=True)


def test_a_different_tokenizer_is_refused(encoder_run, tmp_path):
    other = pretrain(tmp_path / "other", tmp_path, "configs/demo.py", 1, "--config.seed=1",
                     "--config.data.heldout_fraction=0.2")
    with pytest.raises(PretrainedError, match="is not the tokenizer"):
        load(encoder_run, tokenizer_model=str(other / RUN_TOKENIZER_FILE))
    assert load(encoder_run, tokenizer_model=str(encoder_run / RUN_TOKENIZER_FILE)).tokenizer.vocab_size == 384


def test_a_workdir_without_checkpoints_names_the_fix(tmp_path):
    with pytest.raises(PretrainedError, match="no checkpoints/ there"):
        load(tmp_path)
