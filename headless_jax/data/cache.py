"""Cache files: names keyed by a hash of everything they depend on, written atomically so that an interrupted
run or several processes writing at once never leave half a file."""
import hashlib
import io
import uuid

import numpy as np
from etils import epath


def cache_key(*parts: object) -> str:
    """Short hash of `parts` (by repr) for a cache file name."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def write_atomically(path: epath.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    temporary.write_bytes(data)
    temporary.replace(path)


def save_array(path: epath.Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomically(path, buffer.getvalue())


def load_array(path: epath.Path) -> np.ndarray:
    if "://" in str(path):  # remote (gs://): read it whole
        return np.load(io.BytesIO(path.read_bytes()))
    return np.load(path, mmap_mode="r")  # local: mapped, so a large cache costs no memory up front
