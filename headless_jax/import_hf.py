"""A Hugging Face directory → a run: `python -m headless_jax.import_hf --hf=DIR --config=configs/X.py
--workdir=RUN`.

DIR (local or gs://) holds config.json, safetensors weights and tokenizer.json of a BertForMaskedLM, BertModel
or GPTNeoXForCausalLM; the config describes the same model (its mismatching keys are named with their fixes).
RUN then serves `--config.train.init_from=RUN`, the downstream jobs (`--config.pretrained=RUN`) and the export.
"""
from absl import flags
from ml_collections import config_flags

from headless_jax import command
from headless_jax.interop.importer import import_checkpoint

_HF = flags.DEFINE_string("hf", None, "The Hugging Face model directory (local or gs://).")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file of the same model (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The new run directory to write (local or gs://).")
flags.mark_flags_as_required(["hf", "config", "workdir"])


def main(argv):
    command.no_arguments(argv)
    imported = import_checkpoint(_HF.value, _CONFIG.value, _WORKDIR.value)
    for note in imported.notes:
        print(f"Note: {note}")
    print(f"Wrote {imported.workdir}: the {imported.architecture} as a step-0 checkpoint with its tokenizer")


if __name__ == "__main__":
    command.run(main, "import_hf", "workdir")
