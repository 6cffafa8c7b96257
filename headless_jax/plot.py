"""Curves of several runs on one figure: `python -m headless_jax.plot RUN [RUN ...] --out=curves.png
[--x=step|tokens|flops] [--metrics=train/loss,eval/bits_per_byte]` (headless_jax/curves.py reads and draws them).

Each RUN is a training workdir (local or gs://). A directory that is not one is refused (exit code 2).
"""
from absl import app, flags

from headless_jax import command
from headless_jax.curves import X_AXES, curves, draw

_OUT = flags.DEFINE_string("out", "curves.png", "The PNG to write (local or gs://).")
_X = flags.DEFINE_enum("x", "step", X_AXES, "The x axis: training steps, tokens or training FLOPs.")
_METRICS = flags.DEFINE_list("metrics", ["train/loss", "eval/bits_per_byte", "eval/accuracy"],
                             "SPLIT/METRIC names, one panel each (the splits of metrics.jsonl: train, eval, session).")


def main(argv):
    runs = argv[1:]
    if not runs:
        raise app.UsageError("give one or more run directories: python -m headless_jax.plot RUN [RUN ...] "
                             "--out=curves.png")
    draw(curves(runs, _METRICS.value, _X.value), _X.value, _OUT.value)
    print(f"Wrote {_OUT.value}: {', '.join(_METRICS.value)} of {len(runs)} run(s) against {_X.value}")


if __name__ == "__main__":
    command.run(main, "plot", "")
