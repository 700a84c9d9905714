"""Read a PyTorch state-dict file into NumPy arrays without PyTorch.

`torch.save` writes a zip holding `<prefix>/data.pkl` (a pickle of the dict) and one raw file per
tensor storage under `<prefix>/data/`. A pickle can call any importable function while it loads,
so reading one is running code from the file. This reader is therefore a security boundary: its
unpickler resolves only the handful of names a tensor state dict needs, maps each onto a NumPy
stand-in, and refuses every other name with `StateDictError` before anything is called.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# Storage classes by the name the pickle refers to them, with the little-endian layout of one
# element. BFloat16 has no NumPy type: it is read as raw 16-bit words and widened below.
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}

# Storage keys are the decimal or hex names torch gives its files; anything else (a path with
# separators, say) is not something torch writes.
_STORAGE_KEY = re.compile(r"^[0-9A-Za-z_]{1,64}$")


class StateDictError(ValueError):
    """The file is not a PyTorch tensor state dict this reader accepts."""


@dataclass(frozen=True)
class _StorageType:
    """What the unpickler hands out in place of `torch.FloatStorage` and friends."""

    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class _Storage:
    """One storage file, already read and viewed as a flat array of its element type."""

    values: npt.NDArray[Any]
    storage_type: _StorageType


def _rebuild_tensor(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> npt.NDArray[Any]:
    """Stand-in for `torch._utils._rebuild_tensor_v2`: a copy of the strided view."""
    del requires_grad, backward_hooks, metadata  # training-time state, meaningless here
    if not isinstance(storage, _Storage):
        raise StateDictError("a tensor refers to something that is not a storage")
    offset = _non_negative_int(storage_offset, "storage offset")
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise StateDictError(f"tensor size {shape} and stride {strides} differ in rank")
    flat = storage.values
    count = int(np.prod(shape, dtype=np.int64))
    if count > flat.size:
        # A state dict never stores broadcast (stride-0) views; a tensor bigger than its storage
        # is either that or a memory bomb, and either way not something to copy out.
        raise StateDictError(f"tensor of size {shape} is larger than its storage")
    if count == 0:
        result = np.zeros(shape, dtype=flat.dtype)
    else:
        last = offset + sum(
            (extent - 1) * step for extent, step in zip(shape, strides, strict=True)
        )
        if last >= flat.size:
            raise StateDictError(
                f"tensor of size {shape}, stride {strides} at offset {offset} runs past the end "
                f"of its storage of {flat.size} elements"
            )
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:],
            shape=shape,
            strides=tuple(step * itemsize for step in strides),
            writeable=False,
        )
        result = np.array(view, copy=True)
    if storage.storage_type.name == "BFloat16Storage":
        # bfloat16 is the top half of a float32, so widening is exact.
        return (result.astype(np.uint32) << 16).view(np.float32)
    return result.astype(result.dtype.newbyteorder("="), copy=False)


def _rebuild_parameter(
    data: object, requires_grad: object = False, backward_hooks: object = None
) -> npt.NDArray[Any]:
    """Stand-in for `torch._utils._rebuild_parameter`: a parameter is just its tensor here."""
    del requires_grad, backward_hooks
    if not isinstance(data, np.ndarray):
        raise StateDictError("a parameter wraps something that is not a tensor")
    return data


def _non_negative_int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StateDictError(f"tensor {what} {value!r} is not a non-negative integer")
    return value


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple):
        raise StateDictError(f"tensor {what} {value!r} is not a tuple")
    return tuple(_non_negative_int(item, what) for item in value)


_ALLOWED_CALLABLES: dict[tuple[str, str], Callable[..., object]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream: io.BytesIO, read_storage: Callable[[str], bytes]) -> None:
        super().__init__(stream)
        self._read_storage = read_storage
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_CALLABLES.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise StateDictError(
            f"the state dict refers to {module}.{name}, which a plain tensor state dict never "
            "does; refusing to load it (it could run arbitrary code)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise StateDictError(f"unexpected persistent reference {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise StateDictError(f"storage of unknown type {storage_type!r:.80}")
        if not (isinstance(key, str) and _STORAGE_KEY.match(key)):
            raise StateDictError(f"malformed storage key {key!r:.80}")
        count = _non_negative_int(numel, "storage element count")
        cached = self._storages.get(key)
        if cached is not None:
            return cached
        raw = self._read_storage(key)
        needed = count * storage_type.dtype.itemsize
        if len(raw) < needed:
            raise StateDictError(
                f"storage {key} holds {len(raw)} bytes, {needed} needed for {count} elements"
            )
        values = np.frombuffer(raw, dtype=storage_type.dtype, count=count)
        storage = _Storage(values, storage_type)
        self._storages[key] = storage
        return storage


def load_state_dict(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Return the tensors of a `torch.save`d state dict, by parameter name, as NumPy arrays.

    Only the zip format of PyTorch >= 1.6 with little-endian storages is read. Raises
    `StateDictError` for anything else, and for any pickle that names a callable outside the
    tensor-rebuild set.
    """
    try:
        bundle = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise StateDictError(
            f"{path} is not a zip-format PyTorch file (legacy tar/pickle files are not read)"
        ) from error
    with bundle:
        names = bundle.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise StateDictError(f"{path}: expected one <prefix>/data.pkl, found {pickles}")
        prefix = pickles[0].removesuffix("data.pkl")
        byteorder_name = prefix + "byteorder"
        if byteorder_name in names and bundle.read(byteorder_name).strip() != b"little":
            raise StateDictError(f"{path}: big-endian storages are not supported")

        def read_storage(key: str) -> bytes:
            try:
                return bundle.read(f"{prefix}data/{key}")
            except KeyError:
                raise StateDictError(f"{path}: storage {key} is missing") from None

        unpickler = _RestrictedUnpickler(io.BytesIO(bundle.read(pickles[0])), read_storage)
        try:
            loaded = unpickler.load()
        except StateDictError:
            raise
        except Exception as error:
            # Only the stand-ins above are reachable from the pickle, so whatever else goes wrong
            # is a malformed file (BUILD opcodes aimed at the wrong object, truncated streams...).
            raise StateDictError(f"{path}: malformed state dict pickle: {error!r}") from error
    if not isinstance(loaded, dict):
        raise StateDictError(f"{path}: the pickle holds a {type(loaded).__name__}, not a dict")
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise StateDictError(f"{path}: entry {name!r:.80} is not a named tensor")
        tensors[name] = value
    return tensors
