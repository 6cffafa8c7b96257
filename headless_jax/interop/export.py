"""A pretraining run → a Hugging Face directory that `transformers` loads with `from_pretrained`."""
import dataclasses

import jax
import numpy as np
import tokenizers
from etils import epath
from flax import traverse_util

from headless_jax.config import base_config, saved_config
from headless_jax.data.hf_tokenizer import HFTokenizer
from headless_jax.data.tokenizer import Tokenizer
from headless_jax.data.tokenizer_base import SPECIAL_ROLES, BaseTokenizer
from headless_jax.experiment import PretrainedError, load_pretrained
from headless_jax.interop import hf_dir
from headless_jax.interop.hf import check_exportable, export_tensors
from headless_jax.interop.sentencepiece_json import sentencepiece_to_json, tokenizer_config
from headless_jax.model import BODY, HEAD
from headless_jax.train.checkpoint import Checkpointer, orbax_directory
from headless_jax.train.layout import Layout


@dataclasses.dataclass(frozen=True)
class Exported:
    out: str
    architecture: str
    step: int
    hidden_act: str
    tensors: int


def export_run(run: str, out: str, step: int = 0) -> Exported:
    """Writes checkpoint `step` (0: the latest) of the run in `run` to `out`. Everything that can refuse (the
    model's layout, the output directory) is checked before the parameters are read."""
    hf_dir.check_writable(out)
    check_exportable(_run_config(run, step).model)
    pretrained = load_pretrained(run, Layout.from_config(base_config().mesh), step)
    config, tokenizer = pretrained.config, pretrained.tokenizer
    params = {key: value for key, value in pretrained.params.items() if key in (BODY, HEAD)}
    flat = {path: np.asarray(jax.device_get(array)) for path, array in traverse_util.flatten_dict(params).items()}
    roles = special_roles(tokenizer)
    hf_config, tensors = export_tensors(config.model, flat, roles, config.data.seq_len)
    tokenizer_json = tokenizer_file(tokenizer, encoder=not config.model.causal)
    written = tokenizers.Tokenizer.from_str(tokenizer_json)  # the special tokens' pieces as transformers reads them
    pieces = [written.id_to_token(token_id) for token_id in range(max(roles.values()) + 1)]
    hf_dir.write(out, hf_config, tensors, tokenizer_json, tokenizer_config(roles, pieces, config.data.seq_len))
    return Exported(str(out), hf_config["architectures"][0], pretrained.step, hf_config["hidden_act"], len(tensors))


def special_roles(tokenizer: BaseTokenizer) -> dict[str, int]:
    return {role: getattr(tokenizer, f"{role}_id") for role in SPECIAL_ROLES}


def tokenizer_file(tokenizer: BaseTokenizer, encoder: bool) -> str:
    """The run's tokenizer as tokenizer.json: a SentencePiece model converted, a Hugging Face one as it is."""
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.serialized
    if isinstance(tokenizer, Tokenizer):
        return sentencepiece_to_json(tokenizer.processor.serialized_model_proto(), special_roles(tokenizer), encoder)
    raise TypeError(f"no tokenizer.json for a {type(tokenizer).__name__}")


def _run_config(run: str, step: int):
    directory = orbax_directory(str(epath.Path(run) / "checkpoints"))
    if not directory.exists():
        raise PretrainedError(f"--run={run}: no checkpoints/ there; point --run at the --workdir of a pretraining run")
    checkpointer = Checkpointer(str(directory), read_only=True)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise PretrainedError(f"--run={run}: checkpoints/ holds no checkpoint yet; train longer")
        return saved_config(checkpointer.restored_config(step or steps[-1]))
    finally:
        checkpointer.close()
