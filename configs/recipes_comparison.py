"""The recipes of docs/objectives.md compared at demo scale: `python -m headless_jax.compare
--config=configs/recipes_comparison.py --workdir=runs/recipes` pretrains every recipe's CPU twin headless (`cwt`)
and classical (`ce`) with 3 pretraining seeds, plus the untrained control, then scores encoders on the books task
and the held-out MLM of configs/mlm_eval.py, decoders on configs/lm_eval.py.

Equal steps by default (each twin's own 600); `:flops` gives every encoder the training FLOPs of 600 steps of the
classical plain MLM (configs/demo.py:ce) and every decoder those of 600 steps of the classical plain CLM
(configs/clm_demo.py:ce), so each recipe trains as many steps as that compute buys (train.flops_budget,
headless_jax/train/flops.py). About 6 hours of a 2-core machine for one of the two; it resumes where it stopped.
"""
from headless_jax.config import sibling_config
from headless_jax.train.flops import train_flops_between

ENCODERS = {"mlm": "demo", "mosaicbert": "mosaicbert", "spanbert": "spanbert", "biphasic": "biphasic",
            "electra": "electra", "bpdec": "bpdec"}  # recipe → config; mlm and clm are the plain baselines
DECODERS = {"clm": "clm_demo", "meap": "meap", "prefix_lm": "prefix_lm"}
PLAIN = ("demo", "clm_demo")  # the baselines' configs take `:loss`; the recipes' `:loss,demo`


def spec(config: str, loss: str) -> str:
    return f"configs/{config}.py:{loss}" + ("" if config in PLAIN else ",demo")


def get_config(budget: str | None = None):
    if budget not in (None, "flops"):
        raise ValueError(f"configs/recipes_comparison.py:{budget}: unknown; use no argument (equal steps) or :flops")
    c = sibling_config(__file__, "comparison")
    flops = {family: train_flops_between(sibling_config(__file__, config, "ce"), 0, 600)
             for family, config in (("encoder", "demo"), ("decoder", "clm_demo"))}
    models = []
    for family, recipes in (("encoder", ENCODERS), ("decoder", DECODERS)):
        for recipe, config in recipes.items():
            for loss in ("cwt", "ce"):
                flags = [f"--config.train.flops_budget={flops[family]!r}"] if budget else []
                models.append((f"{recipe}_{loss}", spec(config, loss), *flags))
    c.models = tuple(models)
    c.pretraining_seeds = (0, 1, 2)
    # Books differences read: each recipe headless vs classical, each recipe vs the plain MLM of its loss, and the
    # plain MLM twins vs the control.
    pairs = [(f"{r}_cwt", f"{r}_ce") for r in ENCODERS]
    pairs += [(f"{r}_{loss}", f"mlm_{loss}") for loss in ("cwt", "ce") for r in ENCODERS if r != "mlm"]
    c.pairs = tuple(pairs + [("mlm_cwt", "untrained"), ("mlm_ce", "untrained")])
    return c
