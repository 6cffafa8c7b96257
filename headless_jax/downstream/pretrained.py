"""A pretraining run loaded from its workdir: its config, model, parameters (on this run's mesh) and tokenizer."""
import dataclasses

import flax.linen as nn
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from headless_jax.data.tokenizer import RUN_TOKENIZER_FILE, Tokenizer
from headless_jax.model import LanguageModel
from headless_jax.train.checkpoint import orbax_directory
from headless_jax.train.optim import train_optimizer
from headless_jax.train.state import abstract_state


class PretrainedError(ValueError):
    """A pretrained run that cannot serve the downstream job; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
    config: ml_collections.ConfigDict  # the pretraining run's full experiment config
    model: LanguageModel
    params: dict  # unboxed, laid out by the downstream mesh's shardings
    param_shardings: dict
    tokenizer: Tokenizer
    step: int

    def check_seq_len(self, seq_len: int) -> None:
        """A downstream window must fit the run's learned position table (rotary positions have none)."""
        m = self.config.model
        if m.positions == "learned" and seq_len > m.max_len:
            raise PretrainedError(f"seq_len={seq_len} exceeds the pretrained model's learned position table "
                                  f"(model.max_len={m.max_len}); set --config.seq_len={m.max_len} or less")


def load_pretrained(workdir: str, mesh: jax.sharding.Mesh, rules, step: int = 0, tokenizer_model: str = "",
                    causal: bool | None = None) -> Pretrained:
    """Restores the parameters of checkpoint `step` (0: latest) of the run in `workdir` onto `mesh`.

    causal: True/False demands a decoder/encoder (a clear error otherwise); None accepts both.
    tokenizer_model: a SentencePiece file that must be the run's own tokenizer (checked), or empty for the run's.
    """
    workdir = epath.Path(workdir)
    directory = orbax_directory(str(workdir / "checkpoints"))
    if not directory.exists():
        raise PretrainedError(f"pretrained={workdir}: no checkpoints/ there; point --config.pretrained at the "
                              "--workdir of a pretraining run (python -m headless_jax.main)")
    manager = ocp.CheckpointManager(directory, item_names=("state", "data", "config"))
    try:
        steps = manager.all_steps()
        if not steps:
            raise PretrainedError(f"pretrained={workdir}: checkpoints/ holds no checkpoint yet; train longer")
        step = step or max(steps)
        if step not in steps:
            raise PretrainedError(f"pretrained_step={step}: {directory} holds steps {sorted(steps)}; pick one, or "
                                  "0 for the latest")
        config = ml_collections.ConfigDict(
            manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])
        _check_kind(config, causal, workdir)
        tokenizer = _tokenizer(config, workdir, tokenizer_model)
        model = LanguageModel(ml_collections.FrozenConfigDict(config.model))
        optimizer = train_optimizer(config)  # the saved state holds its moments
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            abstract, shardings = abstract_state(model, optimizer, config.data.seq_len, mesh, rules)
            state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    finally:
        manager.close()
    return Pretrained(config, model, state["params"], shardings["params"], tokenizer, step)


def _check_kind(config: ml_collections.ConfigDict, causal: bool | None, workdir: epath.Path) -> None:
    if causal is None or bool(config.model.causal) == causal:
        return
    kinds = {True: "a decoder (model.causal=True)", False: "an encoder (model.causal=False)"}
    raise PretrainedError(f"pretrained={workdir} is {kinds[bool(config.model.causal)]} but this job needs "
                          f"{kinds[causal]}; point --config.pretrained at such a run")


def _tokenizer(config: ml_collections.ConfigDict, workdir: epath.Path, tokenizer_model: str) -> Tokenizer:
    saved = workdir / RUN_TOKENIZER_FILE
    vocab_size = config.model.vocab_size
    if not saved.exists():
        raise PretrainedError(f"pretrained={workdir}: no {RUN_TOKENIZER_FILE} (the pretraining run writes it); copy "
                              f"the run's SentencePiece model to {saved}")
    run_tokenizer = Tokenizer.from_file(saved, vocab_size)
    if not tokenizer_model:
        return run_tokenizer
    given = Tokenizer.from_file(tokenizer_model, vocab_size)
    if given.fingerprint != run_tokenizer.fingerprint:
        raise PretrainedError(f"tokenizer_model={tokenizer_model} is not the tokenizer {workdir} was pretrained "
                              f"with ({saved}); leave --config.tokenizer_model empty to use the run's own")
    return given

