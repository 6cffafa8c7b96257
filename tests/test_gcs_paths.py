"""gs:// paths for sources, tokenizer, token store and metrics, against an in-memory stand-in for GCS.

etils.epath hands gs:// paths to fsspec's "gcs" filesystem (gcsfs in production); the stand-in keeps files in
memory and, like GCS, cannot append. Checkpoints are not covered: Orbax writes arrays through TensorStore's
own GCS driver, which needs the network."""
import importlib

import numpy as np
import pytest
from etils import epath
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem

from headless_jax.config import base_config
from headless_jax.data import book_names, build_data, read_book
from headless_jax.data.tokenizer import RUN_TOKENIZER_FILE
from headless_jax.train import metrics as metrics_lib
from tests.test_multiprocess import tiny_config


class FakeGCS(MemoryFileSystem):
    """Paths 'bucket/key' as gcsfs names them; no append, as on GCS."""
    protocol = ("gs", "gcs")
    root_marker = ""
    store: dict = {}
    pseudo_dirs = [""]

    def __init__(self, *args, finalize_on_close=False, **kwargs):  # epath passes gcsfs's finalize_on_close
        super().__init__(*args, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        return str(path).removeprefix("gs://").removeprefix("gcs://").rstrip("/")

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode:
            raise NotImplementedError(f"{path}: GCS objects cannot be appended to")
        return super()._open(path, mode, **kwargs)


@pytest.fixture
def fake_gcs(monkeypatch):
    registry = importlib.import_module("fsspec.registry")._registry  # what fsspec.register_implementation fills
    for name in ("gs", "gcs"):
        monkeypatch.setitem(registry, name, FakeGCS)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # drop a real gcsfs filesystem cached earlier
    FakeGCS.store.clear()
    yield FakeGCS.store
    epath_backend.fsspec_backend._get_filesystem.cache_clear()


def test_data_from_and_caches_in_gs_match_local_ones(fake_gcs, tmp_path):
    text = read_book(book_names()[0])[:40_000]
    epath.Path("gs://bucket/data/book.txt").write_text(text)
    (tmp_path / "book.txt").write_text(text)
    remote = tiny_config("gs://bucket/data/*.txt")
    local = tiny_config(tmp_path / "book.txt")
    tokenizer, train, evals = build_data(remote, "gs://bucket/run")
    local_tokenizer, local_train, local_evals = build_data(local, tmp_path / "run")
    assert tokenizer.fingerprint == local_tokenizer.fingerprint
    for _ in range(2):
        np.testing.assert_array_equal(next(train)["tokens"], next(local_train)["tokens"])
    np.testing.assert_array_equal(evals["text"][0]["tokens"], local_evals["text"][0]["tokens"])
    cached = {key.split("/")[3].split("_")[0] for key in fake_gcs if key.startswith("bucket/run/cache/")}
    assert cached == {"tokenizer", "store"} and not any("tmp" in key for key in fake_gcs)
    shards = [key for key in fake_gcs if "/shards/" in key]
    assert shards and all(key.startswith("bucket/run/cache/store_") for key in shards)  # read back by ranges
    # a second run loads the cache instead of training a tokenizer again
    assert build_data(remote, "gs://bucket/run")[0].fingerprint == tokenizer.fingerprint
    tokenizer.save_to_run("gs://bucket/run")
    assert fake_gcs[f"bucket/run/{RUN_TOKENIZER_FILE}"].getvalue() == tokenizer.processor.serialized_model_proto()


@pytest.mark.parametrize("rewrite_every_s", [0.0, metrics_lib.REWRITE_EVERY_S])  # at each write | at close
def test_metrics_jsonl_in_gs_keeps_the_lines_of_earlier_runs(fake_gcs, monkeypatch, rewrite_every_s):
    monkeypatch.setattr(metrics_lib, "SummaryWriter", lambda logdir, purge_step=None: _NullSummaryWriter())  # real GCS
    monkeypatch.setattr(metrics_lib, "REWRITE_EVERY_S", rewrite_every_s)
    for step in (1, 2):  # a run, then its resumption from a checkpoint at step 1
        writer = metrics_lib.MetricsWriter("gs://bucket/run", base_config(), resumed_at=step - 1)
        writer.write(step, "train", {"loss": float(step)})
        writer.close()
    lines = epath.Path("gs://bucket/run/metrics.jsonl").read_text().splitlines()
    assert lines == ['{"step": 1, "split": "train", "loss": 1.0}', '{"step": 2, "split": "train", "loss": 2.0}']


class _NullSummaryWriter:
    def add_scalar(self, *args):
        pass

    def close(self):
        pass
