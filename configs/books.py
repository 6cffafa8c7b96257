"""The offline downstream task: which of the seven embedded novels does a held-out passage come from?

Runs on a fresh machine after the demo pretraining, a few minutes on CPU:
  python -m headless_jax.main --config=configs/demo.py --workdir=/tmp/demo
  python -m headless_jax.evaluate --config=configs/books.py --workdir=/tmp/books --config.pretrained=/tmp/demo
Passages come only from the held-out tails pretraining never saw; chance is 1/7 (14.3%). It proves the path
pretrain → fine-tune → score works offline; at demo scale it says little about pretraining quality (names and
word choice are learnt in fine-tuning: a 1-step "pretrained" model scores as well as the demo).
`--config.freeze_body=True` makes it a linear probe of the pretrained features.
"""
from headless_jax.downstream.finetune_config import classify_base_config


def get_config():
    c = classify_base_config("books")
    c.seq_len = 64  # 32-word passages are ~45 tokens
    c.batch_size = 16
    c.eval_batch_size = 64
    c.epochs = 10
    c.optim.learning_rate = 3e-4  # a small model on a small task: higher than BERT-base's GLUE rate
    return c
