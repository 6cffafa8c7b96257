"""What the Hugging Face layouts share: a table of (HF tensor name ↔ our parameters, codec), read both ways.

Our kernels keep their heads as axes ([D,H,K] for a query, [H,K,D] for the attention output) and are applied as
`x @ kernel`; a PyTorch `nn.Linear` stores `weight [out, in]` applied as `x @ weightᵀ`. A codec turns our
arrays into one HF tensor and back, given our shapes; every codec is a transpose or reshape, so a round trip is
bit-exact. Layers are listed one by one whether our model scans them (a leading layer axis) or not.
"""
import dataclasses
import math
from collections.abc import Callable

import numpy as np

from headless_jax.model import BODY

Path = tuple[str, ...]  # a parameter's path in our params tree, e.g. (BODY, "embed", "embedding")


@dataclasses.dataclass(frozen=True)
class Codec:
    """to_hf(our arrays) → the HF tensor; from_hf(HF tensor, our shapes) → our arrays; hf_shape(our shapes) → the
    HF tensor's shape."""
    to_hf: Callable[[list[np.ndarray]], np.ndarray]
    from_hf: Callable[[np.ndarray, list[tuple[int, ...]]], list[np.ndarray]]
    hf_shape: Callable[[list[tuple[int, ...]]], tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class Entry:
    hf: str
    ours: tuple[Path, ...]  # several for a fused HF tensor (GPT-NeoX's query_key_value)
    codec: Codec


COPY = Codec(lambda arrays: arrays[0], lambda tensor, shapes: [tensor], lambda shapes: tuple(shapes[0]))
FLAT = Codec(lambda arrays: arrays[0].reshape(-1), lambda tensor, shapes: [tensor.reshape(shapes[0])],
             lambda shapes: (math.prod(shapes[0]),))  # a bias [H,K] ↔ [H·K]


def linear(in_axes: int) -> Codec:
    """A kernel whose first `in_axes` axes are the input ([D,H,K]: 1; [H,K,D]: 2) ↔ nn.Linear's [out, in]."""
    def to_hf(arrays):
        kernel = arrays[0]
        return kernel.reshape(math.prod(kernel.shape[:in_axes]), -1).T

    def hf_shape(shapes):
        return math.prod(shapes[0][in_axes:]), math.prod(shapes[0][:in_axes])
    return Codec(to_hf, lambda tensor, shapes: [tensor.T.reshape(shapes[0])], hf_shape)


def per_head_interleaved(codec_of_one: Codec) -> Codec:
    """GPT-NeoX's fused query_key_value: per head its query, key and value rows ([H, 3, K] on the output axis).
    `codec_of_one` is the codec of one of them (linear(1) for kernels [D,H,K], FLAT for biases [H,K])."""
    def fused_shape(shapes):
        *lead, heads, dim = shapes[0]
        return [(*lead, 3 * heads, dim)]

    def to_hf(arrays):  # arrays: query, key, value, each [..., H, K]
        fused = np.stack(arrays, axis=-2)  # [..., H, 3, K]
        return codec_of_one.to_hf([fused.reshape(*fused.shape[:-3], -1, fused.shape[-1])])

    def from_hf(tensor, shapes):
        *lead, heads, dim = shapes[0]
        fused = codec_of_one.from_hf(tensor, fused_shape(shapes))[0].reshape(*lead, heads, 3, dim)
        return [fused[..., i, :] for i in range(3)]
    return Codec(to_hf, from_hf, lambda shapes: codec_of_one.hf_shape(fused_shape(shapes)))


def dense(hf: str, ours: Path, in_axes: int, layer: int | None) -> list[tuple[Entry, int | None]]:
    """An nn.Linear `hf` (weight, bias) ↔ our Dense or Projection `ours` (kernel, bias)."""
    return [(Entry(f"{hf}.weight", (ours + ("kernel",),), linear(in_axes)), layer),
            (Entry(f"{hf}.bias", (ours + ("bias",),), FLAT), layer)]


def layer_norm(hf: str, ours: Path, layer: int | None) -> list[tuple[Entry, int | None]]:
    """An nn.LayerNorm `hf` (weight, bias) ↔ our Norm `ours` (scale, bias)."""
    return [(Entry(f"{hf}.weight", (ours + ("scale",),), COPY), layer),
            (Entry(f"{hf}.bias", (ours + ("bias",),), COPY), layer)]


def layer_path(scanned: bool, index: int, *rest: str) -> Path:
    """Where layer `index`'s parameter `rest` lives: (body, layer_i, …), or (body, layers, …) when scanned."""
    return (BODY, "layers" if scanned else f"layer_{index}", *rest)


def read(flat: dict[Path, np.ndarray], path: Path, scanned: bool, index: int | None) -> np.ndarray:
    """Parameter `path` of layer `index` (None: not a layer parameter) from a flat params dict."""
    array = flat[path]
    return array[index] if scanned and index is not None else array


def to_hf(table: list[tuple[Entry, int | None]], flat: dict[Path, np.ndarray], scanned: bool) -> dict[str, np.ndarray]:
    """HF tensors (float32, contiguous) of our flat params; `table` pairs each entry with its layer index."""
    return {entry.hf: np.ascontiguousarray(entry.codec.to_hf([read(flat, p, scanned, layer) for p in entry.ours]),
                                           np.float32)
            for entry, layer in table}


def from_hf(table: list[tuple[Entry, int | None]], tensors: dict[str, np.ndarray], shapes: dict[Path, tuple],
            scanned: bool, num_layers: int) -> dict[Path, np.ndarray]:
    """Our flat params from HF `tensors`, shaped as `shapes` (our model's, scanned or not)."""
    parts: dict[Path, list] = {}
    for entry, layer in table:
        scanned_layer = scanned and layer is not None
        wanted = [shapes[p][1:] if scanned_layer else shapes[p] for p in entry.ours]
        tensor, expected = tensors[entry.hf], entry.codec.hf_shape(wanted)
        if tuple(tensor.shape) != expected:
            raise ValueError(f"{entry.hf} has shape {tuple(tensor.shape)}, this model needs {expected}")
        arrays = entry.codec.from_hf(np.asarray(tensor, np.float32), wanted)
        for path, array in zip(entry.ours, arrays):
            if scanned_layer:
                parts.setdefault(path, [None] * num_layers)[layer] = array
            else:
                parts[path] = array
    return {path: np.stack(value) if isinstance(value, list) else value for path, value in parts.items()}
