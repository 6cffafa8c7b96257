"""Hugging Face model directories (local or gs://): config.json, safetensors weights, tokenizer files.

Writing is all or nothing: everything goes to a sibling `<out>.partial` directory renamed into place at the end,
so an interrupted export leaves no directory that `from_pretrained` would half-read.
"""
import json
import struct

import ml_dtypes
import numpy as np
import safetensors.numpy
from etils import epath

from headless_jax.interop.errors import InteropError

CONFIG, WEIGHTS, WEIGHTS_INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"
TOKENIZER, TOKENIZER_CONFIG = "tokenizer.json", "tokenizer_config.json"


def check_writable(out: epath.PathLike) -> None:
    out = epath.Path(out)
    if out.exists() and any(out.iterdir()):
        raise InteropError(f"--out={out} exists and is not empty; give a new directory (an export never overwrites)")


def write(out: epath.PathLike, config: dict, tensors: dict[str, np.ndarray], tokenizer_json: str,
          tokenizer_config: dict) -> None:
    out = epath.Path(out)
    check_writable(out)
    partial = staging(out)
    (partial / WEIGHTS).write_bytes(safetensors.numpy.save(tensors, metadata={"format": "pt"}))
    (partial / CONFIG).write_text(_json(config))
    (partial / TOKENIZER).write_text(tokenizer_json)
    (partial / TOKENIZER_CONFIG).write_text(_json(tokenizer_config))
    publish(partial, out)


def staging(out: epath.Path) -> epath.Path:
    """A new, empty `<out>.partial` beside `out`, where a directory is written before publish() puts it in place."""
    partial = out.parent / f"{out.name}.partial"
    if partial.exists():
        partial.rmtree()
    partial.mkdir(parents=True)
    return partial


def publish(partial: epath.Path, out: epath.Path) -> None:
    """Renames the complete `partial` to `out` (which is absent or empty)."""
    if out.exists():
        out.rmdir()
    partial.rename(out)


def read_config(path: epath.PathLike) -> dict:
    path = epath.Path(path)
    if not (path / CONFIG).exists():
        raise InteropError(f"{path}: no {CONFIG}; point --hf at a Hugging Face model directory "
                         "(what save_pretrained writes)")
    return json.loads((path / CONFIG).read_text())


def read_tokenizer(path: epath.PathLike) -> str:
    path = epath.Path(path) / TOKENIZER
    if not path.exists():
        raise InteropError(f"{path.parent}: no {TOKENIZER}; save the model's fast tokenizer beside it "
                         "(AutoTokenizer.from_pretrained(...).save_pretrained(DIR)): the imported run needs its ids")
    return path.read_text()


def read_tensors(path: epath.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint in `path`: one model.safetensors, or the shards its index names."""
    path = epath.Path(path)
    if (path / WEIGHTS_INDEX).exists():
        files = sorted(set(json.loads((path / WEIGHTS_INDEX).read_text())["weight_map"].values()))
    elif (path / WEIGHTS).exists():
        files = [WEIGHTS]
    else:
        raise InteropError(f"{path}: no {WEIGHTS} (or {WEIGHTS_INDEX}); headless_jax reads safetensors only: "
                         "re-save the model with save_pretrained(DIR, safe_serialization=True)")
    tensors = {}
    for name in files:
        tensors.update(_load_safetensors((path / name).read_bytes()))
    return tensors


def _load_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """safetensors' NumPy loader, which has no bfloat16; a file that holds some (most checkpoints on the hub since
    Llama) is read from its header, the format's documented layout: a little-endian u64 header length, a JSON
    header of {name: {dtype, shape, data_offsets}}, then the bytes."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header.pop("__metadata__", None)
    if all(entry["dtype"] != "BF16" for entry in header.values()):
        return safetensors.numpy.load(data)
    dtypes = {"BF16": ml_dtypes.bfloat16, "F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
    body = memoryview(data)[8 + length:]
    return {name: np.frombuffer(body[entry["data_offsets"][0]:entry["data_offsets"][1]],
                                dtypes[entry["dtype"]]).reshape(entry["shape"])
            for name, entry in header.items()}


def _json(value: dict) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"
