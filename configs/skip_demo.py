"""Learning to Skip at demo scale (docs/method.md): the embedded-corpus demo with every other layer routed.

`--config=configs/skip_demo.py` is the headless MLM encoder (demo.py's shape, 4 layers) with `skip` routers
(Gumbel gate, budget target P = 0.5). The argument picks, comma-separated and in any order: the loss
(cwt | ce | cwt+ce: `:ce` is the classical twin), the router (skip | topk: capacity 0.5, Mixture-of-Depths)
and the task (mlm | clm: clm_demo.py's decoder shape, whose topk layers decode with the causal predictor).
E.g. `:ce,topk` or `:cwt,topk,clm`.
"""
from headless_jax.config import sibling_config

LOSSES, KINDS, TASKS = ("cwt", "ce", "cwt+ce"), ("skip", "topk"), ("mlm", "clm")


def get_config(arg: str | None = None):
    choices = [a for a in (arg or "").split(",") if a]
    unknown = [a for a in choices if a not in LOSSES + KINDS + TASKS]
    if unknown:
        raise ValueError(f"configs/skip_demo.py: unknown argument(s) {unknown}; choose from {LOSSES + KINDS + TASKS}")
    pick = lambda options, default: next((a for a in choices if a in options), default)  # noqa: E731
    loss, kind, task = pick(LOSSES, "cwt"), pick(KINDS, "skip"), pick(TASKS, "mlm")
    c = sibling_config(__file__, "clm_demo" if task == "clm" else "demo", loss)
    c.model.num_layers = 4
    c.model.routing.update(kind=kind, layers="every:2", skip="block", target=0.5, budget_weight=0.1,
                           capacity=0.5, predictor_dim=64)
    return c
