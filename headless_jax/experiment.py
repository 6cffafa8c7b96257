"""The composition root: the one place that assembles an experiment from its config.

    config ─validate─▶ Layout (mesh + axis rules)
                       LanguageModel            ─▶ abstract state and its shardings ─▶ initial / restored state
                       objective (task × loss)  ─▶ jitted train step and eval step
                       optimiser + schedule

The training loop, the benchmark, the memory check, `train.init_from`, the downstream jobs and the tests
take their pieces from an `Experiment`; none of them wires model, objective, optimiser and mesh again.
`load_pretrained` rebuilds the experiment of a saved run onto another layout and restores its parameters.
"""
import dataclasses
import functools
import logging
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from etils import epath

from headless_jax.config import saved_config
from headless_jax.data.errors import MissingDataError
from headless_jax.data.tokenizer import BaseTokenizer
from headless_jax.data.tokenizer import load_run_tokenizer, tokenizer_from_file
from headless_jax.model import LanguageModel
from headless_jax.objectives import (ObjectiveFn, SpecialTokens, build_objective, build_rows_read, final_task,
                                     trained_tasks)
from headless_jax.train.checkpoint import Checkpointer, DamagedCheckpoint, orbax_directory
from headless_jax.train.init_from import InitFromError, start_params
from headless_jax.train.layout import Layout
from headless_jax.train.optim import train_optimizer
from headless_jax.train.step import TrainState, build_eval_step, build_train_step
from headless_jax.validate import validate_config


def special_tokens(tokenizer) -> SpecialTokens:
    """What the objectives need of a tokenizer: the id they mask with, and the ids never masked or sampled."""
    return SpecialTokens(mask_id=tokenizer.mask_id, special_ids=tuple(tokenizer.special_ids))


def dummy_batch(seq_len: int) -> dict:
    """A [1, seq_len] batch: the shapes a model is initialised with."""
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    return {"tokens": tokens, "segment_ids": jnp.ones_like(tokens), "positions": jnp.arange(seq_len)[None]}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A model, its objective and optimiser on a layout: state shapes, state creation and the jitted steps.

    Models are called as model(tokens, segment_ids, positions, deterministic); the state is a TrainState
    dict. Trace (call) the steps inside `layout.active()`."""
    layout: Layout
    model: nn.Module
    objective: ObjectiveFn
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    seq_len: int
    microbatches: int = 1
    seed: int = 0
    config: ml_collections.ConfigDict | None = None  # a pretraining config (None for fine-tuning experiments)
    rows_read: Callable | None = None  # optim.embedding_update=sparse: the rows of E a step reads (build_rows_read)
    # task → (objective, rows_read) of each task the run trains: two for a biphasic CLM → MLM run, whose phases
    # share model, optimiser and state; `objective` and `rows_read` are those of the final task
    task_objectives: dict[str, tuple[ObjectiveFn, Callable | None]] | None = None

    def state_fn(self, params_fn: Callable[..., dict]) -> Callable[..., TrainState]:
        """jit of `(*args, rng) → state` with params = params_fn(*args, rng) (logical-axis boxes allowed), fresh
        optimiser moments and step 0, laid out by `state_shardings`. Call it inside `layout.active()`."""
        def make_state(*args):
            params = nn.unbox(params_fn(*args))
            return {"params": params, "opt_state": self.optimizer.init(params), "step": jnp.zeros((), jnp.int32),
                    "rng": args[-1]}
        return jax.jit(make_state, out_shardings=self.state_shardings)

    def init_params(self, rng: jax.Array) -> dict:
        batch = dummy_batch(self.seq_len)
        return self.model.init(rng, batch["tokens"], batch["segment_ids"], batch["positions"])["params"]

    @functools.cached_property
    def _boxed_state(self) -> TrainState:
        """The state's shapes with the parameters' (and moments') logical-axis boxes, allocating nothing."""
        def boxed(rng):
            params = self.init_params(rng)
            return {"params": params, "opt_state": self.optimizer.init(params), "step": jnp.zeros((), jnp.int32),
                    "rng": rng}
        return jax.eval_shape(boxed, jax.random.PRNGKey(0))

    @functools.cached_property
    def state_shardings(self) -> TrainState:
        return self.layout.shardings(self._boxed_state)

    @functools.cached_property
    def abstract_state(self) -> TrainState:
        """ShapeDtypeStructs of the state with their shardings: what a checkpoint restores onto."""
        shapes = jax.tree.map(lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
                              self._boxed_state, is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))
        return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
                            self.state_shardings)

    def init_state(self) -> TrainState:
        """The initial state, created in its sharded layout (no full copy on any host); with a config's
        train.init_from, its parameters start from that run's."""
        with self.layout.active():
            state = self.state_fn(self.init_params)(jax.random.PRNGKey(self.seed))
        if self.config is not None and self.config.train.init_from:
            state["params"] = self._init_from(state["params"])
        return state

    def _init_from(self, params: dict) -> dict:
        config = self.config
        try:
            # an encoder may start from a decoder (MLM adaptation of a CLM run): the parameters decide what fits
            source = load_pretrained(config.train.init_from, self.layout, tokenizer_model=config.data.tokenizer_model)
        except PretrainedError as error:
            raise InitFromError(f"train.init_from: {error}") from None
        return jax.device_put(start_params(config, params, source.config, source.params),
                              self.state_shardings["params"])

    def with_tokenizer(self, tokenizer) -> "Experiment":
        """This (pretraining) experiment with the objectives of `tokenizer`: its special ids (masking), the UTF-8
        bytes of its tokens (bits per byte) and the tokens that begin a word (whole-word span masking)."""
        vocab_size = self.config.model.vocab_size
        return self._with_objectives(pretraining_objectives(
            self.config, self.model, special_tokens(tokenizer), self.rows_read is not None,
            tokenizer.token_bytes(vocab_size), tokenizer.word_starts(vocab_size)))

    def _with_objectives(self, task_objectives: dict) -> "Experiment":
        objective, rows_read = task_objectives[final_task(self.config)]
        return dataclasses.replace(self, objective=objective, rows_read=rows_read, task_objectives=task_objectives)

    @functools.cached_property
    def _phases(self) -> dict[str, "Experiment"]:
        return {task: self if objective is self.objective else
                dataclasses.replace(self, objective=objective, rows_read=rows_read)
                for task, (objective, rows_read) in (self.task_objectives or {}).items()}

    def for_task(self, task: str) -> "Experiment":
        """This experiment training `task` (mlm | clm): itself, or a biphasic run's other phase (its own jitted
        steps on the same state)."""
        return self._phases.get(task, self)

    @functools.cached_property
    def train_step(self) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
        return build_train_step(self.objective, self.optimizer, self.schedule, self.state_shardings, self.layout,
                                self.microbatches, self.rows_read)

    @functools.cached_property
    def eval_step(self) -> Callable[[dict, dict], dict]:
        return build_eval_step(self.objective, self.state_shardings, self.layout, self.seed)


def build_experiment(config: ml_collections.ConfigDict, devices=None, layout: Layout | None = None,
                     optimizer: optax.GradientTransformation | None = None) -> Experiment:
    """The experiment of a pretraining config, on a mesh over `devices` (default: all) as config.mesh says.

    The whole config is validated first. Its objective masks with the default special ids (those of the
    SentencePiece tokenizers trained here); `with_tokenizer` gives it another tokenizer's. layout: another mesh
    to build on (a saved run restored elsewhere; the
    config's mesh and batch are then not checked). optimizer: replaces the config's (its schedule stays).
    """
    if layout is None:
        devices = jax.devices() if devices is None else devices
        validate_config(config, len(devices), jax.process_count())
        layout = Layout.from_config(config.mesh, devices)
    else:
        validate_config(config, None)
    model = LanguageModel(ml_collections.FrozenConfigDict(config.model))
    configured_optimizer, schedule = train_optimizer(config)
    sparse = optimizer is None and config.optim.embedding_update == "sparse"
    task_objectives = pretraining_objectives(config, model, SpecialTokens(), sparse)
    objective, rows_read = task_objectives[final_task(config)]
    return Experiment(layout, model, objective, optimizer or configured_optimizer, schedule, config.data.seq_len,
                      config.train.microbatches, config.seed, config, rows_read, task_objectives)


def pretraining_objectives(config: ml_collections.ConfigDict, model: nn.Module, special: SpecialTokens, sparse: bool,
                           token_bytes_V=None, word_starts_V=None) -> dict[str, tuple[ObjectiveFn, Callable | None]]:
    """task → (objective, rows_read or None) for each task the config trains."""
    return {task: (build_objective(config, model, special, token_bytes_V, word_starts_V, task),
                   build_rows_read(config, special, task, word_starts_V) if sparse else None)
            for task in trained_tasks(config)}


class PretrainedError(ValueError):
    """A saved run that cannot serve the job that asked for it; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A pretraining run loaded from its workdir: its config, its experiment on this layout, parameters (laid out
    by that layout) and tokenizer."""
    config: ml_collections.ConfigDict  # the run's full experiment config
    experiment: Experiment
    params: dict
    tokenizer: BaseTokenizer
    step: int

    @property
    def model(self) -> nn.Module:
        return self.experiment.model

    @property
    def param_shardings(self) -> dict:
        return self.experiment.state_shardings["params"]

    def check_seq_len(self, seq_len: int) -> None:
        """A downstream window must fit the run's learned position table (rotary positions have none)."""
        m = self.config.model
        if m.positions == "learned" and seq_len > m.max_len:
            raise PretrainedError(f"seq_len={seq_len} exceeds the pretrained model's learned position table "
                                  f"(model.max_len={m.max_len}); set --config.seq_len={m.max_len} or less")


def load_pretrained(workdir: str, layout: Layout, step: int = 0, tokenizer_model: str = "",
                    causal: bool | None = None, token_scores: bool = False) -> Pretrained:
    """Restores the parameters of checkpoint `step` (0: latest) of the run in `workdir` onto `layout`.

    causal: True/False demands a decoder/encoder (a clear error otherwise); None accepts both.
    token_scores: demands a model that scores tokens (not an ELECTRA discriminator), refused before restoring.
    tokenizer_model: a SentencePiece file that must be the run's own tokenizer (checked), or empty for the run's.
    """
    workdir = epath.Path(workdir)
    directory = orbax_directory(str(workdir / "checkpoints"))
    if not directory.exists():
        raise PretrainedError(f"pretrained={workdir}: no checkpoints/ there; point --config.pretrained at the "
                              "--workdir of a pretraining run (python -m headless_jax.main)")
    checkpointer = Checkpointer(str(directory), read_only=True)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise PretrainedError(f"pretrained={workdir}: checkpoints/ holds no checkpoint yet; train longer")
        if step and step not in steps:
            raise PretrainedError(f"pretrained_step={step}: {directory} holds steps {steps}; pick one, or 0 for the "
                                  "latest")
        damaged = []
        for candidate in [step] if step else sorted(steps, reverse=True):
            try:
                return _restore_pretrained(checkpointer, candidate, workdir, layout, tokenizer_model, causal,
                                           token_scores)
            except DamagedCheckpoint as error:
                if not step:
                    logging.warning("pretrained=%s: %s; trying an older one", workdir, error)
                damaged.append(str(error))
        intact = "pick an intact --config.pretrained_step, or 0 for the newest intact one" if step else (
            "resume its training (it sets damaged checkpoints aside) or restore them from a backup")
        raise PretrainedError(f"pretrained={workdir}: {'; '.join(damaged)}. No intact checkpoint to use: {intact}")
    finally:
        checkpointer.close()


def _restore_pretrained(checkpointer: Checkpointer, step: int, workdir: epath.Path, layout: Layout,
                        tokenizer_model: str, causal: bool | None, token_scores: bool) -> Pretrained:
    config = saved_config(checkpointer.restored_config(step))
    _check_kind(config, causal, workdir)
    if token_scores and config.objective.task == "electra":
        raise PretrainedError(f"pretrained={workdir} is an ELECTRA discriminator: it has no token scores of its own "
                              "(its generator is dropped) to evaluate; score it downstream (configs/books.py) instead")
    tokenizer = _run_tokenizer(workdir, config.model.vocab_size, tokenizer_model)
    experiment = build_experiment(config, layout=layout).with_tokenizer(tokenizer)
    with layout.active():
        state = checkpointer.restore_state(step, experiment.abstract_state)  # the saved moments too
    return Pretrained(config, experiment, state["params"], tokenizer, step)


def _check_kind(config: ml_collections.ConfigDict, causal: bool | None, workdir: epath.Path) -> None:
    if causal is None or bool(config.model.causal) == causal:
        return
    kinds = {True: "a decoder (model.causal=True)", False: "an encoder (model.causal=False)"}
    raise PretrainedError(f"pretrained={workdir} is {kinds[bool(config.model.causal)]} but this job needs "
                          f"{kinds[causal]}; point --config.pretrained at such a run")


def _run_tokenizer(workdir: epath.Path, vocab_size: int, tokenizer_model: str) -> BaseTokenizer:
    try:
        run_tokenizer = load_run_tokenizer(workdir, vocab_size)
    except MissingDataError as error:
        raise PretrainedError(f"pretrained={workdir}: {error}") from None
    if not tokenizer_model:
        return run_tokenizer
    given = tokenizer_from_file(tokenizer_model, vocab_size)
    if given.fingerprint != run_tokenizer.fingerprint:
        raise PretrainedError(f"tokenizer_model={tokenizer_model} is not the tokenizer {workdir} was pretrained "
                              "with; leave --config.tokenizer_model empty to use the run's own")
    return given
