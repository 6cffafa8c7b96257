"""The one check of a whole experiment config, run before anything is built: each error names the key and the fix.

Modules keep only the checks that need values known at run time (files, tokenizers, process counts).
"""
import logging
import math

import ml_collections

from headless_jax.data.packing import PACKINGS
from headless_jax.model.attention import IMPLEMENTATIONS
from headless_jax.model.routing import ROUTED_PARTS, ROUTING_KINDS, routed_layers
from headless_jax.objectives.masking import num_masked
from headless_jax.train.layout import MESH_AXES, axis_rules, batch_axes, mesh_shape
from headless_jax.train.metrics import TRACKERS, tracker_names, wandb_installed
from headless_jax.train.optim import SCHEDULES
from headless_jax.train.profiler import profile_window

CHOICES = {
    "model.activation": ("gelu", "swiglu"),
    "model.norm": ("layernorm", "rmsnorm"),
    "model.norm_position": ("pre", "post"),
    "model.positions": ("learned", "rotary"),
    "model.head": ("none", "tied", "untied"),
    "model.dtype": ("float32", "bfloat16"),
    "model.attention": IMPLEMENTATIONS,
    "model.remat": ("none", "full", "dots"),
    "objective.task": ("mlm", "clm", "clm_then_mlm", "electra"),
    "objective.masking": ("tokens", "spans"),
    "objective.loss": ("cwt", "ce", "cwt+ce"),
    "data.packing": PACKINGS,
    "optim.schedule": SCHEDULES,
    "train.nonfinite": ("stop", "skip"),
    "train.trainable": ("all", "head"),
    "optim.embedding_update": ("dense", "sparse"),
    "wandb.mode": ("online", "offline", "disabled"),
}


# Numeric keys and the range each must lie in: (low, high, low included, high included); None: unbounded.
RANGES = {
    **{key: (0, None, False, None) for key in (
        "model.vocab_size", "model.num_layers", "model.d_model", "model.num_heads", "model.head_dim", "model.mlp_dim",
        "model.max_len", "model.norm_eps", "model.init_std", "data.seq_len", "data.shard_chars",
        "data.tokenizer_sample_chars", "train.global_batch_size", "train.microbatches", "train.num_steps",
        "train.log_every", "train.eval_every", "train.eval_batches", "train.checkpoint_every",
        "train.keep_checkpoints", "optim.learning_rate", "optim.eps", "objective.cwt_temperature",
        "objective.cwt_memory_budget_mb")},
    **{key: (0, None, True, None) for key in (
        "optim.warmup_steps", "optim.weight_decay", "optim.grad_clip", "objective.z_loss", "objective.cwt_weight",
        "objective.ce_weight", "objective.electra_weight", "objective.cwt_block_size", "objective.ce_vocab_chunk",
        "objective.cwt_group_size", "train.permanent_every", "train.nonfinite_skip_limit", "train.flops_budget",
        "data.worker_count", "data.mixing_alpha")},
    **{key: (0, 1, True, False) for key in ("model.dropout_rate", "data.heldout_fraction", "optim.b1", "optim.b2",
                                            "objective.eval_mask_rate", "objective.meap_mask_rate")},
    **{key: (0, 1, True, True) for key in ("optim.min_lr_ratio", "optim.decay_fraction", "model.rotary_fraction",
                                           "objective.clm_fraction", "model.electra_generator",
                                           "objective.mlm_decoder_unmask_rate", "objective.mlm_decoder_encoder_rate")},
    **{key: (0, 1, False, True) for key in ("objective.span_geometric_p",)},
}


MAX_SPAN_SEQ_LEN = 46340  # span masking's int32 order key holds seq_len² values


class ConfigError(ValueError):
    pass


def _check_ranges(config: ml_collections.ConfigDict) -> None:
    for key, (low, high, low_in, high_in) in RANGES.items():
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ConfigError(f"{key}={value!r} is not a number; set --config.{key}=...")
        too_low = low is not None and (value < low or (value == low and not low_in))
        too_high = high is not None and (value > high or (value == high and not high_in))
        if too_low or too_high:
            lower = "" if low is None else f"{'≥' if low_in else '>'} {low}"
            upper = "" if high is None else f"{'≤' if high_in else '<'} {high}"
            raise ConfigError(f"{key}={value} is out of range: it must be {' and '.join(filter(None, (lower, upper)))}; "
                              f"set --config.{key}=...")


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def validate_config(config: ml_collections.ConfigDict, num_devices: int | None, process_count: int = 1) -> None:
    """Raises ConfigError for the first inconsistency found. num_devices None checks the model, objective and
    data alone (a saved run restored onto another mesh), not the mesh and batch."""
    _check_ranges(config)
    for key, allowed in CHOICES.items():
        if _get(config, key) not in allowed:
            raise ConfigError(f"{key}={_get(config, key)!r} is not one of {', '.join(allowed)}; set "
                              f"--config.{key}=...")
    m, o, t, d = config.model, config.objective, config.train, config.data

    if o.task in ("mlm", "clm_then_mlm", "electra") and m.causal:
        raise ConfigError(f"objective.task={o.task!r} needs a bidirectional encoder (a biphasic run's CLM phase "
                          "attends causally by itself): set --config.model.causal=False")
    if o.task == "clm" and not m.causal:
        raise ConfigError("objective.task='clm' needs a causal decoder: set --config.model.causal=True")
    if "ce" in o.loss.split("+") and m.head == "none":
        raise ConfigError(f"objective.loss={o.loss!r} needs a vocabulary head but model.head='none' (headless); "
                          "set --config.model.head=tied|untied or --config.objective.loss=cwt")
    if o.ce_all_positions and (o.task != "mlm" or o.loss == "cwt" or o.ce_vocab_chunk > 0):
        raise ConfigError("objective.ce_all_positions reproduces the reference MLM cost with dense logits: it needs "
                          "objective.task=mlm, a ce loss and objective.ce_vocab_chunk=0")
    if t.trainable == "head" and (m.head == "none" or (m.causal and m.head == "tied")):
        raise ConfigError(f"train.trainable='head' trains the vocabulary head alone, but model.head={m.head!r} has no "
                          "parameters of its own; set --config.model.head=untied or --config.train.trainable=all")
    if m.positions == "learned" and d.seq_len > m.max_len:
        raise ConfigError(f"data.seq_len={d.seq_len} exceeds the learned position table model.max_len={m.max_len}; "
                          f"set --config.model.max_len={d.seq_len} or shorten data.seq_len")
    _check_recipe(config)
    _check_electra(config)
    _check_mlm_decoder(config)
    _check_routing(m)
    _check_observability(config)
    if config.optim.embedding_update == "sparse":
        _check_sparse_embedding(config)

    for name, axes in config.mesh.axis_rules:
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            if axis not in MESH_AXES:
                raise ConfigError(f"mesh.axis_rules maps {name!r} to unknown mesh axis {axis!r}; use {MESH_AXES}")
    if num_devices is not None:
        _check_batch(config, num_devices, process_count)


def _check_batch(config: ml_collections.ConfigDict, num_devices: int, process_count: int) -> None:
    o, t = config.objective, config.train
    sizes = dict(zip(MESH_AXES, mesh_shape(config.mesh, num_devices)))
    batch_shards = math.prod(sizes[axis] for axis in batch_axes(axis_rules(config.mesh)))
    if t.global_batch_size % process_count:
        raise ConfigError(f"train.global_batch_size={t.global_batch_size} does not divide over {process_count} "
                          "processes; make it a multiple of the process count")
    if t.global_batch_size % (batch_shards * t.microbatches):
        raise ConfigError(
            f"train.global_batch_size={t.global_batch_size} is not divisible by batch shards (the mesh axes of the "
            f"'batch' rule: {batch_shards}) × train.microbatches ({t.microbatches}) = {batch_shards * t.microbatches}; "
            "change the batch size, the mesh or the number of microbatches")
    rows = t.global_batch_size // t.microbatches
    if "cwt" in o.loss.split("+") and o.cwt_group_size:
        if rows % o.cwt_group_size:
            raise ConfigError(f"objective.cwt_group_size={o.cwt_group_size} does not divide the {rows} sequences of "
                              "a microbatch (train.global_batch_size / train.microbatches); choose a divisor, or 0 "
                              "for the whole batch")
        if (rows // batch_shards) % o.cwt_group_size:
            logging.warning("objective.cwt_group_size=%d spans several batch shards (%d sequences per shard): the "
                            "CWT logits then need communication; a divisor of %d keeps each group on one device",
                            o.cwt_group_size, rows // batch_shards, rows // batch_shards)


def _check_recipe(config: ml_collections.ConfigDict) -> None:
    """The MLM-literature settings of the objective (docs/objectives.md)."""
    m, o, d = config.model, config.objective, config.data
    mlm, clm = o.task in ("mlm", "clm_then_mlm", "electra"), o.task in ("clm", "clm_then_mlm")
    rates = [key for key, used in (("mask_rate", mlm), ("eval_mask_rate", mlm and o.eval_mask_rate),
                                   ("meap_mask_rate", clm and o.meap_mask_rate)) if used]
    for key in rates:
        try:
            num_masked(d.seq_len, o[key])
        except ValueError as error:
            raise ConfigError(str(error).replace("objective.mask_rate", f"objective.{key}")) from None
    if o.meap_mask_rate and not clm:
        raise ConfigError(f"objective.meap_mask_rate={o.meap_mask_rate} masks a causal model's inputs (MEAP), but "
                          f"objective.task={o.task!r}; set --config.objective.task=clm or the rate to 0")
    if o.masking == "spans":
        if not mlm:
            raise ConfigError("objective.masking='spans' chooses MLM's masked positions, but objective.task='clm' "
                              "masks none; set --config.objective.masking=tokens or an MLM task")
        if not isinstance(o.span_max_length, int) or not 1 <= o.span_max_length <= d.seq_len:
            raise ConfigError(f"objective.span_max_length={o.span_max_length!r}: a span of at most that many units "
                              f"must fit a sequence of data.seq_len={d.seq_len}; set it in 1 … {d.seq_len}")
        if d.seq_len > MAX_SPAN_SEQ_LEN:
            raise ConfigError(f"objective.masking='spans' orders positions by an int32 key of seq_len² values, which "
                              f"data.seq_len={d.seq_len} overflows; use seq_len ≤ {MAX_SPAN_SEQ_LEN} or token masking")
    if o.task == "clm_then_mlm" and m.routing.kind != "none":
        raise ConfigError("objective.task='clm_then_mlm' switches the encoder's attention from causal to bidirectional, "
                          "which routed layers (decided per kind) do not follow; set --config.model.routing.kind=none")
    if o.prefix_length:
        if not clm:
            raise ConfigError(f"objective.prefix_length={o.prefix_length} makes a causal model's prefix bidirectional, "
                              f"but objective.task={o.task!r}; set --config.objective.task=clm or the length to 0")
        if not isinstance(o.prefix_length, int) or not -1 <= o.prefix_length < d.seq_len:
            raise ConfigError(f"objective.prefix_length={o.prefix_length!r} must be shorter than the sequence "
                              f"(data.seq_len={d.seq_len}) so that a token is left to predict: set it in 1 … "
                              f"{d.seq_len - 1}, or -1 for a random length per row, or 0 for none")
        if m.routing.kind != "none":
            raise ConfigError("objective.prefix_length: a prefix LM's prefix mask is not carried into routed layers; "
                              "set --config.model.routing.kind=none or --config.objective.prefix_length=0")
        if m.attention == "splash":
            raise ConfigError("objective.prefix_length: splash attention's masks are fixed when the kernel is built, "
                              "so it cannot take a per-row prefix; set --config.model.attention=auto (xla on TPU) "
                              "or cudnn")


def _check_electra(config: ml_collections.ConfigDict) -> None:
    """ELECTRA: a generator exactly when the task is electra, and model.head naming the generator's head."""
    m, o, t = config.model, config.objective, config.train
    if (o.task == "electra") != bool(m.electra_generator):
        raise ConfigError(f"objective.task={o.task!r} with model.electra_generator={m.electra_generator}: ELECTRA's "
                          "generator exists for objective.task=electra alone; set both (e.g. "
                          "--config.objective.task=electra --config.model.electra_generator=0.33) or neither")
    if o.task != "electra":
        return
    if (o.loss, m.head) not in (("cwt", "none"), ("ce", "tied")):
        raise ConfigError(f"objective.task='electra' trains its generator with objective.loss={o.loss!r} and "
                          f"model.head={m.head!r} (the generator's head); use loss=cwt with head=none (the headless "
                          "generator, sampling from its CWT distribution) or loss=ce with head=tied (the classical one)")
    if t.trainable != "all":
        raise ConfigError(f"train.trainable={t.trainable!r}: an ELECTRA discriminator has no vocabulary head to probe; "
                          "set --config.train.trainable=all")


def _check_mlm_decoder(config: ml_collections.ConfigDict) -> None:
    """BPDec: decoder blocks that MLM pretraining alone runs."""
    m, o = config.model, config.objective
    if not isinstance(m.mlm_decoder_layers, int) or m.mlm_decoder_layers < 0:
        raise ConfigError(f"model.mlm_decoder_layers={m.mlm_decoder_layers!r} must be a whole number ≥ 0 (0: no "
                          "BPDec decoder); set --config.model.mlm_decoder_layers=2, say")
    if not m.mlm_decoder_layers:
        return
    if o.task != "mlm":
        raise ConfigError(f"model.mlm_decoder_layers={m.mlm_decoder_layers} adds BPDec's MLM decoder, but "
                          f"objective.task={o.task!r} predicts no masked tokens through it; set "
                          "--config.objective.task=mlm or --config.model.mlm_decoder_layers=0")
    if o.ce_all_positions:
        raise ConfigError("objective.ce_all_positions scores the encoder's every position, which BPDec's decoder "
                          "replaces; set --config.objective.ce_all_positions=False or model.mlm_decoder_layers=0")
    if m.attention == "splash":
        raise ConfigError("model.mlm_decoder_layers: the decoder's first block hides each row's masked positions, a "
                          "per-row mask splash attention cannot take; set --config.model.attention=auto or cudnn")


def _check_sparse_embedding(config: ml_collections.ConfigDict) -> None:
    m, o = config.model, config.objective
    if m.head != "none" or o.loss != "cwt":
        kind = "a tied head" if m.head == "tied" else "a classical model"
        raise ConfigError(f"optim.embedding_update=sparse updates only the rows of E a step reads, but {kind} "
                          f"(model.head={m.head!r}, objective.loss={o.loss!r}) has a gradient dense over the whole "
                          "vocabulary (its softmax); set --config.optim.embedding_update=dense, or train headless "
                          "(--config.model.head=none --config.objective.loss=cwt)")
    if o.headless_train_accuracy:
        raise ConfigError("optim.embedding_update=sparse keeps the step's work off the vocabulary, but "
                          "objective.headless_train_accuracy scores all of it (o·Eᵀ) in every step; set one of them "
                          "off (held-out accuracy is always measured)")


def _check_observability(config: ml_collections.ConfigDict) -> None:
    trackers = tracker_names(config)
    unknown = [name for name in trackers if name not in TRACKERS]
    if unknown or len(set(trackers)) != len(trackers):
        raise ConfigError(f"train.trackers={config.train.trackers!r}: each of {', '.join(TRACKERS)} may appear once "
                          f"(comma-separated){'; unknown: ' + ', '.join(unknown) if unknown else ''}; set "
                          "--config.train.trackers=jsonl,tensorboard,...")
    if "wandb" in trackers and not wandb_installed():
        raise ConfigError("train.trackers includes wandb, but the wandb package is not installed: pip install -e "
                          "'.[wandb]', or leave wandb out of --config.train.trackers")
    try:
        profile_window(config.train.profile_steps, config.train.num_steps)
    except ValueError as error:
        raise ConfigError(f"{error}; set --config.train.profile_steps=START,END or leave it empty") from None


def _check_routing(model_cfg) -> None:
    kind = model_cfg.routing.kind
    if kind not in ROUTING_KINDS:
        raise ConfigError(f"unknown model.routing.kind {kind!r}; use one of {', '.join(ROUTING_KINDS)}")
    if kind == "none":
        return
    r = model_cfg.routing
    if r.skip not in ROUTED_PARTS:
        raise ConfigError(f"unknown model.routing.skip {r.skip!r}; use one of {', '.join(ROUTED_PARTS)}")
    try:
        layers = routed_layers(model_cfg)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if model_cfg.scan_layers and len(layers) != model_cfg.num_layers:
        raise ConfigError(f"model.scan_layers=True scans one block shape over all layers, but model.routing.layers="
                          f"{r.layers!r} routes only {len(layers)} of {model_cfg.num_layers}; set "
                          "--config.model.routing.layers=all or --config.model.scan_layers=False")
    if kind == "skip":
        if not 0.0 <= r.target <= 1.0:
            raise ConfigError(f"model.routing.target={r.target} is an executed fraction: choose it in [0, 1]")
        if r.temperature <= 0:
            raise ConfigError(f"model.routing.temperature={r.temperature} must be > 0")
        if r.budget_weight < 0:
            raise ConfigError(f"model.routing.budget_weight={r.budget_weight} must be ≥ 0")
    if kind == "topk":
        if not 0.0 < r.capacity <= 1.0:
            raise ConfigError(f"model.routing.capacity={r.capacity} must be in (0, 1]: the share of each sequence's "
                              "tokens a routed layer runs")
        if model_cfg.causal and r.predictor_dim <= 0:
            raise ConfigError("a causal model with model.routing.kind=topk needs the causal predictor for inference "
                              "(top-k looks at future tokens): set --config.model.routing.predictor_dim=64 (> 0)")
