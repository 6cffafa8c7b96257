"""The data layer: sources → SentencePiece tokenizer → token cache → packed rows → grain batches.

`build_data(config, workdir)` is what the training loop calls; the rest is public for evals and tests.
"""
from headless_jax.data.corpus import book_names, read_book, split_books
from headless_jax.data.errors import DataError, MissingDataError
from headless_jax.data.pipeline import Batch, build_data, eval_batches, mixing_weights, process_rows, train_iterator
from headless_jax.data.sources import Source, parse_sources
from headless_jax.data.tokenizer import Tokenizer, load_tokenizer
