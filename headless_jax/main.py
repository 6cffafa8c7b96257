"""The main command: `python -m headless_jax.main --config=configs/demo.py --workdir=DIR [--config.x=y ...]`.

Trains the configured model, evaluating and checkpointing as it goes; re-running the same command in the
same workdir resumes from the latest checkpoint.
"""
from absl import flags
from ml_collections import config_flags

from headless_jax import command, distributed
from headless_jax.loop import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (local or gs://) for checkpoints, logs and caches.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    command.no_arguments(argv)
    config = _CONFIG.value
    distributed.initialize(config.distributed)
    train(config, _WORKDIR.value)


if __name__ == "__main__":
    command.run(main, "main", "workdir")
