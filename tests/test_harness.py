"""lm-evaluation-harness on a run: against our own last-word evaluation, and against the harness's HF backend on
the exported model (transformers' GPT-NeoX as the reference implementation)."""
import importlib.util
import json
import pathlib

import ml_collections
import pytest

from headless_jax.data import book_names, read_book
from headless_jax.interop.export import export_run

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

from headless_jax.downstream import harness, lm_eval as our_lm_eval  # noqa: E402

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
SEQ_LEN = 32  # the tiny run's (tests/main_runs.py)


def passages(count: int) -> list[str]:
    """One-line passages of the trained novel, half of them ending in " and" (which the briefly trained model
    predicts in some contexts), so that the accuracy is neither 0 nor 1."""
    words = read_book(book_names()[0])[:60_000].split()
    found, i = [], 12
    while len(found) < count and i < len(words):
        if (words[i] == "and") == (len(found) % 2 == 0):
            found.append(" ".join(words[i - 10:i + 1]))
            i += 11
        i += 1
    return found


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """The shipped local task file, reading a JSON Lines file of passages."""
    root = tmp_path_factory.mktemp("harness")
    (root / "last_word.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in passages(40)))
    task = (CONFIGS / "harness_tasks" / "last_word_local.yaml").read_text()
    (root / "tasks").mkdir()
    (root / "tasks" / "last_word_local.yaml").write_text(task.replace("test: last_word.jsonl",
                                                                      f"test: {root / 'last_word.jsonl'}"))
    return root


def shipped_config(name: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def harness_config(run, task_dir, **overrides) -> ml_collections.ConfigDict:
    config = shipped_config("harness")
    config.update(pretrained=str(run), tasks="last_word_local", include_path=str(task_dir / "tasks"), batch_size=8,
                  **overrides)
    return config


def test_the_harness_last_word_accuracy_is_evaluates(uninterrupted, task_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    config = shipped_config("lm_eval")
    config.pretrained = str(uninterrupted)
    config.perplexity.sources = ""
    config.last_word.update(sources=f"jsonl:{task_dir / 'last_word.jsonl'}", heldout=False, passages="documents")
    evaluated = our_lm_eval.run(config, str(tmp_path / "evaluate"))["last_word"]
    through_harness = harness.run(harness_config(uninterrupted, task_dir), str(tmp_path / "harness"))
    accuracy = through_harness["tasks"]["last_word_local"]["acc,none"]
    assert evaluated["passages"] == 40 and evaluated["skipped"] == 0
    assert 0 < evaluated["accuracy"] < 1
    assert accuracy == evaluated["accuracy"]


def instances(kind: str, arguments: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(arguments)]


@pytest.fixture(scope="module")
def both(uninterrupted, tmp_path_factory):
    """(our model class on the run, the harness's HF backend on its export), scoring the same way (no eos before
    contexts, windows of SEQ_LEN tokens: HF's max_length counts the inputs, one fewer)."""
    out = tmp_path_factory.mktemp("export") / "hf"
    export_run(str(uninterrupted), str(out))
    ours = harness.HeadlessJaxLM(str(uninterrupted), batch_size=8, context_eos=False)
    theirs = HFLM(pretrained=str(out), device="cpu", dtype="float32", batch_size=8, max_length=SEQ_LEN - 1)
    return ours, theirs


def test_loglikelihoods_equal_the_hf_backends_on_the_export(both):
    ours, theirs = both
    texts = passages(12)
    requests = [(" ".join(t.split()[:-1]), " " + t.split()[-1]) for t in texts] + [("", " ".join(texts[0].split()[:4])),
                                                                                 (texts[1], "!")]
    mine, hf = ours.loglikelihood(instances("loglikelihood", requests)), theirs.loglikelihood(
        instances("loglikelihood", requests))
    for (logprob, greedy), (hf_logprob, hf_greedy) in zip(mine, hf):
        assert logprob == pytest.approx(hf_logprob, abs=1e-4)
        assert greedy == hf_greedy
    long_text = " ".join(passages(20))  # several rolling windows
    rolling = [(long_text,), (texts[2],)]
    for logprob, hf_logprob in zip(ours.loglikelihood_rolling(instances("loglikelihood_rolling", rolling)),
                                   theirs.loglikelihood_rolling(instances("loglikelihood_rolling", rolling))):
        assert logprob == pytest.approx(hf_logprob, abs=1e-4)


def test_greedy_generation_equals_the_hf_backends_on_the_export(both):
    ours, theirs = both
    requests = [(text, {"until": ["\n\n"], "max_gen_toks": 6, "do_sample": False}) for text in passages(3)]
    mine = ours.generate_until(instances("generate_until", requests))
    assert mine == theirs.generate_until(instances("generate_until", requests))
    assert all(mine)
