"""Learning to Skip at demo scale (DESIGN §1.4): the embedded-corpus demo with every other layer routed.

`--config=configs/skip_demo.py` is the headless MLM encoder (demo.py's shape, 4 layers) with `skip` routers
(Gumbel gate, budget target P = 0.5). The argument picks, comma-separated and in any order: the loss
(cwt | ce | cwt+ce: `:ce` is the classical twin), the router (skip | topk: capacity 0.5, Mixture-of-Depths)
and the task (mlm | clm: clm_demo.py's decoder shape, whose topk layers decode with the causal predictor).
E.g. `:ce,topk` or `:cwt,topk,clm`.
"""
from headless_jax.config import base_config, set_objective

LOSSES, KINDS, TASKS = ("cwt", "ce", "cwt+ce"), ("skip", "topk"), ("mlm", "clm")


def get_config(arg: str | None = None):
    choices = [a for a in (arg or "").split(",") if a]
    unknown = [a for a in choices if a not in LOSSES + KINDS + TASKS]
    if unknown:
        raise ValueError(f"configs/skip_demo.py: unknown argument(s) {unknown}; choose from {LOSSES + KINDS + TASKS}")
    pick = lambda options, default: next((a for a in choices if a in options), default)  # noqa: E731
    loss, kind, task = pick(LOSSES, "cwt"), pick(KINDS, "skip"), pick(TASKS, "mlm")
    c = base_config()
    causal = task == "clm"
    c.model.update(causal=causal, vocab_size=8192, num_layers=4, d_model=128, num_heads=2, head_dim=64, mlp_dim=512,
                   max_len=128)
    if causal:  # clm_demo.py's Pythia-style wiring
        c.model.update(positions="rotary", rotary_fraction=0.25, parallel_residual=True)
    c.model.routing.update(kind=kind, layers="every:2", skip="block", target=0.5, budget_weight=0.1,
                           capacity=0.5, predictor_dim=64)
    c.objective.update(task=task, mask_rate=0.15, cwt_group_size=4 if causal else 0)
    c.data.update(sources="embedded", seq_len=128)
    c.train.update(global_batch_size=16 if causal else 32, num_steps=600, log_every=20, eval_every=200,
                   eval_batches=8, checkpoint_every=200)
    c.optim.update(learning_rate=2e-3, warmup_steps=60, schedule="cosine")
    return set_objective(c, loss, classical_head="untied" if causal else "tied")
