"""The recipes of the MLM literature (docs/objectives.md): span masking, MEAP, prefix LM, biphasic CLM → MLM and MLM
adaptation of a CLM run; each against a brute-force reference or the run it must equal."""
import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from headless_jax.config import base_config
from headless_jax.downstream import mlm_eval
from headless_jax.experiment import build_experiment
from headless_jax.loop import train
from headless_jax.model import embedding_matrix
from headless_jax.model.attention import attention_mask, dot_product_attention
from headless_jax.objectives import SpanMasking, SpecialTokens, build_objective, cwt_loss, mask_tokens, num_masked
from headless_jax.objectives.masking import span_lengths
from headless_jax.objectives.tasks import task_inputs
from headless_jax.validate import ConfigError, validate_config
from lm_helpers import book_text, shrink
from main_runs import assert_same_params, final_params, train_losses
from test_configs import load_config
from test_model import numpy_attention
from train_helpers import SEQ_LEN, random_batches, run_steps, tiny_config

SPECIAL = SpecialTokens()  # [MASK] = 4, special ids 0 … 6
VOCAB, ROWS, LENGTH = 100, 4000, 64
SPANS = SpanMasking(geometric_p=0.2, max_length=10)
masking = jax.jit(mask_tokens, static_argnums=(2, 3, 4, 5))


def truncated_geometric(p: float, max_length: int) -> np.ndarray:
    """float64 P(n), n = 1 … max_length, of a Geometric(p) conditioned on n ≤ max_length."""
    n = np.arange(1, max_length + 1)
    probabilities = p * (1 - p) ** (n - 1.0)
    return probabilities / probabilities.sum()


def random_rows(seed: int = 0, padded_rows: int = 100) -> np.ndarray:
    tokens = np.random.default_rng(seed).integers(7, VOCAB, (ROWS, LENGTH)).astype(np.int32)
    tokens[:padded_rows, LENGTH // 2:] = 0  # short documents: half the row is padding
    return tokens


def run_lengths(ids_BxL) -> np.ndarray:
    """Lengths of the runs of equal ids in each row that start at least max_length before the row's end: a span's
    length does not depend on where it starts, but the row's end cuts the spans that reach it."""
    lengths = []
    for row in ids_BxL:
        starts = np.concatenate([[0], np.flatnonzero(np.diff(row)) + 1])
        runs = np.diff(np.concatenate([starts, [len(row)]]))
        lengths.extend(runs[starts + SPANS.max_length <= len(row)])
    return np.array(lengths)


def test_span_lengths_follow_the_truncated_geometric():
    lengths = np.asarray(span_lengths(jax.random.key(0), (400_000,), SPANS))
    frequencies = np.bincount(lengths, minlength=11)[1:] / len(lengths)
    np.testing.assert_allclose(frequencies, truncated_geometric(0.2, 10), atol=3e-3)
    assert abs(lengths.mean() - 3.797) < 0.02  # SpanBERT's mean span length


def span_units(masked, tokens: np.ndarray, starts_V: np.ndarray | None) -> np.ndarray:
    """The span of every unit (word, or token without word starts) of each row: one id per unit."""
    spans = np.asarray(masked.span_ids_BxL)
    if starts_V is None:
        return spans
    special = np.isin(tokens, SPECIAL.special_ids)
    after_special = np.pad(special[:, :-1], ((0, 0), (1, 0)), constant_values=True)
    unit_starts = starts_V[tokens] | special | after_special
    return [row[start] for row, start in zip(spans, unit_starts)]


@pytest.mark.parametrize("whole_words", [False, True])
def test_span_masking_takes_whole_spans_of_geometric_length_then_cuts_one(whole_words):
    tokens = random_rows()
    starts_V = np.arange(VOCAB) < 50 if whole_words else None  # ids ≥ 50 continue a word
    masked = masking(jnp.asarray(tokens), jax.random.key(1), 0.30, SPECIAL, VOCAB, SPANS,
                     None if starts_V is None else jnp.asarray(starts_V))
    k = num_masked(LENGTH, 0.30)
    positions, valid = np.asarray(masked.positions_BxK), np.asarray(masked.valid_BxK)
    spans = np.asarray(masked.span_ids_BxL)
    eligible = ~np.isin(tokens, SPECIAL.special_ids)
    assert positions.shape == (ROWS, k)
    for b in range(ROWS):
        assert len(set(positions[b])) == k  # exactly k distinct positions: static under jit
        chosen = set(positions[b][valid[b]])
        assert chosen == set(positions[b]) if eligible[b].sum() >= k else chosen == set(np.flatnonzero(eligible[b]))
        partial = 0
        for span in set(spans[b, list(chosen)]):
            members = np.flatnonzero((spans[b] == span) & eligible[b])
            taken = [m in chosen for m in members]
            if not all(taken):  # the span cut by the budget: its first positions, left to right
                partial += 1
                assert taken == sorted(taken, reverse=True)
        assert partial <= 1
    if whole_words:  # a span boundary is always a word boundary
        special = ~eligible
        starts = starts_V[tokens] | special | np.pad(special[:, :-1], ((0, 0), (1, 0)), constant_values=True)
        boundary = np.diff(spans, axis=1) != 0
        assert starts[:, 1:][boundary].all()
    lengths = run_lengths(span_units(masked, tokens, starts_V))  # in words (or tokens)
    frequencies = np.bincount(lengths, minlength=11)[1:] / len(lengths)
    np.testing.assert_allclose(frequencies, truncated_geometric(0.2, 10), atol=0.01)


def test_span_masking_applies_the_80_10_10_rule_to_whole_spans():
    tokens = random_rows(seed=2, padded_rows=0)
    masked = masking(jnp.asarray(tokens), jax.random.key(3), 0.15, SPECIAL, VOCAB, SPANS, None)
    corrupted, spans = np.asarray(masked.tokens_BxL), np.asarray(masked.span_ids_BxL)
    positions = np.asarray(masked.positions_BxK)
    kinds = []
    for b in range(ROWS):
        for span in set(spans[b, positions[b]]):
            chosen = positions[b][spans[b, positions[b]] == span]
            is_mask = corrupted[b, chosen] == SPECIAL.mask_id
            assert is_mask.all() or not is_mask.any()  # one choice for the whole span
            kinds.append("mask" if is_mask.all() else
                         "kept" if (corrupted[b, chosen] == tokens[b, chosen]).all() else "random")
    shares = {kind: kinds.count(kind) / len(kinds) for kind in ("mask", "kept", "random")}
    assert abs(shares["mask"] - 0.8) < 0.02 and abs(shares["kept"] - 0.1) < 0.02 and abs(shares["random"] - 0.1) < 0.02


def test_span_masking_keeps_the_masking_rate_and_evaluates_at_its_own():
    config = tiny_config("mlm", "cwt")
    config.objective.update(masking="spans", mask_rate=0.30, eval_mask_rate=0.15)
    batch = jax.tree.map(jnp.asarray, random_batches(1, 16)[0])
    for deterministic, rate in ((False, 0.30), (True, 0.15)):
        inputs = task_inputs(config, SPECIAL, batch, jax.random.key(0), "mlm", deterministic)
        masked_per_row = (np.asarray(inputs.tokens_BxL) != np.asarray(batch["tokens"])).sum(1)
        k = num_masked(SEQ_LEN, rate)
        assert inputs.masked.positions_BxK.shape == (16, k) and (masked_per_row <= k).all()


# --- MEAP


def meap_config(rate: float):
    config = tiny_config("clm", "cwt")
    config.objective.meap_mask_rate = rate
    return config


def test_meap_masks_inputs_and_keeps_the_next_token_targets():
    config, batch = meap_config(0.25), jax.tree.map(jnp.asarray, random_batches(1, 16)[0])
    model = build_experiment(config).model
    params = nn.unbox(model.init(jax.random.key(0), batch["tokens"], batch["segment_ids"], batch["positions"]))["params"]
    rng = jax.random.key(5)
    inputs = np.asarray(task_inputs(config, SPECIAL, batch, rng, "clm").tokens_BxL)
    changed = inputs != np.asarray(batch["tokens"])
    assert (changed.sum(1) == num_masked(SEQ_LEN, 0.25)).all() and (inputs[changed] == SPECIAL.mask_id).all()
    # the reference: the decoder reads the masked inputs, CWT scores its outputs against the original next tokens
    h = model.apply({"params": params}, jnp.asarray(inputs), batch["segment_ids"], batch["positions"])
    targets = embedding_matrix(params)[batch["tokens"][:, 1:]]
    want = cwt_loss(h[:, :-1], targets, jnp.ones((16, SEQ_LEN - 1), bool), 2, 1.0, 0, 1024.0)
    loss, _ = build_objective(config, model, SPECIAL)(params, batch, rng, False)
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)
    plain, _ = build_objective(tiny_config("clm", "cwt"), model, SPECIAL)(params, batch, rng, False)
    assert abs(float(plain) - float(loss)) > 1e-4  # the masks change the loss


def test_meap_at_rate_zero_trains_exactly_as_clm():
    batches = random_batches(3, 16)
    losses, params, _ = run_steps(meap_config(0.0), batches)
    clm_losses, clm_params, _ = run_steps(tiny_config("clm", "cwt"), batches)
    np.testing.assert_array_equal(losses, clm_losses)
    jax.tree.map(np.testing.assert_array_equal, params, clm_params)


# --- prefix LM


def brute_force_mask(segments: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    b, length = segments.shape
    allowed = np.zeros((b, 1, length, length), bool)
    for r in range(b):
        for i in range(length):
            for j in range(length):
                same = segments[r, i] == segments[r, j] != 0
                allowed[r, 0, i, j] = same and (j <= i or (prefix[r, i] and prefix[r, j]))
    return allowed


def test_prefix_lm_attention_mask_and_outputs_match_brute_force():
    segments = np.array([[1, 1, 1, 1, 2, 2], [1, 1, 1, 1, 1, 0]])
    positions = np.array([[0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 4, 0]])
    prefix = positions < np.array([[2], [3]])  # each document's first N tokens
    mask = attention_mask(jnp.asarray(segments), True, prefix_BxL=jnp.asarray(prefix))
    np.testing.assert_array_equal(np.asarray(mask), brute_force_mask(segments, prefix))
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 6, 2, 4)) for i in range(3))
    out = dot_product_attention(q, k, v, jnp.asarray(segments), True, "xla", prefix_BxL=jnp.asarray(prefix))
    q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
    want = np.zeros_like(q64)
    allowed = brute_force_mask(segments, prefix)[:, 0]
    for r in range(2):
        for i in range(6):
            keys = np.flatnonzero(allowed[r, i])
            if len(keys):
                scores = np.einsum("hk,thk->ht", q64[r, i], k64[r, keys]) / 2.0
                weights = np.exp(scores - scores.max(1, keepdims=True))
                want[r, i] = np.einsum("ht,thk->hk", weights / weights.sum(1, keepdims=True), v64[r, keys])
    rows = segments != 0
    np.testing.assert_allclose(np.asarray(out)[rows], want[rows], rtol=1e-5, atol=1e-5)


def test_an_empty_prefix_is_exactly_causal():
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 6, 2, 4)) for i in range(3))
    segments = np.array([[1, 1, 1, 2, 2, 0], [1, 2, 2, 2, 3, 3]])
    for prefix in (np.zeros((2, 6), bool), np.eye(1, 6, dtype=bool).repeat(2, 0)):  # N = 0, and N = 1 (itself)
        with_prefix = dot_product_attention(q, k, v, jnp.asarray(segments), True, "xla", prefix_BxL=jnp.asarray(prefix))
        np.testing.assert_array_equal(np.asarray(with_prefix), np.asarray(dot_product_attention(
            q, k, v, jnp.asarray(segments), True, "xla")))
    np.testing.assert_allclose(numpy_attention(q, k, v, segments, True)[segments != 0],
                               np.asarray(with_prefix)[segments != 0], rtol=1e-5, atol=1e-5)


def test_prefix_lm_sees_its_whole_prefix_and_predicts_only_after_it():
    config = tiny_config("clm", "cwt")
    config.objective.prefix_length = 5
    experiment = build_experiment(config)
    batch = random_batches(1, 16)[0]
    with experiment.layout.active():
        params = experiment.init_state()["params"]
    _, metrics = experiment.objective(params, batch, jax.random.key(0), True)
    assert float(metrics["num_predictions"]) == 16 * (SEQ_LEN - 5)  # targets at positions 5 … L-1
    model = experiment.model

    def hidden(tokens):
        prefix = jnp.asarray(batch["positions"] < 5)
        return np.asarray(model.apply({"params": params}, jnp.asarray(tokens), batch["segment_ids"],
                                      batch["positions"], prefix_BxL=prefix))

    h = hidden(batch["tokens"])
    in_prefix, after = batch["tokens"].copy(), batch["tokens"].copy()
    in_prefix[:, 4] = in_prefix[:, 4] % 50 + 8  # another non-special token
    after[:, 5] = after[:, 5] % 50 + 8
    assert not np.allclose(hidden(in_prefix)[:, 0], h[:, 0], atol=1e-5)  # token 0 sees the prefix's last token
    np.testing.assert_allclose(hidden(after)[:, :5], h[:, :5], atol=1e-6)  # but nothing after the prefix


# --- biphasic CLM → MLM and MLM adaptation


def biphasic(fraction: float):
    config = tiny_config("mlm", "cwt")
    config.objective.update(task="clm_then_mlm", clm_fraction=fraction)
    return config


@pytest.mark.parametrize("fraction,twin", [(1.0, "clm"), (0.0, "mlm")])
def test_biphasic_at_the_ends_equals_clm_or_mlm_exactly(fraction, twin):
    batches = random_batches(3, 16)
    losses, params, _ = run_steps(biphasic(fraction), batches)
    twin_losses, twin_params, _ = run_steps(tiny_config(twin, "cwt"), batches)
    np.testing.assert_array_equal(losses, twin_losses)
    jax.tree.map(np.testing.assert_array_equal, params, twin_params)


def biphasic_run_config(text: str, loss: str = "cwt"):
    config = shrink(load_config("biphasic", f"{loss},demo"), text, steps=12)
    config.objective.clm_fraction = 0.5  # CLM for updates 1 … 6, MLM for 7 … 12
    config.train.update(checkpoint_every=4, log_every=1)
    return config


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return book_text(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def uninterrupted_biphasic(tmp_path_factory, text):
    workdir = tmp_path_factory.mktemp("biphasic")
    train(biphasic_run_config(text), str(workdir))
    return workdir


def test_a_biphasic_run_switches_from_clm_to_mlm(uninterrupted_biphasic):
    rows = [json.loads(line) for line in open(uninterrupted_biphasic / "metrics.jsonl")]
    predictions = {row["step"]: row["num_predictions"] for row in rows if row["split"] == "train"}
    mlm_budget = 8 * num_masked(32, 0.15)  # 8 rows × 5 masked positions
    assert all(predictions[step] > 2 * mlm_budget for step in range(1, 7))  # next-token targets: ~31 per row
    assert all(predictions[step] <= mlm_budget for step in range(7, 13))


@pytest.mark.parametrize("resume_from", [4, 8])  # before and after the switch at 6
def test_a_resumed_biphasic_run_equals_the_uninterrupted_one(uninterrupted_biphasic, text, tmp_path, resume_from):
    workdir = tmp_path / "run"
    shutil.copytree(uninterrupted_biphasic, workdir)
    for step in (8, 12):
        if step > resume_from:
            shutil.rmtree(workdir / "checkpoints" / str(step))  # as if the run had stopped after saving resume_from
    train(biphasic_run_config(text), str(workdir))
    assert_same_params(final_params(workdir, 12), final_params(uninterrupted_biphasic, 12))
    resumed, whole = train_losses(workdir), train_losses(uninterrupted_biphasic)
    np.testing.assert_allclose([resumed[s] for s in range(1, 13)], [whole[s] for s in range(1, 13)], rtol=1e-6)


def test_mlm_eval_scores_an_encoder_as_its_own_final_evaluation_did(uninterrupted_biphasic, tmp_path):
    """The reference scoring of a run whose last phase already was token MLM at 15 % repeats the run's own final
    held-out evaluation: same batches, same masking seed, same numbers."""
    config = load_config("mlm_eval", None)
    config.update(pretrained=str(uninterrupted_biphasic), batch_size=8, eval_batches=1)
    results = mlm_eval.run(config, str(tmp_path))
    rows = [json.loads(line) for line in open(uninterrupted_biphasic / "metrics.jsonl")]
    final = [row for row in rows if row["split"] == "eval"][-1]
    assert final["step"] == 12 and json.loads((tmp_path / "results.json").read_text()) == results
    for key in ("loss", "accuracy", "nll", "bits_per_byte", "num_predictions"):
        np.testing.assert_allclose(results["heldout"][key], final[key], rtol=1e-6)


def test_mlm_adaptation_starts_an_encoder_from_a_clm_run(tmp_path, text):
    decoder_run = tmp_path / "clm"
    train(shrink(load_config("clm_demo", None), text, steps=2), str(decoder_run))
    config = shrink(load_config("demo", None), text, steps=2)
    config.model.update(positions="rotary", rotary_fraction=0.25, parallel_residual=True)  # clm_demo's body
    config.train.init_from = str(decoder_run)
    params = build_experiment(config).init_state()["params"]
    source = traverse_util.flatten_dict(final_params(decoder_run, 2))
    start = traverse_util.flatten_dict(jax.device_get(params))
    assert start.keys() == source.keys()
    for path, value in source.items():
        np.testing.assert_array_equal(start[path], value)


# --- bad configurations


@pytest.mark.parametrize("change,message", [
    (lambda c: c.objective.update(masking="spans", span_max_length=200), r"objective.span_max_length=200: .* set it in 1 … 128"),
    (lambda c: c.objective.update(masking="spans", task="clm") or c.model.update(causal=True),
     "objective.masking='spans'"),
    (lambda c: c.objective.update(task="clm_then_mlm", clm_fraction=1.5), r"objective.clm_fraction=1.5 is out of range"),
    (lambda c: c.objective.update(task="clm_then_mlm", clm_fraction=-0.1), r"objective.clm_fraction=-0.1 is out"),
    (lambda c: c.objective.update(task="clm_then_mlm") or c.model.update(causal=True), "needs a bidirectional encoder"),
    (lambda c: c.objective.update(task="clm", prefix_length=128) or c.model.update(causal=True),
     r"objective.prefix_length=128 must be shorter than the sequence"),
    (lambda c: c.objective.update(prefix_length=4), r"objective.prefix_length=4 .* objective.task='mlm'"),
    (lambda c: c.objective.update(meap_mask_rate=0.15), r"objective.meap_mask_rate=0.15 .* objective.task='mlm'"),
    (lambda c: c.objective.update(task="clm", meap_mask_rate=1.0) or c.model.update(causal=True),
     r"objective.meap_mask_rate=1.0 is out of range"),
    (lambda c: c.objective.update(task="clm_then_mlm") or c.model.routing.update(kind="skip"),
     "model.routing.kind=none"),
    (lambda c: c.objective.update(task="clm", prefix_length=4) or c.model.update(causal=True, attention="splash"),
     "splash attention's masks are fixed"),
])
def test_recipe_config_errors_name_the_key_and_the_fix(change, message):
    config = base_config()
    config.train.global_batch_size = 16
    change(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, num_devices=8)
