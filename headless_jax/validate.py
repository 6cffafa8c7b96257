"""Config checks run before anything is built: each error names the key and the fix."""
import logging

import ml_collections

from headless_jax.model.attention import IMPLEMENTATIONS
from headless_jax.model.routing import check_routing
from headless_jax.objectives.masking import num_masked
from headless_jax.train.sharding import MESH_AXES, mesh_shape

CHOICES = {
    "model.activation": ("gelu", "swiglu"),
    "model.norm": ("layernorm", "rmsnorm"),
    "model.norm_position": ("pre", "post"),
    "model.positions": ("learned", "rotary"),
    "model.head": ("none", "tied", "untied"),
    "model.dtype": ("float32", "bfloat16"),
    "model.attention": IMPLEMENTATIONS,
    "model.remat": ("none", "full", "dots"),
    "objective.task": ("mlm", "clm"),
    "objective.loss": ("cwt", "ce", "cwt+ce"),
    "data.packing": ("windows", "documents"),
    "optim.schedule": ("cosine", "linear", "constant", "wsd"),
    "train.nonfinite": ("stop", "skip"),
    "train.trainable": ("all", "head"),
}


class ConfigError(ValueError):
    pass


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def validate_config(config: ml_collections.ConfigDict, num_devices: int, process_count: int = 1) -> None:
    """Raises ConfigError for the first inconsistency found."""
    for key, allowed in CHOICES.items():
        if _get(config, key) not in allowed:
            raise ConfigError(f"{key}={_get(config, key)!r} is not one of {allowed}; set --config.{key}=...")
    m, o, t, d = config.model, config.objective, config.train, config.data

    if o.task == "mlm" and m.causal:
        raise ConfigError("objective.task='mlm' needs a bidirectional encoder: set --config.model.causal=False")
    if o.task == "clm" and not m.causal:
        raise ConfigError("objective.task='clm' needs a causal decoder: set --config.model.causal=True")
    if "ce" in o.loss.split("+") and m.head == "none":
        raise ConfigError(f"objective.loss={o.loss!r} needs a vocabulary head but model.head='none' (headless); "
                          "set --config.model.head=tied|untied or --config.objective.loss=cwt")
    if t.trainable == "head" and (m.head == "none" or (m.causal and m.head == "tied")):
        raise ConfigError(f"train.trainable='head' trains the vocabulary head alone, but model.head={m.head!r} has no "
                          "parameters of its own; set --config.model.head=untied or --config.train.trainable=all")
    if m.positions == "learned" and d.seq_len > m.max_len:
        raise ConfigError(f"data.seq_len={d.seq_len} exceeds the learned position table model.max_len={m.max_len}; "
                          f"set --config.model.max_len={d.seq_len} or shorten data.seq_len")
    if o.task == "mlm":
        try:
            num_masked(d.seq_len, o.mask_rate)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    try:
        check_routing(m)
    except ValueError as error:
        raise ConfigError(str(error)) from None

    data_shards, fsdp_shards, _ = mesh_shape(config.mesh, num_devices)
    batch_shards = data_shards * fsdp_shards
    if t.global_batch_size % process_count:
        raise ConfigError(f"train.global_batch_size={t.global_batch_size} does not divide over {process_count} "
                          "processes; make it a multiple of the process count")
    if t.global_batch_size % (batch_shards * t.microbatches):
        raise ConfigError(
            f"train.global_batch_size={t.global_batch_size} is not divisible by batch shards (mesh.data × mesh.fsdp "
            f"= {batch_shards}) × train.microbatches ({t.microbatches}) = {batch_shards * t.microbatches}; "
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
    for name, axes in config.mesh.axis_rules:
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            if axis not in MESH_AXES:
                raise ConfigError(f"mesh.axis_rules maps {name!r} to unknown mesh axis {axis!r}; use {MESH_AXES}")
