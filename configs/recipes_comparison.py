"""The recipes of docs/objectives.md compared at demo scale: `python -m headless_jax.compare
--config=configs/recipes_comparison.py --workdir=runs/recipes` pretrains every recipe's CPU twin headless (`cwt`)
and classical (`ce`) with 3 pretraining seeds, plus the untrained control, then scores encoders on the books task
(full fine-tuning and the linear probe) and the held-out MLM of configs/mlm_eval.py, decoders on configs/lm_eval.py.

The argument, comma-separated words, picks the budget and the family:
- equal steps by default (each twin's own 600); `flops` gives every encoder the training FLOPs of 600 steps of the
  classical plain MLM (configs/demo.py:ce) and every decoder those of 600 steps of the classical plain CLM
  (configs/clm_demo.py:ce), so each recipe trains as many steps as that compute buys (train.flops_budget,
  headless_jax/train/flops.py);
- both families by default; `encoders` (with the control) or `decoders` alone, e.g. `:flops,decoders`.
About 2 h 45 min of a 2-core machine for the encoders at equal steps (measured 2026-12-07), under 1 h for decoders;
it resumes where it stopped, and one family's runs are the whole study's (same names, same workdir).
"""
from headless_jax.config import sibling_config
from headless_jax.train.flops import train_flops_between

FAMILIES = {"encoders": {"mlm": "demo", "mosaicbert": "mosaicbert", "spanbert": "spanbert", "biphasic": "biphasic",
                         "electra": "electra", "bpdec": "bpdec"},  # recipe → config; mlm and clm are the baselines
            "decoders": {"clm": "clm_demo", "meap": "meap", "prefix_lm": "prefix_lm"}}
BASELINE = {"encoders": "demo", "decoders": "clm_demo"}  # `:flops`: 600 steps of `BASELINE:ce` is the budget
PLAIN = ("demo", "clm_demo")  # the baselines' configs take `:loss`; the recipes' `:loss,demo`


def spec(config: str, loss: str) -> str:
    return f"configs/{config}.py:{loss}" + ("" if config in PLAIN else ",demo")


def get_config(arg: str | None = None):
    words = set(arg.split(",")) if arg else set()
    if unknown := words - {"flops", *FAMILIES}:
        raise ValueError(f"configs/recipes_comparison.py:{arg}: unknown {sorted(unknown)}; use no argument (equal "
                         "steps, both families) or any of flops, encoders, decoders, e.g. :flops,decoders")
    families = [family for family in FAMILIES if family in words] or list(FAMILIES)
    c = sibling_config(__file__, "comparison")
    models = []
    for family in families:
        budget = train_flops_between(sibling_config(__file__, BASELINE[family], "ce"), 0, 600)
        for recipe, config in FAMILIES[family].items():
            for loss in ("cwt", "ce"):
                flags = [f"--config.train.flops_budget={budget!r}"] if "flops" in words else []
                models.append((f"{recipe}_{loss}", spec(config, loss), *flags))
    c.models = tuple(models)
    c.pretraining_seeds = (0, 1, 2)
    c.finetune = (*c.finetune, ("books_probe", "configs/books.py:probe"))  # the probe reads features as they are
    if "encoders" not in families:
        c.control_steps = 0  # the control is an encoder: it is read on books
        return c
    # Books differences read: each recipe headless vs classical, each recipe vs the plain MLM of its loss, and the
    # plain MLM twins vs the control.
    recipes = FAMILIES["encoders"]
    pairs = [(f"{r}_cwt", f"{r}_ce") for r in recipes]
    pairs += [(f"{r}_{loss}", f"mlm_{loss}") for loss in ("cwt", "ce") for r in recipes if r != "mlm"]
    c.pairs = tuple(pairs + [("mlm_cwt", "untrained"), ("mlm_ce", "untrained")])
    return c
