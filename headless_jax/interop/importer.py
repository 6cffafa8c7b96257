"""A Hugging Face directory → a run (a workdir with a step-0 checkpoint and the tokenizer) that
`--config.train.init_from`, the downstream jobs and `headless_jax.export` accept.

The experiment config says what model the checkpoint must be: every model key the checkpoint implies is checked
against it before any weight is read, and the mismatches are named with the flags that fix them. The run is
written to `<workdir>.partial` and renamed into place once complete.
"""
import dataclasses
import json

import jax
import ml_collections
from etils import epath
from flax import traverse_util

from headless_jax.data.hf_tokenizer import HFTokenizer
from headless_jax.data.tokenizer_base import RUN_HF_TOKENIZER_FILE, BaseTokenizer
from headless_jax.experiment import build_experiment
from headless_jax.interop import hf_dir
from headless_jax.interop.errors import InteropError
from headless_jax.interop.hf import check_exportable, configured_differences, import_params
from headless_jax.train.checkpoint import IMPORTED, Checkpointer


@dataclasses.dataclass(frozen=True)
class Imported:
    workdir: str
    architecture: str
    notes: list[str]


def import_checkpoint(hf_path: str, config: ml_collections.ConfigDict, workdir: str) -> Imported:
    """Writes the checkpoint in `hf_path` as a run of `config` in `workdir` (new or empty)."""
    workdir = epath.Path(workdir)
    if workdir.exists() and any(workdir.iterdir()):
        raise InteropError(f"--workdir={workdir} exists and is not empty; give a new directory (an import never "
                           "writes over a run)")
    hf_config = hf_dir.read_config(hf_path)
    differences = configured_differences(hf_config, config.model)
    if differences:
        raise InteropError(f"the checkpoint in {hf_path} is not the model this config describes; set "
                           f"{' '.join(differences)} (or pick a config of its shape)")
    check_exportable(config.model)  # what has no HF layout cannot have come from one (routing, SwiGLU, …)
    tokenizer = HFTokenizer(hf_dir.read_tokenizer(hf_path), f"{hf_path}/{hf_dir.TOKENIZER}", config.model.vocab_size)
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.tokenizer_model = str(workdir / RUN_HF_TOKENIZER_FILE)
    config.train.init_from = ""
    experiment = build_experiment(config)
    shapes = {path: tuple(leaf.shape)
              for path, leaf in traverse_util.flatten_dict(experiment.abstract_state["params"]).items()}
    flat, notes = import_params(hf_config, hf_dir.read_tensors(hf_path), config.model, shapes)
    unfilled = sorted("/".join(path) for path in shapes.keys() - flat.keys())
    state = experiment.init_state()
    params = {**traverse_util.flatten_dict(state["params"]), **flat}
    if unfilled:  # a fresh part the checkpoint cannot have (pretraining-only parts of this config)
        notes.append(f"started fresh: {', '.join(unfilled[:4])}{', …' if len(unfilled) > 4 else ''}")
    state["params"] = jax.device_put(traverse_util.unflatten_dict(params), experiment.state_shardings["params"])
    write_run(workdir, config, state, tokenizer, {IMPORTED: str(hf_path)})
    return Imported(str(workdir), hf_config["architectures"][0], notes)


def write_run(workdir: epath.PathLike, config: ml_collections.ConfigDict, state: dict, tokenizer: BaseTokenizer,
              progress: dict) -> None:
    """A run of `config` in the new `workdir` whose only checkpoint is `state` at step 0, saved with no data-iterator
    state (progress[IMPORTED] says where it came from): written beside it, then renamed into place."""
    workdir = epath.Path(workdir)
    partial = hf_dir.staging(workdir)
    tokenizer.save_to_run(partial)
    checkpointer = Checkpointer(str(partial / "checkpoints"))
    checkpointer.save(0, state, None, json.loads(config.to_json_best_effort()), progress, force=True)
    checkpointer.close()
    hf_dir.publish(partial, workdir)
