"""Downstream jobs from a pretrained run: `python -m headless_jax.evaluate --config=configs/X.py --workdir=DIR
--config.pretrained=PRETRAIN_WORKDIR [--config.x=y ...]`.

The config's `kind` picks the job (see RUNNERS); results, checkpoints and logs go under --workdir.
"""
import importlib
import json

from absl import app, flags
from ml_collections import config_flags

from headless_jax import command, distributed

# kind -> "module:function"; the function takes (config, workdir) and returns the results it wrote.
RUNNERS: dict[str, str] = {
    "classify": "headless_jax.downstream.finetune:run",
    "harness": "headless_jax.downstream.harness:run",
    "lm_eval": "headless_jax.downstream.lm_eval:run",
    "mlm_eval": "headless_jax.downstream.mlm_eval:run",
}

_CONFIG = config_flags.DEFINE_config_file("config", None, "Downstream config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (local or gs://) for results, checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def runner(kind: str):
    if kind not in RUNNERS:
        raise app.UsageError(f"config.kind={kind!r} is not a downstream job; use one of {sorted(RUNNERS)}")
    module, function = RUNNERS[kind].split(":")
    return getattr(importlib.import_module(module), function)


def main(argv):
    command.no_arguments(argv)
    config = _CONFIG.value
    distributed.initialize(config.distributed)
    results = runner(config.kind)(config, _WORKDIR.value)
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    command.run(main, "evaluate", "workdir")
