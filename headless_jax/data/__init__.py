"""The data layer: sources → tokenizer → token store (shards) → packed rows → grain batches.

`build_data(config, workdir)` is what the training loop calls; `TokenStore.build` is what
`python -m headless_jax.prepare` runs on every worker; the rest is public for evals and tests.
"""
from headless_jax.data.corpus import book_names, read_book, split_books
from headless_jax.data.errors import DataError, MissingDataError
from headless_jax.data.pipeline import (Batch, build_data, data_tokenizer, eval_batches, mixing_weights, process_rows,
                                        token_store, train_iterator)
from headless_jax.data.sources import Source, parse_sources
from headless_jax.data.store import TokenStore, manifest
from headless_jax.data.tokenizer import Tokenizer, load_tokenizer
