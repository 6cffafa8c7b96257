"""Training and evaluation batches: dicts of int32 numpy arrays `tokens`, `segment_ids`, `positions`, each
[B, L] with B = this process's rows of the global batch.

Training streams are grain pipelines over (source, row) ids: each source reshuffled every epoch, sources
interleaved with weights p_i ∝ n_i^alpha, global batches of ids cut into per-process slices, and only this
process's rows read. Their iterators have get_state()/set_state() for checkpoints.

Several processes: process 0 trains the tokenizer and fills the token cache while the others wait (see
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
from headless_jax.data.sources import parse_sources
from headless_jax.data.tokenizer import Tokenizer, load_tokenizer
from headless_jax.data.tokens import tokenize_source

Batch = dict[str, np.ndarray]
# rows are slices of an in-memory (or mapped) cache: a few batches ahead hide their cost, where grain's default
# buffer would hold 500 batches
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def mixing_weights(row_counts: Sequence[int], alpha: float) -> np.ndarray:
    """Probability of drawing each source: p_i ∝ n_i^alpha, n_i its number of rows (float64).

    alpha = 1 draws rows uniformly, alpha = 0 sources uniformly; alpha ≈ 0.3 (XLM-R) lifts small sources
    (languages) without repeating them too often."""
    weights = np.asarray(row_counts, np.float64) ** alpha
    return weights / weights.sum()


def mixed_row_ids(row_counts: Sequence[int], alpha: float, seed: int) -> grain.MapDataset:
    """Endless (source, row) ids: each source shuffled by `seed`, afresh every epoch, and the sources interleaved
    in the proportions of mixing_weights (grain's deterministic mix, exact to 1% of the smallest weight)."""
    per_source = [grain.MapDataset.range(count).shuffle(seed=_source_seed(seed, source)).repeat()
                  .map(functools.partial(_tag_with_source, source)) for source, count in enumerate(row_counts)]
    return grain.MapDataset.mix(per_source, mixing_weights(row_counts, alpha).tolist())


def train_iterator(config: ml_collections.ConfigDict, tokenizer: Tokenizer, cache_dir: epath.PathLike,
                   process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
    """Endless training batches of this process: rows [p·b, (p+1)·b) of every global batch, b =
    global_batch_size / process_count, so that the processes' batches side by side are the global batch.

    The iterator's state counts global batches, whatever the process count: every process saves the same
    state, and any process's state resumes a run on another number of processes."""
    sources = _packed_rows(config, tokenizer, cache_dir, "train")
    local_batch_size = _local_batch_size(config, process_count)
    ids = mixed_row_ids([len(rows) for rows in sources], config.data.mixing_alpha, config.seed)
    # global batch s is local batches s·P .. s·P + P-1 of the id stream: this process takes every P-th
    local_ids = ids.batch(local_batch_size, drop_remainder=True).slice(slice(process_index, None, process_count))
    dataset = local_ids.map(functools.partial(_read_rows, sources)).to_iter_dataset(_READ_OPTIONS)
    if config.data.worker_count > 0:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data.worker_count))
    return iter(dataset)


def eval_batches(config: ml_collections.ConfigDict, tokenizer: Tokenizer, cache_dir: epath.PathLike,
                 num_batches: int, process_index: int = 0, process_count: int = 1) -> list[Batch]:
    """`num_batches` fixed batches (this process's slice of each) of held-out rows, in order: spread evenly
    over all held-out rows so that every document counts, repeating rows when there are fewer than needed."""
    sources = _packed_rows(config, tokenizer, cache_dir, "heldout")
    first_row = np.cumsum([0] + [len(rows) for rows in sources])  # of each source, in the rows of all sources
    total_rows, wanted = int(first_row[-1]), num_batches * config.train.global_batch_size
    if total_rows == 0:
        raise DataError(f"data.sources={config.data.sources}: the held-out split is shorter than one row of "
                        f"data.seq_len={config.data.seq_len} tokens; raise --config.data.heldout_fraction "
                        f"(now {config.data.heldout_fraction}) or lower data.seq_len")
    rows = np.arange(wanted) * total_rows // wanted if wanted <= total_rows else np.arange(wanted) % total_rows
    source_of_row = np.searchsorted(first_row, rows, "right") - 1
    _local_batch_size(config, process_count)  # its clear error for a batch that does not split over the processes
    source_NxB = source_of_row.reshape(num_batches, -1)
    row_NxB = (rows - first_row[source_of_row]).reshape(num_batches, -1)
    local = [process_rows({"source": s, "row": r}, process_index, process_count) for s, r in zip(source_NxB, row_NxB)]
    return [_read_rows(sources, (ids["source"], ids["row"])) for ids in local]


def process_rows(batch: Batch, process_index: int, process_count: int) -> Batch:
    """Process `process_index`'s share of a global batch: rows [p·b, (p+1)·b) of every array, b = B / count.
    Side by side in process order the shares are the global batch (what make_array_from_process_local_data
    assembles, and how train_iterator deals its batches)."""
    return {k: np.split(np.asarray(v), process_count)[process_index] for k, v in batch.items()}


def build_data(config: ml_collections.ConfigDict, workdir: epath.PathLike, process_index: int | None = None,
               process_count: int | None = None) -> tuple[Tokenizer, grain.DatasetIterator, list[Batch]]:
    """(tokenizer, training iterator, held-out eval batches) of an experiment, for this process (default: JAX's).

    Tokenizer and token caches live in data.cache_dir, or <workdir>/cache; the first run fills them. In a
    multi-process run process 0 fills them while the others wait at a barrier, then every process loads them
    (a process that does not see process 0's files, e.g. a local cache_dir on another host, builds its own:
    the build is deterministic, and all processes check that they hold the same tokenizer)."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    cache_dir = epath.Path(config.data.cache_dir or epath.Path(workdir) / "cache")
    _fill_caches_on_process_0(config, cache_dir)
    tokenizer = load_tokenizer(config, cache_dir)
    if jax.process_count() > 1:
        multihost_utils.assert_equal(np.frombuffer(bytes.fromhex(tokenizer.fingerprint), np.uint32),
                                     f"the processes' tokenizers differ (one is {tokenizer.fingerprint}); give "
                                     "them one data.cache_dir they all see, or one data.tokenizer_model")
    train = train_iterator(config, tokenizer, cache_dir, process_index, process_count)
    evals = eval_batches(config, tokenizer, cache_dir, config.train.eval_batches, process_index, process_count)
    return tokenizer, train, evals


def _fill_caches_on_process_0(config: ml_collections.ConfigDict, cache_dir: epath.Path) -> None:
    """Multi-process runs: the tokenizer is trained and the sources tokenised once, by process 0, before any
    other process looks for them; one process: nothing to do here."""
    if jax.process_count() == 1:
        return
    if jax.process_index() == 0:
        tokenizer = load_tokenizer(config, cache_dir)
        for source in parse_sources(config.data.sources):
            tokenize_source(source, tokenizer, config.data.heldout_fraction, cache_dir)
    multihost_utils.sync_global_devices("headless_jax: tokenizer and token cache ready")


def _packed_rows(config: ml_collections.ConfigDict, tokenizer: Tokenizer, cache_dir: epath.PathLike,
                 split: str) -> list[PackedRows]:
    """The `split` rows of each source; training needs at least one row of each."""
    data = config.data
    if data.packing not in PACKINGS:
        raise DataError(f"data.packing={data.packing!r} is unknown; set --config.data.packing to one of {PACKINGS}")
    rows_by_source = []
    for source in parse_sources(data.sources):
        stream = tokenize_source(source, tokenizer, data.heldout_fraction, cache_dir)[split]
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


def _read_rows(sources: list[PackedRows], ids: tuple[np.ndarray, np.ndarray]) -> Batch:
    """The rows `ids` = (source_b, row_b) as one batch."""
    source_b, row_b = ids
    batch = {}
    for source, rows in enumerate(sources):
        from_source = source_b == source
        for name, values in rows.read(row_b[from_source]).items():
            batch.setdefault(name, np.zeros((len(row_b), rows.seq_len), np.int32))[from_source] = values
    return batch
