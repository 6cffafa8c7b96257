"""Learning to Skip at paper scale: Pythia-70M (pythia70m.py's shape and data) with every other layer routed.

`:cwt` (default) headless, `:ce` classical; a second item picks the router: `:cwt,topk` (default; Mixture-of-
Depths at capacity 0.5, the causal predictor for decoding) or `:cwt,skip` (Gumbel gate, budget target 0.5).
Layers 1, 3, 5 are routed, so the layers are not scanned (routing under scan needs every layer routed).
"""
from headless_jax.config import base_config, set_objective


def get_config(arg: str | None = None):
    loss, _, kind = (arg or "cwt").partition(",")
    kind = kind or "topk"
    c = base_config()
    c.model.update(causal=True, vocab_size=50304, num_layers=6, d_model=512, num_heads=8, head_dim=64, mlp_dim=2048,
                   positions="rotary", rotary_fraction=0.25, parallel_residual=True, norm_eps=1e-5,
                   dtype="bfloat16", remat="dots", scan_layers=False)
    c.model.routing.update(kind=kind, layers="every:2", skip="block", capacity=0.5, target=0.5, budget_weight=0.1,
                           predictor_dim=128)
    c.objective.update(task="clm", cwt_group_size=8, cwt_memory_budget_mb=512)
    c.data.update(sources="jsonl:/path/to/pile/*.jsonl?field=text", seq_len=2048, packing="windows",
                  tokenizer_sample_chars=200_000_000)
    c.train.update(global_batch_size=1024, num_steps=143_000, eval_every=2000, eval_batches=16,
                   checkpoint_every=1000, permanent_every=10_000)
    c.optim.update(learning_rate=1e-3, warmup_steps=1430, schedule="cosine", min_lr_ratio=0.1, b2=0.95,
                   weight_decay=0.01)
    return set_objective(c, loss, classical_head="untied")
