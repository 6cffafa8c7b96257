"""`train.init_from`: start a run from another run's parameters, e.g. the LM-head phase of a headless decoder.

The other run's latest parameters are restored onto this run's mesh (headless_jax.experiment). A vocabulary
head it lacks starts as an exact copy of its input embedding matrix E (the paper's untied, bias-free head
initialised from E); other head parameters it lacks (an MLM transform, a bias) keep this run's fresh
initialisation; so do the pretraining-only parts (model.PRETRAINING_ONLY: an ELECTRA run from an MLM encoder, whose
MLM head it drops, or a BPDec decoder), which a run without them drops. The optimiser state is always fresh. The
init run's tokenizer is this run's tokenizer.
"""
import jax.numpy as jnp
import ml_collections
from etils import epath
from flax import traverse_util

from headless_jax.data.tokenizer import RUN_HF_TOKENIZER_FILE, RUN_TOKENIZER_FILE
from headless_jax.model import DECODER_PATH, HEAD, PRETRAINING_ONLY, embedding_matrix


class InitFromError(ValueError):
    """An init run whose parameters cannot start this run; the message names the fix."""


def resolve_tokenizer(config: ml_collections.ConfigDict) -> None:
    """With train.init_from and no data.tokenizer_model, this run uses the init run's own tokenizer."""
    if config.train.init_from and not config.data.tokenizer_model:
        run = epath.Path(config.train.init_from)
        hugging_face = (run / RUN_HF_TOKENIZER_FILE).exists() and not (run / RUN_TOKENIZER_FILE).exists()
        config.data.tokenizer_model = str(run / (RUN_HF_TOKENIZER_FILE if hugging_face else RUN_TOKENIZER_FILE))


def start_params(config: ml_collections.ConfigDict, fresh: dict, source_config: ml_collections.ConfigDict,
                 source: dict) -> dict:
    """This run's starting parameters: `source` (the init run's, of config `source_config`) where it has them.

    fresh: this run's freshly initialised parameters (their structure is the one required; head parameters
    the init run lacks are taken from here, except the decoder, which becomes a copy of E).
    """
    wanted, loaded = traverse_util.flatten_dict(fresh), traverse_util.flatten_dict(source)
    dropped = (*PRETRAINING_ONLY, HEAD) if config.model.electra_generator else PRETRAINING_ONLY  # ELECTRA: no MLM head
    unexpected = sorted(key for key in loaded.keys() - wanted.keys() if key[0] not in dropped)
    absent = sorted(key for key in wanted.keys() - loaded.keys() if key[0] not in (HEAD, *PRETRAINING_ONLY))
    reshaped = sorted(key for key in wanted.keys() & loaded.keys() if wanted[key].shape != loaded[key].shape)
    if unexpected or absent or reshaped:
        problems = [f"{'/'.join(key)} {what}" for keys, what in
                    ((reshaped, "has another shape"), (absent, "is missing"), (unexpected, "is not in this model"))
                    for key in keys[:3]]
        raise InitFromError(f"train.init_from={config.train.init_from}: its parameters do not fit this model "
                            f"({'; '.join(problems)}). The models differ in "
                            f"{_model_differences(source_config.model, config.model)}; set these --config.model.* "
                            "values to the init run's")
    start = {}
    for key, value in wanted.items():
        if key in loaded:
            start[key] = loaded[key]
        elif key == DECODER_PATH:  # a new buffer: the head is trained separately from E from here on
            start[key] = jnp.array(embedding_matrix(source), copy=True)
        else:
            start[key] = value
    return traverse_util.unflatten_dict(start)


def _model_differences(init: ml_collections.ConfigDict, this: ml_collections.ConfigDict) -> str:
    differing = [f"model.{key} ({init[key]!r} there, {this[key]!r} here)" for key in sorted(this.keys())
                 if key != "head" and init.get(key) != this[key]]
    return ", ".join(differing) or "no model.* key (check model.head)"
