"""Learning to Skip at paper scale: Pythia-70M (pythia70m.py's shape and data) with every other layer routed.

`:cwt` (default) headless, `:ce` classical; a second item picks the router: `:cwt,topk` (default; Mixture-of-
Depths at capacity 0.5, the causal predictor for decoding) or `:cwt,skip` (Gumbel gate, budget target 0.5).
Layers 1, 3, 5 are routed, so the layers are not scanned (routing under scan needs every layer routed).
"""
from headless_jax.config import sibling_config


def get_config(arg: str | None = None):
    loss, _, kind = (arg or "cwt").partition(",")
    c = sibling_config(__file__, "pythia70m", loss)
    c.model.scan_layers = False
    c.model.routing.update(kind=kind or "topk", layers="every:2", skip="block", capacity=0.5, target=0.5,
                           budget_weight=0.1, predictor_dim=128)
    return c
