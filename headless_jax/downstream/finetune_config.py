"""Keys of every sequence-classification config (configs/glue.py, xnli.py, books.py): `kind: classify`."""
import ml_collections

from headless_jax.config import base_config
from headless_jax.downstream.config import downstream_base_config


def classify_base_config(tasks: str) -> ml_collections.ConfigDict:
    c = downstream_base_config("classify")
    c.name = ""  # the row name in result tables; empty: the pretrained workdir's name
    c.tasks = tasks  # comma-separated task names, or glue (all nine GLUE tasks)
    c.data_source = "tfds"  # GLUE and XNLI: tfds (glue/<task>, xnli; ArrayRecord) | tsv (GLUE layout, XNLI-1.0)
    c.data_dir = ""  # TFDS data_dir, or the directory holding the GLUE task folders (CoLA/, SST-2/, ...)
    c.seq_len = 128
    c.pooling = "cls"  # cls | mean
    c.dropout_rate = 0.1  # before the classifier
    c.body_dropout_rate = 0.1  # replaces the pretraining model.dropout_rate while fine-tuning
    c.freeze_body = False  # True: a linear probe (only the head trains), to read the pretrained features as they are
    c.standardize_features = False  # with freeze_body: z-score the pooled features by their training-set statistics
    c.class_balanced = False  # the paper's class-balanced cross-entropy (weights N / (C·n_c))
    c.batch_size = 32
    c.eval_batch_size = 128
    c.epochs = 3
    c.num_seeds = 3  # seeds seed, seed+1, ...; results are their mean
    c.max_train_examples = 0  # >0: fine-tune on the first N training examples only
    c.warmup_fraction = 0.1  # of the fine-tuning steps (optim.warmup_steps follows from it)
    # Selection on a dev split (headless_jax/downstream/selection.py): with select_on, every rate of learning_rates
    # (comma-separated; empty: optim.learning_rate alone) × every seed is scored on that split after each epoch, the
    # rate and each seed's epoch are chosen on it alone, and the reported splits are scored once, at that point.
    # Empty select_on: one rate, every split scored after the last epoch.
    c.select_on = ""
    c.learning_rates = ""
    c.optim = base_config().optim
    c.optim.update(learning_rate=2e-5, schedule="linear", min_lr_ratio=0.0, weight_decay=0.01, b2=0.999,
                   eps=1e-6)
    del c.optim["warmup_steps"]

    x = c.xnli = ml_collections.ConfigDict()
    x.dir = ""  # data_source=tsv: the XNLI-1.0 directory (xnli.dev.tsv, xnli.test.tsv); tfds reads `xnli`
    x.split = "test"  # dev | test
    x.languages = ""  # comma-separated subset; empty: all 15

    b = c.books = ml_collections.ConfigDict()
    b.passage_words = 32
    b.passages_per_book = 0  # 0: as many as the shortest held-out tail gives (balanced)
    b.split_fractions = (0.6, 0.2, 0.2)  # train, dev, test
    b.train_passages_per_book = 0  # >0: fine-tune on each book's first K training passages (dev and test unchanged)
    return c
