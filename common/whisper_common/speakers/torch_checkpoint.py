"""Reads the tensors of a PyTorch checkpoint in torch's legacy (pre-1.6, non-zip) format into numpy, without
importing torch: importing it costs ~450 MB of resident memory, more than the embedded diarizer needs in all.

The legacy format is a run of pickles: a magic number, the protocol version, system info, the object itself (its
tensors refer to storages by key through pickle's persistent ids), the list of storage keys, and then each storage's
raw bytes (an int64 element count, then the elements) in that order. Only plain containers and tensors are
accepted: any other class named by the pickle is refused, so loading runs no code from the file.
"""
from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a legacy PyTorch checkpoint this reader can load safely."""


@dataclass
class _Storage:
    dtype: type
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        assert self.storage.data is not None
        itemsize = self.storage.data.itemsize
        flat = self.storage.data[self.offset :]
        strides = tuple(step * itemsize for step in self.stride)
        return np.lib.stride_tricks.as_strided(flat, shape=self.shape, strides=strides).copy()


def _rebuild_tensor(storage: _Storage, offset: int, shape: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(tensor: _TensorRef, *_: Any) -> _TensorRef:
    return tensor


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = STORAGE_DTYPES[name]


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"checkpoint refers to {module}.{name}, which this reader does not load")

    def persistent_load(self, saved_id: Any) -> _Storage:
        if not (isinstance(saved_id, tuple) and saved_id and saved_id[0] == "storage"):
            raise CheckpointError(f"unsupported persistent id {saved_id!r:.80}")
        storage_type, key = saved_id[1], str(saved_id[2])
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type.dtype)
        return self.storages[key]


def _materialise(value: Any) -> Any:
    if isinstance(value, _TensorRef):
        return value.array()
    if isinstance(value, dict):
        return type(value)((key, _materialise(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialise(item) for item in value)
    return value


def load_legacy_checkpoint(path: Path) -> Any:
    """The checkpoint's object, with every tensor as a numpy array."""
    with open(path, "rb") as file:
        if file.read(2)[:1] == b"PK":
            raise CheckpointError(f"{path.name} is a zip-format checkpoint; only the legacy format is read")
        file.seek(0)
        try:
            if pickle.load(file) != LEGACY_MAGIC or pickle.load(file) != LEGACY_PROTOCOL:
                raise CheckpointError(f"{path.name} is not a legacy PyTorch checkpoint")
            pickle.load(file)  # system info (endianness, type sizes)
            storages: dict[str, _Storage] = {}
            result = _Unpickler(file, storages).load()
            keys = pickle.load(file)
        except (pickle.UnpicklingError, EOFError) as exc:
            raise CheckpointError(f"{path.name} could not be read: {exc}") from exc
        for key in keys:
            storage = storages[str(key)]
            count = int(np.frombuffer(file.read(8), dtype="<i8")[0])
            raw = file.read(count * np.dtype(storage.dtype).itemsize)
            storage.data = np.frombuffer(raw, dtype=np.dtype(storage.dtype).newbyteorder("<")).astype(storage.dtype)
    return _materialise(result)
