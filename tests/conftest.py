"""Tests run on CPU with 8 fake devices; the flag must be set before JAX initialises its backends."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


import pytest  # noqa: E402

from headless_jax.data import book_names, read_book  # noqa: E402
from tests.main_runs import STEPS, run, train_losses  # noqa: E402


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A small text source (the start of a bundled novel) and a shared tokenizer/token cache."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "text").mkdir()
    (root / "text" / "book.txt").write_text(read_book(book_names()[0])[:60_000])
    return root


@pytest.fixture(scope="session")
def uninterrupted(corpus, tmp_path_factory):
    """A finished tiny run of STEPS steps (checkpoints every 10): the reference every interrupted run must equal.
    Tests copy it before changing anything."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = run(workdir, corpus)
    assert "held-out" in result.stdout + result.stderr
    losses = train_losses(workdir)
    assert losses[STEPS] < losses[1]
    return workdir
