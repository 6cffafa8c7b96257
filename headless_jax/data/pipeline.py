"""Training and evaluation batches: dicts of int32 numpy arrays `tokens`, `segment_ids`, `positions`, each
[B, L] with B = this process's rows of the global batch.

Rows come from the token store (data/store.py): `data.store`, or one built automatically under the cache.
Training streams are grain pipelines over (source, row) ids: each source reshuffled every epoch, sources
interleaved with their `weight=`s or p_i ∝ n_i^alpha, global batches of ids cut into per-process slices, and
only this process's rows read. Their iterators have get_state()/set_state() for checkpoints. Every batch
also carries `source_ids` [B], the source of each row.

Several processes: process 0 trains the tokenizer and builds the automatic store while the others wait (see
`build_data`).
"""
import functools
from collections.abc import Sequence

import grain
import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from headless_jax.data.errors import DataError
from headless_jax.data.packing import PACKINGS, PackedRows
from headless_jax.data.sources import no_text_error, parse_sources
from headless_jax.data.store import TokenStore, manifest, store_key
from headless_jax.data.tokenizer import Tokenizer, load_run_tokenizer, load_tokenizer

Batch = dict[str, np.ndarray]
# rows are slices of an in-memory (or mapped) cache: a few batches ahead hide their cost, where grain's default
# buffer would hold 500 batches
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def mixing_weights(row_counts: Sequence[int], alpha: float, weights: Sequence[float | None] = ()) -> np.ndarray:
    """Probability of drawing each source (float64): proportional to the sources' explicit `weights` when they
    all have one, else p_i ∝ n_i^alpha, n_i its number of rows.

    alpha = 1 draws rows uniformly, alpha = 0 sources uniformly; alpha ≈ 0.3 (XLM-R) lifts small sources
    (languages) without repeating them too often."""
    given = [w for w in weights if w is not None]
    if given and len(given) != len(row_counts):
        raise DataError("data.sources: give weight= to every source or to none (then p ∝ rows^data.mixing_alpha)")
    p = np.asarray(given, np.float64) if given else np.asarray(row_counts, np.float64) ** alpha
    return p / p.sum()


def mixed_row_ids(row_counts: Sequence[int], alpha: float, seed: int,
                  weights: Sequence[float | None] = ()) -> grain.MapDataset:
    """Endless (source, row) ids: each source shuffled by `seed`, afresh every epoch, and the sources interleaved
    in the proportions of mixing_weights (grain's deterministic mix, exact to 1% of the smallest weight). The
    weights may change between a run and its resume: the stream then continues with the new proportions."""
    per_source = [grain.MapDataset.range(count).shuffle(seed=_source_seed(seed, source)).repeat()
                  .map(functools.partial(_tag_with_source, source)) for source, count in enumerate(row_counts)]
    return grain.MapDataset.mix(per_source, mixing_weights(row_counts, alpha, weights).tolist())


def train_iterator(config: ml_collections.ConfigDict, tokenizer: Tokenizer, cache_dir: epath.PathLike,
                   process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
    """Endless training batches of this process: rows [p·b, (p+1)·b) of every global batch, b =
    global_batch_size / process_count, so that the processes' batches side by side are the global batch.

    The iterator's state counts global batches, whatever the process count: every process saves the same
    state, and any process's state resumes a run on another number of processes."""
    sources = _packed_rows(config, tokenizer, cache_dir, "train")
    local_batch_size = _local_batch_size(config, process_count)
    weights = [source.weight for source in parse_sources(config.data.sources)]
    ids = mixed_row_ids([len(rows) for rows in sources], config.data.mixing_alpha, config.seed, weights)
    # global batch s is local batches s·P .. s·P + P-1 of the id stream: this process takes every P-th
    local_ids = ids.batch(local_batch_size, drop_remainder=True).slice(slice(process_index, None, process_count))
    dataset = local_ids.map(functools.partial(_read_rows, dict(enumerate(sources)))).to_iter_dataset(_READ_OPTIONS)
    if config.data.worker_count > 0:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.worker_count))
    return iter(dataset)


def eval_batches(config: ml_collections.ConfigDict, tokenizer: Tokenizer, cache_dir: epath.PathLike,
                 num_batches: int, process_index: int = 0, process_count: int = 1) -> dict[str, list[Batch]]:
    """Per source (by name), `num_batches` fixed batches (this process's slice of each) of its held-out rows, in
    order: spread evenly over them so that every document counts, repeating rows when there are fewer."""
    _local_batch_size(config, process_count)  # its clear error for a batch that does not split over the processes
    wanted = num_batches * config.train.global_batch_size
    batches = {}
    for index, (source, rows) in enumerate(zip(parse_sources(config.data.sources),
                                               _packed_rows(config, tokenizer, cache_dir, "heldout"))):
        if not len(rows):
            raise DataError(f"data.sources: {source.spec!r}: the held-out split is shorter than one row of "
                            f"data.seq_len={config.data.seq_len} tokens; raise --config.data.heldout_fraction "
                            f"(now {config.data.heldout_fraction}) or lower data.seq_len")
        picked = np.arange(wanted) * len(rows) // wanted if wanted <= len(rows) else np.arange(wanted) % len(rows)
        sources_NxB = np.full((num_batches, wanted // num_batches), index)
        local = [process_rows({"source": s, "row": r}, process_index, process_count)
                 for s, r in zip(sources_NxB, picked.reshape(num_batches, -1))]
        batches[source.name] = [_read_rows({index: rows}, (ids["source"], ids["row"])) for ids in local]
    return batches


def process_rows(batch: Batch, process_index: int, process_count: int) -> Batch:
    """Process `process_index`'s share of a global batch: rows [p·b, (p+1)·b) of every array, b = B / count.
    Side by side in process order the shares are the global batch (what make_array_from_process_local_data
    assembles, and how train_iterator deals its batches)."""
    return {k: np.split(np.asarray(v), process_count)[process_index] for k, v in batch.items()}


def build_data(config: ml_collections.ConfigDict, workdir: epath.PathLike, process_index: int | None = None,
               process_count: int | None = None) -> tuple[Tokenizer, grain.DatasetIterator, dict[str, list[Batch]]]:
    """(tokenizer, training iterator, held-out eval batches per source) of an experiment, for this process
    (default: JAX's).

    With data.store the rows come from that prepared store (and its tokenizer, unless data.tokenizer_model is
    set); else the tokenizer and a store are built in data.cache_dir, or <workdir>/cache, by the first run. In a
    multi-process run process 0 builds them while the others wait at a barrier, then every process loads them
    (a process that does not see process 0's files, e.g. a local cache_dir on another host, builds its own:
    the build is deterministic, and all processes check that they hold the same tokenizer)."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    cache_dir = epath.Path(config.data.cache_dir or epath.Path(workdir) / "cache")
    if jax.process_count() > 1:
        if jax.process_index() == 0:
            token_store(config, data_tokenizer(config, cache_dir), cache_dir)
        multihost_utils.sync_global_devices("headless_jax: tokenizer and token store ready")
    tokenizer = data_tokenizer(config, cache_dir)
    if jax.process_count() > 1:
        multihost_utils.assert_equal(np.frombuffer(bytes.fromhex(tokenizer.fingerprint), np.uint32),
                                     f"the processes' tokenizers differ (one is {tokenizer.fingerprint}); give "
                                     "them one data.cache_dir they all see, or one data.tokenizer_model")
    train = train_iterator(config, tokenizer, cache_dir, process_index, process_count)
    evals = eval_batches(config, tokenizer, cache_dir, config.train.eval_batches, process_index, process_count)
    return tokenizer, train, evals


def data_tokenizer(config: ml_collections.ConfigDict, cache_dir: epath.PathLike) -> Tokenizer:
    """The tokenizer of the run's data: data.tokenizer_model, else the prepared store's, else one trained from
    data.sources (cached in `cache_dir`)."""
    if config.data.store and not config.data.tokenizer_model:
        return load_run_tokenizer(config.data.store, config.model.vocab_size)
    return load_tokenizer(config, cache_dir)


def token_store(config: ml_collections.ConfigDict, tokenizer: Tokenizer, cache_dir: epath.PathLike) -> TokenStore:
    """data.store, checked against this config (its sources, tokenizer, held-out fraction); else the automatic
    store of this config under `cache_dir`, built now where it is not complete (in this process)."""
    data, sources = config.data, parse_sources(config.data.sources)
    expected = manifest(sources, tokenizer, data.heldout_fraction, data.shard_chars)
    if data.store:
        store = TokenStore(data.store, expected)
        store.check_manifest(create=False)
        return store
    key = store_key(sources, tokenizer, data.heldout_fraction, data.shard_chars)
    store = TokenStore(epath.Path(cache_dir) / f"store_{key}", expected)
    store.build(sources, tokenizer)
    return store


def _packed_rows(config: ml_collections.ConfigDict, tokenizer: Tokenizer, cache_dir: epath.PathLike,
                 split: str) -> list[PackedRows]:
    """The `split` rows of each source; training needs at least one row of each."""
    data = config.data
    if data.packing not in PACKINGS:
        raise DataError(f"data.packing={data.packing!r} is unknown; set --config.data.packing to one of {PACKINGS}")
    store = token_store(config, tokenizer, cache_dir)
    rows_by_source = []
    for source in parse_sources(data.sources):
        stream = store.streams(source.name, split, data.range_reads)
        if split == "train" and not len(stream.tokens):
            raise no_text_error(source)
        rows = PackedRows(stream, data.seq_len, data.packing, tokenizer.pad_id)
        if split == "train" and not len(rows):
            raise DataError(f"data.sources: {source.spec!r} has {len(stream.tokens)} training tokens, less than one "
                            f"row of data.seq_len={data.seq_len}; add text, or lower data.seq_len")
        rows_by_source.append(rows)
    return rows_by_source


def _local_batch_size(config: ml_collections.ConfigDict, process_count: int) -> int:
    global_batch_size = config.train.global_batch_size
    if global_batch_size % process_count:
        raise DataError(f"train.global_batch_size={global_batch_size} does not split over {process_count} "
                        f"processes; set --config.train.global_batch_size to a multiple of {process_count}")
    return global_batch_size // process_count


def _source_seed(seed: int, source: int) -> int:
    """A distinct shuffle seed per source (grain seeds epoch e with seed + e, so seed + source would collide)."""
    return int(np.random.SeedSequence([seed, source]).generate_state(1)[0])


def _tag_with_source(source: int, row: int) -> tuple[int, int]:
    return source, row


def _read_rows(sources: dict[int, PackedRows], ids: tuple[np.ndarray, np.ndarray]) -> Batch:
    """The rows `ids` = (source_b, row_b) as one batch; `sources`: the rows of each source the ids name, by index."""
    source_b, row_b = ids
    batch = {"source_ids": np.asarray(source_b, np.int32)}
    for source, rows in sources.items():
        from_source = source_b == source
        if not from_source.any():
            continue
        for name, values in rows.read(row_b[from_source]).items():
            batch.setdefault(name, np.zeros((len(row_b), rows.seq_len), np.int32))[from_source] = values
    return batch
