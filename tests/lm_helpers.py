"""Tiny in-process pretraining runs for the LM-head and LM-evaluation tests (8 fake devices, seconds each)."""
from headless_jax.data import book_names, read_book
from headless_jax.loop import train
from test_configs import load_config


def book_text(directory) -> str:
    """A text file with the first 40k characters of a bundled novel; returns its path."""
    path = directory / "book.txt"
    if not path.exists():
        path.write_text(read_book(book_names()[0])[:40_000])
    return str(path)


def shrink(config, text: str, steps: int):
    """`config` at test size: 2 layers × 32, vocabulary 384, 32-token windows, batch 8, `steps` steps."""
    config.model.update(vocab_size=384, num_layers=2, d_model=32, num_heads=2, head_dim=16, mlp_dim=64, max_len=32)
    config.data.update(sources=f"text:{text}", seq_len=32)
    config.train.update(global_batch_size=8, num_steps=steps, eval_every=1000, eval_batches=1, checkpoint_every=1000,
                        log_every=1000)
    config.objective.cwt_group_size = 0
    return config


def tiny_run(workdir, text: str, config_name: str, steps: int):
    """Trains a shrunk `configs/<config_name>.py` in-process into `workdir`; returns the workdir."""
    train(shrink(load_config(config_name, None), text, steps), str(workdir))
    return workdir
