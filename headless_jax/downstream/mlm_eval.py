"""Held-out MLM scoring of a pretrained encoder under one reference masking, whatever recipe trained it.

`python -m headless_jax.evaluate --config=configs/mlm_eval.py --workdir=DIR --config.pretrained=RUN` writes
DIR/results.json: loss, accuracy (argmax over the whole vocabulary: the head's, or o·Eᵀ for a headless encoder),
nll and bits per byte on the held-out tails of the run's own data sources, masked BERT's way (token masking,
80/10/10) at `mask_rate` with a fixed seed. Runs trained at 30 % masking, with spans or CLM first are then scored
alike: the recipes' own held-out metrics are not comparable across recipes (docs/objectives.md).
"""
import jax
import ml_collections
from etils import epath

from headless_jax.data.pipeline import eval_batches
from headless_jax.downstream.results import write_json
from headless_jax.experiment import load_pretrained, special_tokens
from headless_jax.objectives import build_objective
from headless_jax.train.heldout import evaluate
from headless_jax.train.layout import Layout
from headless_jax.train.step import build_eval_step


def reference_config(run_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The run's config with the reference MLM objective and the job's held-out batch count and batch size."""
    reference = ml_collections.ConfigDict(run_config.to_dict())
    reference.objective.update(task="mlm", masking="tokens", mask_rate=config.mask_rate, eval_mask_rate=0.0,
                               meap_mask_rate=0.0, prefix_length=0)
    reference.train.update(global_batch_size=config.batch_size, eval_batches=config.eval_batches)
    if config.sources:
        reference.data.sources = config.sources
    return reference


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The evaluate entry point for kind='mlm_eval'."""
    layout = Layout.from_config(config.mesh)
    pretrained = load_pretrained(config.pretrained, layout, config.pretrained_step, config.tokenizer_model,
                                 causal=False, token_scores=True)
    reference = reference_config(pretrained.config, config)
    tokenizer = pretrained.tokenizer
    objective = build_objective(reference, pretrained.model, special_tokens(tokenizer),
                                tokenizer.token_bytes(reference.model.vocab_size))
    eval_step = build_eval_step(objective, pretrained.experiment.state_shardings, layout, config.seed)
    local = eval_batches(reference, tokenizer, epath.Path(workdir) / "cache", config.eval_batches,
                         jax.process_index(), jax.process_count())
    with layout.active():
        batches = {name: [layout.global_batch(b) for b in source_batches] for name, source_batches in local.items()}
        metrics = evaluate(eval_step, pretrained.params, batches)
    results = {"pretrained": config.pretrained, "step": pretrained.step, "mask_rate": config.mask_rate,
               "sources": reference.data.sources, "heldout": metrics}
    if jax.process_index() == 0:
        write_json(workdir, results)
    return results
