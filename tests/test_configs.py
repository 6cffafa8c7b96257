"""Every shipped config builds its model and abstract state; each config error gives its message."""
import glob
import importlib.util
import os

import jax
import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from headless_jax.config import base_config
from headless_jax.experiment import build_experiment
from headless_jax.interop.hf import check_exportable
from headless_jax.model import BODY, HEAD, embedding_matrix
from headless_jax.train.layout import Layout, MeshError
from headless_jax.validate import ConfigError, validate_config

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
TWIN_ARGS = {"demo": [None, "ce", "cwt+ce"], "clm_demo": [None, "ce"], "bert_base": [None, "ce"],
             "pythia70m": [None, "ce"], "pythia160m": [None, "ce"], "multilingual": [None, "ce"],
             "vocab_study": [None, "ce,200000"], "study": [None, "ce"], "batch_study": [None, "ce,256"], "lm_head": [None],
             "skip_demo": [None, "ce", "topk", "ce,topk", "cwt,topk,clm", "ce,skip,clm"],
             "skip_pythia70m": [None, "ce", "cwt,skip", "ce,skip"],
             **{recipe: [None, "ce", "demo", "ce,demo"] for recipe in ("mosaicbert", "spanbert", "meap", "prefix_lm",
                                                                     "biphasic", "electra", "bpdec")}}


def load_config(name: str, arg: str | None):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIG_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*([arg] if arg else []))


def test_every_config_file_is_covered():
    names = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))}
    assert names <= set(TWIN_ARGS) | set(DOWNSTREAM_CONFIGS), names - set(TWIN_ARGS)


DOWNSTREAM_CONFIGS: dict[str, list] = {  # `python -m headless_jax.evaluate` configs, checked by their own tests
    "glue": [None, "sst2", "rte,mrpc"], "xnli": [None], "books": [None, "probe"],  # tests/test_classify.py
    "lm_eval": [None, "lambada"],  # tests/test_lm_eval.py
    "mlm_eval": [None],  # tests/test_recipes.py
    "harness": [None],  # tests/test_harness.py
    "comparison": [None, "study"],  # python -m headless_jax.compare: tests/test_compare.py
    "recipes_comparison": [None, "flops", "decoders", "flops,encoders"],
}


@pytest.mark.parametrize("name,arg", [(n, a) for n, args in TWIN_ARGS.items() for a in args])
def test_config_builds_model_and_abstract_state(name, arg):
    config = load_config(name, arg)
    experiment = build_experiment(config)  # validates it first
    abstract, shardings = experiment.abstract_state, experiment.state_shardings
    params = abstract["params"]
    head_has_params = config.model.head == "untied" or (config.model.head == "tied" and not config.model.causal)
    if config.model.electra_generator:  # ELECTRA: a classical head is its generator's
        head_has_params = False
    assert (HEAD in params) == head_has_params  # a tied causal head is E itself
    embedding = embedding_matrix(params)
    assert embedding.shape == (config.model.vocab_size, config.model.d_model)
    assert count_params(params) > config.model.vocab_size * config.model.d_model
    assert jax.tree.structure(abstract) == jax.tree.structure(shardings)


@pytest.mark.parametrize("name,arg", [(n, a) for n in ("bert_base", "multilingual", "pythia70m", "pythia160m")
                                      for a in (None, "ce")])
def test_the_bert_and_pythia_shapes_compute_as_transformers_does(name, arg):
    """Exact (erf) GELU, as HF BERT and Pythia, and a layout the export writes (tests/test_interop.py)."""
    config = load_config(name, arg)
    assert not config.model.gelu_approximate
    check_exportable(config.model)


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))


def test_bert_base_has_the_published_size():
    body = build_experiment(load_config("bert_base", "ce")).abstract_state["params"][BODY]
    non_embedding = count_params(body) - count_params(body["embed"]) - count_params(body["position_embed"])
    embed_norm = 2 * 768
    assert non_embedding == 12 * (4 * 768 * 768 + 4 * 768 + 2 * 768 * 3072 + 3072 + 768 + 4 * 768) + embed_norm


def test_pythia160m_has_the_published_size():
    # EleutherAI/pythia-160m has 162 322 944 parameters (embedding and untied head 50 304 × 768 each).
    params = build_experiment(load_config("pythia160m", "ce")).abstract_state["params"]
    d, f, v = 768, 3072, 50304
    layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 2 * 2 * d  # attention, MLP, two layer norms
    assert count_params(params[BODY]) == v * d + 12 * layer + 2 * d  # + the final norm
    assert count_params(params[HEAD]) == v * d
    assert count_params(params) == 162_322_944


def tiny() -> ml_collections.ConfigDict:
    c = base_config()
    c.train.global_batch_size = 16
    return c


@pytest.mark.parametrize("change,message", [
    (lambda c: c.model.update(causal=True), "needs a bidirectional encoder"),
    (lambda c: c.objective.update(task="clm"), "needs a causal decoder"),
    (lambda c: c.objective.update(loss="ce"), "needs a vocabulary head"),
    (lambda c: c.objective.update(loss="softmax"), "objective.loss='softmax' is not one of"),
    (lambda c: c.data.update(seq_len=512), "exceeds the learned position table"),
    (lambda c: c.train.update(global_batch_size=12), "not divisible by batch shards"),
    (lambda c: c.train.update(microbatches=4), "not divisible by batch shards"),
    (lambda c: c.objective.update(cwt_group_size=3), "does not divide the 16 sequences"),
    (lambda c: c.objective.update(mask_rate=0.001), "mask rate"),
    (lambda c: c.mesh.update(axis_rules=(("batch", "pipeline"),)), "unknown mesh axis 'pipeline'"),
    (lambda c: c.train.update(trainable="head"), "model.head='none' has no parameters of its own"),
    (lambda c: c.train.update(num_steps=-5), r"train.num_steps=-5 is out of range: it must be > 0"),
    (lambda c: c.optim.update(learning_rate=-1.0), r"optim.learning_rate=-1.0 is out of range: it must be > 0"),
    (lambda c: c.train.update(eval_every=0), r"train.eval_every=0 is out of range"),
    (lambda c: c.train.update(checkpoint_every=0), r"train.checkpoint_every=0 is out of range"),
    (lambda c: c.train.update(global_batch_size=0), r"train.global_batch_size=0 is out of range"),
    (lambda c: c.data.update(heldout_fraction=1.0), r"data.heldout_fraction=1.0 .* must be ≥ 0 and < 1"),
    (lambda c: c.optim.update(b2=float("nan")), r"optim.b2=nan is not a number"),
])
def test_config_errors_name_the_fix(change, message):
    config = tiny()
    change(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, num_devices=8)


def test_defaults_are_valid():
    validate_config(tiny(), num_devices=8)


def parse_command_line(*overrides: str):
    argv = ["main", f"--config={os.path.join(CONFIG_DIR, 'demo.py')}", *overrides]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def test_unknown_command_line_key_is_rejected():
    assert parse_command_line("--config.model.num_layers=3").model.num_layers == 3
    with pytest.raises((flags.Error, AttributeError), match='Did you mean "num_layers"'):
        parse_command_line("--config.model.num_layer=3")


@pytest.mark.parametrize("sizes,devices,message", [((3, 1, 1), 8, "does not divide 8 devices"),
                                                   ((-1, -1, 2), 8, "at most one axis"),
                                                   ((2, 2, 1), 8, "uses 4 devices")])
def test_mesh_errors(sizes, devices, message):
    config = tiny()
    config.mesh.update(data=sizes[0], fsdp=sizes[1], tensor=sizes[2])
    with pytest.raises(MeshError, match=message):
        Layout.from_config(config.mesh, jax.devices()[:devices])
