"""The offline downstream task: which of the seven embedded novels does a held-out passage come from?

Runs on a fresh machine after the demo pretraining, a few minutes on CPU:
  python -m headless_jax.main --config=configs/demo.py --workdir=/tmp/demo
  python -m headless_jax.evaluate --config=configs/books.py --workdir=/tmp/books --config.pretrained=/tmp/demo
Passages come only from the held-out tails pretraining never saw; chance is 1/7 (14.3%). The learning rate
(of four) and each seed's epoch are chosen on the dev split, the test split is scored once at that point: every
pretrained model gets the same selection, no hand-picked rate. At demo scale it says little about pretraining
quality (names and word choice are learnt in fine-tuning: a 1-step "pretrained" model scores as well as the demo).
`configs/books.py:probe` is a linear probe of the pretrained features instead: the body frozen, a linear classifier
on the mean of its outputs, z-scored by their training-set statistics (only the classifier trains, so it reads what
pretraining put there, at any scale), its own grid.
"""
from headless_jax.downstream.finetune_config import classify_base_config


def get_config(setting: str | None = None):
    if setting not in (None, "probe"):
        raise ValueError(f"configs/books.py:{setting}: unknown setting; use configs/books.py or configs/books.py:probe")
    c = classify_base_config("books")
    c.seq_len = 64  # 32-word passages are ~45 tokens
    c.batch_size = 16
    c.eval_batch_size = 64
    c.epochs = 10
    c.optim.learning_rate = 3e-4  # a small model on a small task: higher than BERT-base's GLUE rate
    c.learning_rates = "1e-4,3e-4,1e-3,3e-3"  # the grid around it, selected on dev (docs/downstream.md)
    c.select_on = "dev"
    if setting == "probe":
        c.update(freeze_body=True, body_dropout_rate=0.0, pooling="mean", standardize_features=True, epochs=20)
        # Standardized features: a good encoder's probe picks 3e-3, a collapsed one's (ELECTRA at 600 steps) 1e-1.
        c.learning_rates = "3e-3,1e-2,3e-2,1e-1"
    return c
