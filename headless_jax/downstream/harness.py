"""lm-evaluation-harness on a run, in process: the `headless_jax` model class and the `harness` job.

`python -m headless_jax.evaluate --config=configs/harness.py --workdir=DIR --config.pretrained=RUN
--config.tasks=lambada_openai` runs harness tasks on a decoder and writes DIR/results.json; a local task file
(`--config.include_path=DIR_OF_YAML`) runs offline. The class scores with the run's own scorer (its head, or o·Eᵀ
for a headless decoder: headless_jax.downstream.lm_eval) on rows of one fixed shape [batch_size, seq_len] laid out
on the run's mesh, so that every request of every task reuses one compiled step:

- loglikelihood: (context + continuation) cut from the left to seq_len tokens; the continuation's log-probability
  and whether greedy decoding gives it;
- loglikelihood_rolling: the harness's own disjoint rolling windows of seq_len tokens;
- generate_until: greedy decoding, one token per step for all unfinished requests at once, until a stop string,
  eos or max_gen_toks.

A context starts with eos, as every document does in the pretraining stream (`context_eos`); lm-eval's HF backend
starts it with nothing (an empty one with bos), and `context_eos=False` scores as that backend does.
"""
import lm_eval
import ml_collections
import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.tasks import TaskManager
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from headless_jax.config import base_config

from headless_jax.downstream.lm_eval import model_scorer, score_rows
from headless_jax.downstream.lm_rows import Row
from headless_jax.downstream.results import write_json
from headless_jax.experiment import load_pretrained
from headless_jax.train.layout import Layout


@register_model("headless_jax")
class HeadlessJaxLM(TemplateLM):
    """A pretrained decoder of this codebase as an lm-eval model: `lm_eval.simple_evaluate(model=HeadlessJaxLM(
    pretrained=RUN), tasks=[...])`, or model="headless_jax" with model_args "pretrained=RUN,batch_size=32"."""

    def __init__(self, pretrained: str, pretrained_step: int = 0, batch_size: int = 32, seq_len: int = 0,
                 vocab_chunk: int = 4096, context_eos: bool = True, max_gen_toks: int = 256, mesh=None, **_):
        super().__init__()
        self.layout = Layout.from_config(mesh or base_config().mesh)
        self.pretrained = load_pretrained(pretrained, self.layout, int(pretrained_step), causal=True)
        self.seq_len = int(seq_len) or self.pretrained.config.data.seq_len
        self.pretrained.check_seq_len(self.seq_len)
        shards = self.layout.batch_shards
        self._batch = -(-int(batch_size) // shards) * shards
        self._scorer = model_scorer(self.pretrained, self.layout, int(vocab_chunk))
        self.context_eos, self.max_gen_toks = bool(context_eos), int(max_gen_toks)
        self.tokenizer = self.pretrained.tokenizer

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context is: eos (pretraining's document start), or bos as the HF backend has it."""
        return self.tokenizer.eos_id if self.context_eos else self.tokenizer.bos_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        rows = [self._row(self._context(context), continuation) for _, context, continuation in requests]
        return [(float(np.sum(logprob_S, dtype=np.float64)), bool(np.all(argmax_S == row.tokens[row.first + 1:])))
                for row, (logprob_S, argmax_S) in zip(rows, self._score(rows, "loglikelihood"))]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows = [[make_disjoint_window(window) for window in get_rolling_token_windows(
            self.tok_encode(request.args[0]), self.prefix_token_id, self.seq_len - 1, 1)] for request in requests]
        rows = [self._row(context, predicted) for request_windows in windows for context, predicted in request_windows]
        logprobs = iter([float(np.sum(logprob_S, dtype=np.float64)) for logprob_S, _ in self._score(rows, "rolling")])
        return [sum(next(logprobs) for _ in request_windows) for request_windows in windows]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        settings = [self._generation_settings(request.args[1]) for request in requests]
        contexts = [self._context(self.tok_encode(request.args[0])) for request in requests]
        generated: list[list[int]] = [[] for _ in requests]
        texts = ["" for _ in requests]
        running = [i for i, (_, max_tokens) in enumerate(settings) if max_tokens > 0]
        while running:
            # each row: its last seq_len - 1 tokens and a placeholder, whose prediction is the next token
            rows = [self._row((contexts[i] + generated[i])[-(self.seq_len - 1):], [0]) for i in running]
            still = []
            for i, (_, argmax_S) in zip(running, self._score(rows, "generate")):
                token = int(argmax_S[0])
                stops, max_tokens = settings[i]
                if token != self.eot_token_id:
                    generated[i].append(token)
                texts[i] = self.tok_decode(generated[i])
                stopped = [texts[i].index(stop) for stop in stops if stop in texts[i]]
                if stopped:
                    texts[i] = texts[i][:min(stopped)]
                elif token != self.eot_token_id and len(generated[i]) < max_tokens:
                    still.append(i)
            running = still
        return texts

    def _context(self, context: list[int]) -> list[int]:
        starts_with_eos = context[:1] == [self.eot_token_id]  # an empty context is [eos] already
        return [self.eot_token_id, *context] if self.context_eos and not starts_with_eos else context

    def _row(self, context: list[int], continuation: list[int]) -> Row:
        if not 0 < len(continuation) < self.seq_len:
            raise ValueError(f"a continuation of {len(continuation)} tokens cannot be scored in windows of "
                             f"seq_len={self.seq_len}; raise --config.seq_len (up to the model's) or shorten it")
        tokens = (context + continuation)[-self.seq_len:]
        return Row(tokens, len(tokens) - len(continuation) - 1, len(tokens) - 1)

    def _score(self, rows: list[Row], desc: str):
        return score_rows(self._scorer, rows, self.seq_len, self._batch, desc)

    def _generation_settings(self, kwargs: dict) -> tuple[list[str], int]:
        kwargs = dict(kwargs or {})
        if kwargs.get("do_sample"):
            raise ValueError("generate_until: headless_jax decodes greedily; the task asks for sampling "
                             "(do_sample=True)")
        until = kwargs.get("until") or []
        return ([until] if isinstance(until, str) else list(until)), int(kwargs.get("max_gen_toks", self.max_gen_toks))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The evaluate entry point for kind='harness': the configured harness tasks on config.pretrained."""
    if not config.tasks:
        raise ValueError("config.tasks is empty; name harness tasks, e.g. --config.tasks=lambada_openai")
    model = HeadlessJaxLM(config.pretrained, config.pretrained_step, config.batch_size, config.seq_len,
                          config.vocab_chunk, config.context_eos, config.max_gen_toks, config.mesh)
    task_manager = TaskManager(include_path=config.include_path or None)
    evaluated = lm_eval.simple_evaluate(model=model, tasks=config.tasks.split(","), task_manager=task_manager,
                                        num_fewshot=config.num_fewshot if config.num_fewshot >= 0 else None,
                                        limit=config.limit or None, log_samples=False, bootstrap_iters=0,
                                        random_seed=config.seed, numpy_random_seed=config.seed,
                                        torch_random_seed=config.seed, fewshot_random_seed=config.seed)
    results = {"pretrained": config.pretrained, "step": model.pretrained.step, "seq_len": model.seq_len,
               "context_eos": model.context_eos, "tasks": evaluated["results"]}
    write_json(workdir, results)
    return results
