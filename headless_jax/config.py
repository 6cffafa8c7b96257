"""The default experiment config: every key a run can set, with its default.

Experiment files in `configs/` call `base_config()` and override what they change, big_vision style.
Anything here can be overridden on the command line: `--config.model.num_layers=4`.
"""
import importlib.util
import os

import ml_collections

# Logical axis -> mesh axes. Parameters: FSDP shards the embed dimension, tensor parallelism shards heads,
# MLP and vocabulary. Activations: batch over ('data', 'fsdp'). A rule maps to None = replicated.
DEFAULT_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("positions", None),
    ("norm", None),
    ("layers", None),
    ("classes", None),
    ("router", None),
)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    m = c.model = ml_collections.ConfigDict()
    m.causal = False  # False: bidirectional encoder (MLM); True: decoder (CLM)
    m.vocab_size = 8192
    m.num_layers = 4
    m.d_model = 256
    m.num_heads = 4
    m.head_dim = 64
    m.mlp_dim = 1024
    m.activation = "gelu"  # gelu | swiglu
    # GELU (MLP, MLM head transform, ELECTRA's detector): the tanh approximation, or False: the exact erf form, which
    # HF BERT and Pythia use (configs/bert_base.py, configs/pythia*.py), so that an export computes what we do
    m.gelu_approximate = True
    m.norm = "layernorm"  # layernorm | rmsnorm
    m.norm_position = "pre"  # pre | post (BERT is post-norm)
    m.norm_eps = 1e-5
    m.positions = "learned"  # learned | rotary
    m.rotary_fraction = 1.0  # share of head dims rotated (Pythia: 0.25)
    m.rotary_base = 10000.0
    m.max_len = 128  # learned position table size
    m.parallel_residual = False  # Pythia: x + attn(ln1 x) + mlp(ln2 x)
    m.dropout_rate = 0.0
    m.use_bias = True
    m.head = "none"  # none (headless) | tied | untied
    m.mlm_head_transform = True  # classical MLM: BERT dense + GELU + norm before the decoder
    # ELECTRA (objective.task=electra): the generator's share of the heads and MLP width (0: no generator); same depth,
    # reads E; model.head is then the generator's head (none: headless, trained with CWT; tied: classical)
    m.electra_generator = 0.0
    # BPDec (DrBERT): transformer blocks on top of the encoder that only MLM pretraining runs (the loss reads them;
    # fine-tuning, evaluation and export drop them); 0: none
    m.mlm_decoder_layers = 0
    m.init_std = 0.02
    m.dtype = "float32"  # compute dtype; parameters stay float32
    m.attention = "auto"  # auto | xla | cudnn | splash
    m.remat = "none"  # none | full | dots (save matmul outputs)
    m.scan_layers = False

    r = m.routing = ml_collections.ConfigDict()  # Learning to Skip: headless_jax.model.routing
    r.kind = "none"  # none | skip (Gumbel gate, dense compute) | topk (Mixture-of-Depths capacity, real savings)
    r.layers = "every:2"  # which layers route: "every:N" (layers N-1, 2N-1, …), "all", or indices "1,3"
    r.skip = "block"  # what a routed layer skips: block | attention | mlp
    r.target = 0.5  # skip: executed fraction P the budget loss pulls each routed layer to
    r.budget_weight = 0.1  # skip: λ of the budget loss λ·Σ_l (r_l − P)²
    r.temperature = 1.0  # skip: Gumbel-softmax temperature of the backward (soft) gate
    r.capacity = 0.5  # topk: share c of each sequence's tokens a routed layer runs (k = max(1, round(c·L)))
    r.predictor_dim = 64  # topk, causal: hidden width of the causal predictor used at inference (must be > 0)
    r.predictor_weight = 1.0  # topk, causal: weight of the predictor's BCE loss (trains only the predictor)

    o = c.objective = ml_collections.ConfigDict()
    # mlm | clm | clm_then_mlm (biphasic: CLM for clm_fraction of the steps, then MLM; an encoder) | electra (replaced-
    # token detection: a generator trained with objective.loss proposes tokens, the encoder detects them)
    o.task = "mlm"
    o.clm_fraction = 0.5  # clm_then_mlm: share of train.num_steps trained as CLM before the switch to MLM
    o.loss = "cwt"  # cwt | ce | cwt+ce
    o.cwt_weight = 1.0  # loss = cwt_weight·L_CWT + ce_weight·L_CE over the terms in use
    o.ce_weight = 1.0
    o.mask_rate = 0.15  # MLM: exactly round(rate·seq_len) positions per sequence (0.30: MosaicBERT/ModernBERT)
    o.eval_mask_rate = 0.0  # MLM held-out evaluation's rate; 0: mask_rate (MosaicBERT trains at 0.30, scores at 0.15)
    o.masking = "tokens"  # MLM: tokens (BERT, each position alone) | spans (SpanBERT)
    o.span_geometric_p = 0.2  # spans: lengths ~ Geometric(p) on 1 … span_max_length (SpanBERT: 0.2, 10; mean 3.8)
    o.span_max_length = 10
    o.span_whole_words = True  # spans: lengths count whole words (per the tokenizer's word starts), not tokens
    o.meap_mask_rate = 0.0  # CLM: share of input positions replaced by [MASK], targets unchanged (MEAP: 0.15)
    # CLM: prefix LM, each document's first N tokens attend both ways and are not predicted; 0: none;
    # -1: N uniform in 1 … seq_len-1 per row (the architecture × objective study's non-causal decoder)
    o.prefix_length = 0
    o.mlm_decoder_unmask_rate = 0.5  # BPDec: share of the masked positions the first decoder block lets others see
    o.mlm_decoder_encoder_rate = 0.5  # BPDec: share of the training predictions read off the encoder, not the decoder
    o.electra_weight = 50.0  # electra: loss = generator loss + electra_weight · replaced-token BCE (ELECTRA: λ = 50)
    o.cwt_group_size = 0  # sequences per negative group; 0 = the whole per-step batch
    o.cwt_temperature = 1.0
    o.cwt_block_size = 0  # >0: blockwise CWT with this column block; 0: dense unless over the budget
    o.cwt_memory_budget_mb = 1024.0  # dense [G,K,K] logits above this switch to blockwise automatically
    o.ce_all_positions = False  # MLM: logits at all positions as the reference did (costlier)
    o.ce_vocab_chunk = 0  # >0: chunked vocabulary CE (never materialise [N,V] logits at once)
    o.z_loss = 0.0  # CE: adds z_loss·logsumexp² per token
    # CE on masked tasks: True leaves the special ids (never masked, so never a target) out of the softmax, where they
    # are only ever pushed down, dragging their tied embeddings ([CLS] included) away from every feature; CWT never
    # touches them (docs/downstream.md, docs/comparison.md). set_objective turns it on for every classical twin;
    # False: the softmax over the whole vocabulary (BERT's, and what runs had before the key)
    o.ce_exclude_special = False
    o.headless_train_accuracy = False  # headless: o·Eᵀ accuracy in training steps too (a [N,V] matmul); eval always

    d = c.data = ml_collections.ConfigDict()
    # comma-separated: embedded | text:GLOB | jsonl:GLOB[?field=text] (.gz, .zst too) | parquet:GLOB[?column=text] |
    # tfds:NAME[?split=train&field=text]; each also takes name= (in metrics) and weight= (mixing, all or none)
    d.sources = "embedded"
    d.mixing_alpha = 0.3  # several sources: sample source i with p_i ∝ n_i^alpha
    d.seq_len = 128
    d.packing = "windows"  # windows: fixed windows over concatenated text | documents: packed with segment ids
    d.heldout_fraction = 0.05  # tail of every document kept out of training
    d.tokenizer_model = ""  # path to a SentencePiece model; empty: train one from the sources
    d.tokenizer_sample_chars = 20_000_000
    d.store = ""  # a token store built by python -m headless_jax.prepare; empty: one built under cache_dir
    d.shard_chars = 8_000_000  # store shards hold about this many characters of text (a worker's memory bound)
    d.range_reads = False  # read a local store by byte ranges too (remote stores always are); False: map it
    d.cache_dir = ""  # tokenizer and automatic token store; empty: <workdir>/cache
    d.worker_count = 0  # grain worker processes (0: in the main process)

    t = c.train = ml_collections.ConfigDict()
    t.global_batch_size = 32
    t.microbatches = 1  # gradient accumulation steps per update
    t.num_steps = 1000
    # >0: train for as many steps as this many training FLOPs buy (train/flops.py), which then sets num_steps: runs of
    # different objectives at equal compute ("headless at the classical model's compute")
    t.flops_budget = 0.0
    t.log_every = 20
    t.eval_every = 200
    t.eval_batches = 8
    t.checkpoint_every = 200
    t.keep_checkpoints = 3
    t.permanent_every = 0  # >0: keep every checkpoint at a multiple of this, forever
    t.nonfinite = "stop"  # stop | skip: what a non-finite loss or gradient norm does
    t.nonfinite_skip_limit = 20  # skip: stop once more than this many updates in a row were non-finite
    t.peak_flops_per_device = 0.0  # 0: look up the device in headless_jax.train.flops
    t.init_from = ""  # workdir of a run whose params start this one (a missing vocabulary head starts as a copy of E)
    t.trainable = "all"  # all | head (a probe: the body is frozen, only the vocabulary head trains)
    t.trackers = "jsonl,tensorboard"  # any of jsonl, tensorboard, wandb (comma-separated); process 0 writes them
    t.profile_steps = ""  # "START,END": a jax.profiler trace of steps START..END into <workdir>/tensorboard

    opt = c.optim = ml_collections.ConfigDict()
    opt.learning_rate = 1e-3
    opt.schedule = "cosine"  # cosine | linear | constant | wsd
    opt.warmup_steps = 100
    opt.decay_fraction = 0.2  # wsd: share of steps in the final decay
    opt.min_lr_ratio = 0.1
    opt.b1 = 0.9
    opt.b2 = 0.98
    opt.eps = 1e-8
    opt.weight_decay = 0.01
    opt.decay_embeddings = True
    opt.grad_clip = 1.0
    # dense | sparse: headless models only, E's AdamW update on the rows of the step's tokens alone (a row's missed
    # updates are caught up when it is next read: docs/method.md)
    opt.embedding_update = "dense"

    w = c.wandb = ml_collections.ConfigDict()  # the wandb tracker (train.trackers); pip install -e '.[wandb]'
    w.mode = "online"  # online | offline (no network; upload later with `wandb sync`) | disabled
    w.project = "headless_jax"
    w.entity = ""  # empty: the logged-in user's default
    w.name = ""  # empty: W&B picks one
    w.group = ""
    w.tags = ""  # comma-separated

    mesh = c.mesh = ml_collections.ConfigDict()
    mesh.data = -1  # -1: fill with the remaining devices
    mesh.fsdp = 1
    mesh.tensor = 1
    mesh.dcn_data = 1  # multi-slice TPU: slices along the data axis
    mesh.axis_rules = DEFAULT_AXIS_RULES

    dist = c.distributed = ml_collections.ConfigDict()
    dist.coordinator_address = ""  # empty: auto-detect (TPU VM, SLURM) or single process
    dist.num_processes = 0
    dist.process_id = -1
    return c


def set_objective(config: ml_collections.ConfigDict, loss: str | None, classical_head: str) -> ml_collections.ConfigDict:
    """Makes a config headless (`cwt`, no head) or classical (`ce`, with `classical_head`, its softmax without the
    never-target special ids: objective.ce_exclude_special), or mixed (`cwt+ce`).

    Used by twin configs, e.g. `--config=configs/demo.py:ce` for the classical twin of the headless demo.
    """
    loss = loss or "cwt"
    config.objective.loss = loss
    config.model.head = "none" if loss == "cwt" else classical_head
    config.objective.ce_exclude_special = "ce" in loss  # no softmax mass on ids a masked task never predicts
    return config


def recipe_twin(config_file: str, arg: str | None, paper: str, demo: str) -> ml_collections.ConfigDict:
    """The base of an objective-recipe config (configs/mosaicbert.py, …): `configs/<paper>.py` at the paper's
    scale, or with `demo` in the comma-separated `arg` the CPU twin `configs/<demo>.py`; the loss in `arg`
    (cwt | ce | cwt+ce, default cwt) picks headless or classical. E.g. `:ce,demo`."""
    choices = [a for a in (arg or "").split(",") if a]
    unknown = [a for a in choices if a not in ("cwt", "ce", "cwt+ce", "demo")]
    if unknown:
        raise ValueError(f"{os.path.basename(config_file)}: unknown argument(s) {unknown}; give a loss (cwt, ce, "
                         "cwt+ce) and/or demo, comma-separated, e.g. :ce,demo")
    loss = next((a for a in choices if a != "demo"), None)
    return sibling_config(config_file, demo if "demo" in choices else paper, loss)


def sibling_config(config_file: str, name: str, *args) -> ml_collections.ConfigDict:
    """`get_config(*args)` of `configs/<name>.py` next to `config_file`: how one config builds on another
    (`configs/` is a folder of files, not a package)."""
    path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


def saved_config(saved: dict) -> ml_collections.ConfigDict:
    """A config saved with a checkpoint, completed with `base_config()`'s defaults for the keys added since it was
    saved. (So a new key's default must be the behaviour runs had before it existed.)"""
    config = ml_collections.ConfigDict(saved)
    _add_missing(config, base_config())
    return config


def _add_missing(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
    for key, default in defaults.items():
        if key not in config:
            config[key] = default
        elif isinstance(default, ml_collections.ConfigDict) and isinstance(config[key], ml_collections.ConfigDict):
            _add_missing(config[key], default)
