"""AdamW with warmup, a decay schedule, a weight-decay mask and global-norm clipping (optax); for a headless
model's embedding optionally by rows (optim.embedding_update=sparse, train/sparse_embedding.py)."""
import jax
import optax

from headless_jax.model import HEAD
from headless_jax.train.sparse_embedding import SparseEmbeddingOptimizer

SCHEDULES = ("cosine", "linear", "constant", "wsd")


def learning_rate_schedule(opt_cfg, num_steps: int) -> optax.Schedule:
    """Linear warmup to the peak, then cosine | linear | constant | warmup-stable-decay down to min_lr_ratio."""
    peak, warmup = opt_cfg.learning_rate, opt_cfg.warmup_steps
    floor = peak * opt_cfg.min_lr_ratio
    after_warmup = max(num_steps - warmup, 1)
    if opt_cfg.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, after_warmup, alpha=opt_cfg.min_lr_ratio)
    elif opt_cfg.schedule == "linear":
        decay = optax.linear_schedule(peak, floor, after_warmup)
    elif opt_cfg.schedule == "constant":
        decay = optax.constant_schedule(peak)
    elif opt_cfg.schedule == "wsd":
        decay_steps = max(int(num_steps * opt_cfg.decay_fraction), 1)
        stable = max(after_warmup - decay_steps, 0)
        decay = optax.join_schedules(
            [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay_steps)], [stable])
    else:
        raise ValueError(f"unknown optim.schedule {opt_cfg.schedule!r}; use one of {SCHEDULES}")
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def weight_decay_mask(params, decay_embeddings: bool):
    """True where weight decay applies: matrices only — never norms or biases; embeddings by config."""
    def decays(path, _):
        names = [str(getattr(k, "key", getattr(k, "name", ""))) for k in path]
        if names[-1] == "value":  # a leaf inside a logical-axis box
            names = names[:-1]
        leaf = names[-1]
        if leaf in ("bias", "scale"):
            return False
        if leaf == "embedding":
            return decay_embeddings
        return True

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(opt_cfg, num_steps: int, clip: bool = True) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(AdamW with global-norm clipping, its learning-rate schedule): one schedule serves both. clip=False leaves
    the clipping to the caller (the state keeps the same structure)."""
    schedule = learning_rate_schedule(opt_cfg, num_steps)
    optimizer = optax.chain(
        optax.clip_by_global_norm(opt_cfg.grad_clip) if clip and opt_cfg.grad_clip > 0 else optax.identity(),
        optax.adamw(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps, weight_decay=opt_cfg.weight_decay,
                    mask=lambda p: weight_decay_mask(p, opt_cfg.decay_embeddings)),
    )
    return optimizer, schedule


def train_optimizer(config) -> tuple[optax.GradientTransformation | SparseEmbeddingOptimizer, optax.Schedule]:
    """The optimiser and schedule of an experiment config: AdamW on every parameter (train.trainable='all'), or
    on the head alone ('head', a probe). Frozen parameters get zero updates — not even weight decay. With
    optim.embedding_update=sparse (headless models), E is updated by rows and the rest by AdamW."""
    opt = config.optim
    if opt.embedding_update == "sparse":
        dense, schedule = make_optimizer(opt, config.train.num_steps, clip=False)
        return SparseEmbeddingOptimizer(dense, schedule, opt.b1, opt.b2, opt.eps,
                                        opt.weight_decay if opt.decay_embeddings else 0.0, opt.grad_clip), schedule
    optimizer, schedule = make_optimizer(opt, config.train.num_steps)
    if config.train.trainable == "head":
        optimizer = head_only(optimizer)
    return optimizer, schedule


FIXED_STATS = "fixed_stats"  # a head subtree of statistics, not parameters (a probe's feature standardization)


def head_only(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """`optimizer` on the model's head alone; every body parameter, and the head's FIXED_STATS, get a zero update
    (a probe of the body)."""
    # Zeroing the frozen gradients first keeps them out of the clipping norm and the moments; zeroing the frozen
    # updates last removes weight decay. Both are stateless (optax.multi_transform's masked moments hold
    # MaskedNode leaves, which the sharded state layout cannot carry).
    freeze = optax.masked(optax.set_to_zero(), frozen_mask)
    return optax.chain(freeze, optimizer, freeze)


def frozen_mask(params) -> dict:
    """True for every parameter outside the head (the vocabulary or classification head) and in its FIXED_STATS."""
    def frozen(path, _):
        keys = [getattr(key, "key", None) for key in path]
        return keys[0] != HEAD or FIXED_STATS in keys
    return jax.tree_util.tree_map_with_path(frozen, params)
