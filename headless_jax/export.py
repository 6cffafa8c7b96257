"""A run → a Hugging Face directory: `python -m headless_jax.export --run=WORKDIR [--step=N] --out=DIR`.

Encoders become `BertForMaskedLM` (classical) or `BertModel` (headless, ELECTRA), decoders `GPTNeoXForCausalLM`
(a headless decoder's head a copy of E), with the run's tokenizer as tokenizer.json; docs/interop.md has the
layouts and what is refused. `transformers` then loads DIR with `from_pretrained(DIR)`.
"""
from absl import flags

from headless_jax import command
from headless_jax.interop.export import export_run

_RUN = flags.DEFINE_string("run", None, "The --workdir of a pretraining run (local or gs://), or an imported run.")
_STEP = flags.DEFINE_integer("step", 0, "The checkpoint to export; 0: the latest.")
_OUT = flags.DEFINE_string("out", None, "The new directory to write (local or gs://); never overwritten.")
flags.mark_flags_as_required(["run", "out"])


def main(argv):
    command.no_arguments(argv)
    exported = export_run(_RUN.value, _OUT.value, _STEP.value)
    print(f"Wrote {exported.out}: {exported.architecture} of step {exported.step} ({exported.tensors} tensors, "
          f"hidden_act={exported.hidden_act}); load it with transformers' from_pretrained")


if __name__ == "__main__":
    command.run(main, "export", "")
