"""lm-evaluation-harness tasks on a pretrained decoder, in process (headless_jax/downstream/harness.py).

`python -m headless_jax.evaluate --config=configs/harness.py --workdir=DIR --config.pretrained=RUN
--config.tasks=lambada_openai` (the harness downloads its data sets: run it where the hub is reachable, or
with them cached). Offline, a local task file: `--config.include_path=configs/harness_tasks
--config.tasks=last_word_local` with HF_DATASETS_OFFLINE=1 (docs/interop.md).
"""
from headless_jax.downstream.config import downstream_base_config


def get_config():
    c = downstream_base_config("harness")
    c.tasks = "lambada_openai"  # comma-separated harness task names
    c.include_path = ""  # a directory of task YAML files, added to the harness's own
    c.num_fewshot = -1  # -1: each task's default
    c.limit = 0  # >0: at most this many documents per task (a quick look, not a score)
    c.seq_len = 0  # window length; 0: the pretraining run's data.seq_len
    c.batch_size = 32  # rows per scoring step (rounded up to a multiple of the batch shards)
    c.vocab_chunk = 4096  # vocabulary rows scored at a time
    c.context_eos = True  # contexts start with eos, as documents do in pretraining; False: as lm-eval's HF backend
    c.max_gen_toks = 256  # generate_until: the most tokens a request generates unless its task sets max_gen_toks
    return c
