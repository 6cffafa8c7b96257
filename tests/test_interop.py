"""Export to and import from Hugging Face `transformers`: the HF implementation is the reference.

Tiny random models (every parameter perturbed, so that a swapped bias or a transposed kernel shows) are written
as runs, exported, loaded with `from_pretrained`, and run on the same tokens: HF's logits (hidden states for a
BertModel) must equal ours to 1e-5 in float32. An export imported and exported again must give the same bytes.
"""
import json
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
from headless_jax.experiment import build_experiment, load_pretrained
from headless_jax.interop import hf_dir
from headless_jax.interop.errors import InteropError
from headless_jax.interop.export import export_run
from headless_jax.interop.importer import import_checkpoint, write_run
from headless_jax.model import embedding_matrix
from headless_jax.train.layout import Layout
from tests.main_runs import ENV, ROOT

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, L = 384, 32
LAYOUTS = {  # name → model keys (the rest: a tiny model), every supported layout's variants covered
    "bert_mlm_tied": dict(causal=False, norm_position="post", loss="ce", head="tied", gelu_approximate=False),
    "bert_mlm_untied_scanned": dict(causal=False, norm_position="post", loss="ce", head="untied", scan_layers=True),
    "bert_headless_scanned": dict(causal=False, norm_position="post", loss="cwt", scan_layers=True,
                                  gelu_approximate=False),
    "bert_headless": dict(causal=False, norm_position="post", loss="cwt"),
    "neox_untied_quarter_parallel_scanned": dict(causal=True, loss="ce", head="untied", rotary_fraction=0.25,
                                                 parallel_residual=True, scan_layers=True, gelu_approximate=False),
    "neox_headless_full_sequential": dict(causal=True, loss="cwt", rotary_fraction=1.0, parallel_residual=False),
    "neox_tied_quarter_sequential": dict(causal=True, loss="ce", head="tied", rotary_fraction=0.25,
                                         parallel_residual=False),
    "neox_headless_full_parallel_scanned": dict(causal=True, loss="cwt", rotary_fraction=1.0, parallel_residual=True,
                                                scan_layers=True, gelu_approximate=False),
}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(read_book(book_names()[0])[:40_000])
    return Tokenizer(train_sentencepiece(parse_sources(f"text:{path}"), VOCAB, 0.0, 10**6), "test", VOCAB)


def tiny_config(causal: bool, loss: str, head: str = "tied", **model) -> ml_collections.ConfigDict:
    c = base_config()
    c.model.update(causal=causal, vocab_size=VOCAB, num_layers=2, d_model=32, num_heads=2, head_dim=16, mlp_dim=64,
                   max_len=L, positions="rotary" if causal else "learned", **model)
    c.objective.task = "clm" if causal else "mlm"
    c.data.seq_len = L
    return set_objective(c, loss, classical_head=head)


def random_run(workdir, config, tokenizer, seed: int = 0) -> None:
    """A run whose only checkpoint holds the fresh parameters plus noise (biases and norms away from 0 and 1)."""
    experiment = build_experiment(config)
    state = experiment.init_state()
    leaves, tree = jax.tree.flatten(state["params"])
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    noisy = [leaf + 0.1 * jax.random.normal(key, leaf.shape) for leaf, key in zip(leaves, keys)]
    state["params"] = jax.tree.unflatten(tree, noisy)
    write_run(workdir, config, state, tokenizer, {})


def tokens(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(7, VOCAB, (2, L), dtype=np.int32)


def our_outputs(workdir, tokens_BxL: np.ndarray) -> np.ndarray:
    """What the HF model must give: logits (o·Eᵀ for a headless decoder), or hidden states (headless encoder)."""
    pretrained = load_pretrained(str(workdir), Layout.from_config(base_config().mesh, jax.devices()[:1]))
    model, params, m = pretrained.model, pretrained.params, pretrained.config.model
    positions = np.broadcast_to(np.arange(L, dtype=np.int32), tokens_BxL.shape)
    h_BxLxD = model.apply({"params": params}, tokens_BxL, np.ones_like(tokens_BxL), positions)
    if m.head != "none":
        logits_NxV = model.apply({"params": params}, h_BxLxD.reshape(-1, m.d_model), method="logits")
        return np.asarray(logits_NxV).reshape(*tokens_BxL.shape, -1)
    if m.causal:
        return np.asarray(np.einsum("bld,vd->blv", h_BxLxD, embedding_matrix(params)))
    return np.asarray(h_BxLxD)


def hf_outputs(out, tokens_BxL: np.ndarray, config_json: dict | None = None) -> np.ndarray:
    config = transformers.AutoConfig.from_pretrained(out) if config_json is None else (
        transformers.AutoConfig.for_model(**config_json))
    architecture = getattr(transformers, config.architectures[0])
    model = architecture.from_pretrained(out, config=config, dtype=torch.float32).eval()
    with torch.no_grad():
        outputs = model(input_ids=torch.tensor(tokens_BxL, dtype=torch.long))
    return (outputs.logits if hasattr(outputs, "logits") else outputs.last_hidden_state).numpy()


@pytest.fixture(scope="module")
def exported(tokenizer, tmp_path_factory):
    """layout name → (run, export directory, config)."""
    runs = {}
    for name, keys in LAYOUTS.items():
        root = tmp_path_factory.mktemp(name)
        config = tiny_config(**keys)
        random_run(root / "run", config, tokenizer)
        export_run(str(root / "run"), str(root / "hf"))
        runs[name] = (root / "run", root / "hf", config)
    return runs


@pytest.mark.parametrize("name", LAYOUTS)
def test_transformers_computes_what_we_compute(exported, name):
    run, out, _ = exported[name]
    ours, theirs = our_outputs(run, tokens()), hf_outputs(out, tokens())
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=1e-5)
    assert np.abs(ours).max() > 0.1  # not a trivially small output


@pytest.mark.parametrize("name", LAYOUTS)
def test_export_import_export_is_bit_identical(exported, name, tmp_path):
    _, out, config = exported[name]
    flipped = ml_collections.ConfigDict(config.to_dict())
    flipped.model.scan_layers = not config.model.scan_layers  # the layer layout is ours, not the checkpoint's
    import_checkpoint(str(out), flipped, str(tmp_path / "imported"))
    export_run(str(tmp_path / "imported"), str(tmp_path / "again"))
    for file in (hf_dir.WEIGHTS, hf_dir.CONFIG, hf_dir.TOKENIZER, hf_dir.TOKENIZER_CONFIG):
        assert (tmp_path / "again" / file).read_bytes() == (out / file).read_bytes(), file
    # the imported run (layers scanned where the original's were not, or the reverse: float sums in another order)
    np.testing.assert_allclose(our_outputs(tmp_path / "imported", tokens()), our_outputs(exported[name][0], tokens()),
                               atol=1e-5, rtol=1e-5)


def test_the_exported_activation_is_the_models_and_the_other_one_differs(exported):
    """The test the tanh/erf GELU mismatch would have failed: the exported hidden_act is the model's own form, and
    with the other form transformers computes other logits."""
    for name, (run, out, config) in exported.items():
        written = json.loads((out / hf_dir.CONFIG).read_text())
        assert written["hidden_act"] == ("gelu_new" if config.model.gelu_approximate else "gelu"), name
    run, out, _ = exported["neox_headless_full_sequential"]  # tanh GELU
    wrong = {**json.loads((out / hf_dir.CONFIG).read_text()), "hidden_act": "gelu"}
    difference = np.abs(hf_outputs(out, tokens(), wrong) - our_outputs(run, tokens())).max()
    assert difference > 1e-4


def test_the_exported_tokenizer_gives_sentencepieces_ids(exported, tokenizer):
    lines = [line for line in read_book(book_names()[2])[:300_000].splitlines() if line.strip()][:3000]
    lines += ["[MASK] a [CLS] b[SEP]c", "naïve façade — 中文字符 😀 Łódź", "  two  spaces\tand a tab", "", "\n\n"]
    _, out, _ = exported["bert_mlm_tied"]
    fast = transformers.AutoTokenizer.from_pretrained(out)
    assert isinstance(fast, transformers.PreTrainedTokenizerFast)
    theirs = fast(lines, add_special_tokens=False)["input_ids"]
    mismatched = [line for line, ids in zip(lines, theirs) if ids != tokenizer.encode(line)]
    assert not mismatched, mismatched[:3]
    assert any(i >= 7 and tokenizer.processor.is_byte(i) for line in lines for i in tokenizer.encode(line))
    assert (fast.mask_token_id, fast.cls_token_id, fast.sep_token_id, fast.pad_token_id) == (
        tokenizer.mask_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    # an encoder's tokenizer wraps texts as our fine-tuning does: [CLS] a [SEP] b [SEP]
    pair = fast("first text", "second")["input_ids"]
    assert pair == [tokenizer.cls_id, *tokenizer.encode("first text"), tokenizer.sep_id,
                    *tokenizer.encode("second"), tokenizer.sep_id]
    decoder_fast = transformers.AutoTokenizer.from_pretrained(exported["neox_headless_full_sequential"][1])
    assert decoder_fast("first text")["input_ids"] == tokenizer.encode("first text")  # a decoder's adds nothing


def test_another_architecture_is_refused(tmp_path):
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2))
    gpt2.save_pretrained(tmp_path / "gpt2")
    config = tiny_config(causal=True, loss="ce", head="untied")
    with pytest.raises(InteropError, match="GPT2LMHeadModel.*reads BertForMaskedLM, BertModel, GPTNeoXForCausalLM"):
        import_checkpoint(str(tmp_path / "gpt2"), config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_vocabulary_or_shape_mismatch_is_refused_with_the_flags_that_fix_it(exported, tmp_path):
    _, out, config = exported["neox_untied_quarter_parallel_scanned"]
    other = ml_collections.ConfigDict(config.to_dict())
    other.model.update(vocab_size=512, parallel_residual=False)
    with pytest.raises(InteropError, match=r"--config\.model\.vocab_size=384 --config\.model\.parallel_residual=True"):
        import_checkpoint(str(out), other, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_classical_config_cannot_import_a_model_without_head(exported, tmp_path):
    _, out, config = exported["bert_headless"]
    classical = set_objective(ml_collections.ConfigDict(config.to_dict()), "ce", classical_head="tied")
    with pytest.raises(InteropError, match="BertModel, which has no MLM head.*model.head=none"):
        import_checkpoint(str(out), classical, str(tmp_path / "run"))


def test_a_missing_tokenizer_is_refused(exported, tmp_path):
    _, out, config = exported["bert_mlm_tied"]
    copy = tmp_path / "hf"
    copy.mkdir()
    for file in (hf_dir.WEIGHTS, hf_dir.CONFIG):
        (copy / file).write_bytes((out / file).read_bytes())
    with pytest.raises(InteropError, match="no tokenizer.json"):
        import_checkpoint(str(copy), config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_headless_import_of_a_masked_lm_drops_its_head(exported, tmp_path):
    run, out, config = exported["bert_mlm_tied"]
    headless = set_objective(ml_collections.ConfigDict(config.to_dict()), "cwt", classical_head="tied")
    imported = import_checkpoint(str(out), headless, str(tmp_path / "run"))
    assert any("dropped the checkpoint's MLM head" in note for note in imported.notes)
    pretrained = load_pretrained(str(tmp_path / "run"), Layout.from_config(base_config().mesh, jax.devices()[:1]))
    original = load_pretrained(str(run), Layout.from_config(base_config().mesh, jax.devices()[:1]))
    assert "head" not in pretrained.params
    jax.tree.map(np.testing.assert_array_equal, pretrained.params["body"], original.params["body"])


def test_a_routed_model_is_refused_before_anything_is_written(tokenizer, tmp_path):
    config = tiny_config(causal=True, loss="cwt")
    config.model.routing.update(kind="skip", layers="all")
    random_run(tmp_path / "run", config, tokenizer)
    result = subprocess.run([sys.executable, "-m", "headless_jax.export", f"--run={tmp_path / 'run'}",
                             f"--out={tmp_path / 'hf'}"], capture_output=True, text=True,
                            env=ENV, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    assert "routed layers (model.routing.kind=skip)" in last
    assert not (tmp_path / "hf").exists() and not (tmp_path / "hf.partial").exists()


def test_a_bfloat16_checkpoint_imports_as_its_values(exported, tmp_path):
    """Most hub checkpoints are saved in bfloat16, which safetensors' NumPy loader cannot read."""
    run, out, config = exported["neox_untied_quarter_parallel_scanned"]
    model = transformers.GPTNeoXForCausalLM.from_pretrained(out).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    for file in (hf_dir.TOKENIZER, hf_dir.TOKENIZER_CONFIG):
        (tmp_path / "bf16" / file).write_bytes((out / file).read_bytes())
    import_checkpoint(str(tmp_path / "bf16"), config, str(tmp_path / "run"))
    layout = Layout.from_config(base_config().mesh, jax.devices()[:1])
    imported, original = (load_pretrained(str(r), layout).params for r in (tmp_path / "run", run))
    rounded = jax.tree.map(lambda x: np.asarray(x).astype(jax.numpy.bfloat16).astype(np.float32), original)
    jax.tree.map(np.testing.assert_array_equal, imported, rounded)
