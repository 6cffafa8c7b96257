"""The headless vs classical comparison in one command: `python -m headless_jax.compare
--config=configs/comparison.py --workdir=runs/comparison` (headless_jax/comparison.py; docs/comparison.md).
"""
from absl import flags
from etils import epath
from ml_collections import config_flags

from headless_jax import command
from headless_jax.comparison import compare, table

_CONFIG = config_flags.DEFINE_config_file("config", None, "Comparison config (configs/comparison.py).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory (local or gs://) for every run and the table.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    command.no_arguments(argv)
    print(table(compare(_CONFIG.value, epath.Path(_WORKDIR.value))), end="")


if __name__ == "__main__":
    command.run(main, "compare", "workdir")
