"""Streaming reader and writer of the safetensors format, in numpy (bf16 via ml_dtypes).

Why our own: `safetensors.numpy` cannot read bf16, and loading a whole file would put a second copy of
the model in host memory. Here a read maps only the requested tensor and copies only the requested
slice (one device shard), and a write takes one tensor at a time from a producer.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Callable, Iterable

import ml_dtypes
import numpy as np

from uniarm_jax.errors import CheckpointError

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_CODES = {v: k for k, v in _DTYPES.items()}


class SafetensorsFile:
    """One `.safetensors` file: names, shapes and dtypes from its header; slices read on demand."""

    def __init__(self, path: str):
        self.path = path
        file_size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path} is not a safetensors file (shorter than its 8-byte header size)")
            (size,) = struct.unpack("<Q", raw)
            if 8 + size > file_size:
                raise CheckpointError(f"{path} is truncated or not a safetensors file: its header says {size} "
                                      f"bytes, but the file has {file_size} bytes in all")
            try:
                header = json.loads(f.read(size))
            except (json.JSONDecodeError, UnicodeDecodeError, MemoryError, OverflowError):
                raise CheckpointError(f"{path} is not a safetensors file (unreadable header)") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path} is not a safetensors file (its header is no mapping of tensors)")
        header.pop("__metadata__", None)
        self._data_start = 8 + size
        self._entries = {}
        for name, entry in header.items():
            self._entries[name] = self._checked(name, entry, file_size - self._data_start)

    def _checked(self, name: str, entry, data_bytes: int) -> dict:
        """A header entry whose dtype, shape and byte range agree with each other and with the file."""
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise CheckpointError(f"{self.path}: the header entry of tensor {name!r} is malformed; expected dtype, "
                                  "shape and data_offsets")
        if entry["dtype"] not in _DTYPES:
            raise CheckpointError(f"{self.path}: tensor {name!r} has dtype {entry['dtype']}; "
                                  f"expected one of {sorted(_DTYPES)}")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)
                and isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(n, int) for n in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise CheckpointError(f"{self.path}: tensor {name!r} has shape {shape} and data_offsets {offsets}; "
                                  "expected non-negative integers, offsets [start, end] with start <= end")
        nbytes = int(np.prod(shape, dtype=np.int64)) * _DTYPES[entry["dtype"]].itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise CheckpointError(f"{self.path}: tensor {name!r} of shape {shape} ({entry['dtype']}) needs {nbytes} "
                                  f"bytes; its data_offsets span {offsets[1] - offsets[0]}")
        if offsets[1] > data_bytes:
            raise CheckpointError(f"{self.path} is truncated: tensor {name!r} ends at byte {offsets[1]} of the data, "
                                  f"but the file holds only {data_bytes} bytes of data")
        return entry

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def dtype(self, name: str) -> np.dtype:
        return _DTYPES[self._entries[name]["dtype"]]

    def read(self, name: str, index: tuple = ()) -> np.ndarray:
        """A copy of `tensor[index]`; only the pages that hold the slice are touched."""
        entry = self._entries[name]
        shape, dtype = tuple(entry["shape"]), _DTYPES[entry["dtype"]]
        out = np.empty(sliced_shape(shape, index), dtype)
        self.read_into(name, index, out)
        return out

    def read_into(self, name: str, index: tuple, out: np.ndarray, transpose: bool = False) -> None:
        """`tensor[index]` (transposed if asked, cast to `out`'s dtype) written straight into `out`: the
        one copy a load needs, from the page cache to the array the device uses."""
        entry = self._entries[name]
        start, end = entry["data_offsets"]
        shape, dtype = tuple(entry["shape"]), _DTYPES[entry["dtype"]]
        if end == start:
            out[...] = 0
            return
        view = np.memmap(self.path, dtype=dtype, mode="r", offset=self._data_start + start, shape=shape)
        part = view[index]
        out[...] = part.T if transpose else part
        del view, part  # unmap now, so host memory holds only `out`


def sliced_shape(shape: tuple, index: tuple) -> tuple:
    """The shape of `array[index]` for an index of ints and slices (ints drop their dimension)."""
    index = tuple(index) + (slice(None),) * (len(shape) - len(index))
    return tuple(len(range(*i.indices(n))) for i, n in zip(index, shape) if isinstance(i, slice))


def save_safetensors(path: str, tensors: Iterable[tuple[str, tuple, np.dtype, Callable[[], np.ndarray]]],
                     metadata: dict | None = None) -> None:
    """Writes `(name, shape, dtype, produce)` entries; each `produce()` is called once, in order."""
    tensors = list(tensors)
    header, offset = {}, 0
    for name, shape, dtype, _ in tensors:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _CODES[np.dtype(dtype)], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data to 8 bytes
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype, produce in tensors:
            array = np.ascontiguousarray(produce(), dtype=dtype)
            if array.shape != tuple(shape):
                raise CheckpointError(f"tensor {name!r} has shape {array.shape}; the header says {tuple(shape)}")
            f.write(array.tobytes())
    os.replace(tmp, path)
