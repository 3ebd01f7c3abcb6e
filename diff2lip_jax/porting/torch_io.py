"""Read PyTorch `.pt/.pth` checkpoints into numpy without executing pickled code.

Checkpoints are pickles, and unpickling an untrusted file can run arbitrary code. The restricted
unpickler here resolves only the globals a tensor state dict needs (tensor rebuild functions,
storage types, `collections.OrderedDict`); any other global is refused before it can be called.

Both on-disk formats are read natively (torch is not needed):
  * zip format (torch >= 1.6): `<archive>/data.pkl` + one entry per storage `<archive>/data/<key>`;
  * legacy format: a sequence of pickles (magic, protocol, sys info, object, storage keys)
    followed by the raw storages (int64 element count + bytes each).
The pre-2017 tar format is delegated to `torch.load(weights_only=True)` when torch is installed.
"""
from __future__ import annotations

import codecs
import collections
import contextlib
import dataclasses
import io
import os
import pickle
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
}
# torch dtype globals, referenced by _rebuild_tensor_v3 (tensor dtype differing from storage's).
_TORCH_DTYPES = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16, "int64": np.int64, "int32": np.int32, "int16": np.int16,
    "int8": np.int8, "uint8": np.uint8, "bool": np.bool_, "complex64": np.complex64,
    "complex128": np.complex128, "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2,
}
_AUTO_KEYS = ("state_dict", "model_state_dict", "model", "ema")


class UnsafeCheckpointError(ValueError):
  """The checkpoint references code or objects that a tensor state dict never needs."""


class StateDictMismatchError(ValueError):
  """A state dict does not match the parameters a model expects."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
  """A storage (flat buffer) of the file, resolved lazily; `view` = (element offset, size)."""
  key: str
  dtype: np.dtype
  numel: int
  view: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class _LazyTensor:
  storage: _StorageRef
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]
  dtype: np.dtype


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _LazyTensor:
  if not isinstance(storage, _StorageRef):
    raise UnsafeCheckpointError(f"tensor rebuilt from a non-storage object {type(storage)!r}")
  return _LazyTensor(storage, int(storage_offset), tuple(int(s) for s in size),
                     tuple(int(s) for s in stride), storage.dtype)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype,
                       *unused) -> _LazyTensor:
  t = _rebuild_tensor(storage, storage_offset, size, stride)
  if not isinstance(dtype, np.dtype):
    raise UnsafeCheckpointError(f"tensor dtype {dtype!r} is not a known torch dtype")
  return dataclasses.replace(t, dtype=dtype)


def _codecs_encode(text, encoding="utf-8"):
  # Protocol-2 pickles write `bytes` as _codecs.encode(str, "latin1").
  if not isinstance(text, str) or not isinstance(encoding, str):
    raise UnsafeCheckpointError("_codecs.encode called with non-string arguments")
  return codecs.encode(text, encoding)


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): lambda data, *unused: data,
    ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *unused: data,
    ("torch", "Size"): tuple,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
}
_SAFE_GLOBALS.update({("torch", name): _StorageType(name, np.dtype(dt))
                      for name, dt in _STORAGE_DTYPES.items()})
_SAFE_GLOBALS.update({("torch", name): np.dtype(dt) for name, dt in _TORCH_DTYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only allow-listed globals; storages become `_StorageRef`s (read later)."""

  def __init__(self, file, source: str):
    super().__init__(file, encoding="utf-8")
    self._source = source
    self.storages: dict[str, _StorageRef] = {}

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _SAFE_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafeCheckpointError(
          f"{self._source}: refusing to load global '{module}.{name}'. Only tensor state dicts "
          "are read (no code or arbitrary objects is executed). Re-save the checkpoint as "
          "`torch.save(model.state_dict(), path)` from trusted code.") from None

  def persistent_load(self, pid: Any) -> _StorageRef:
    if not isinstance(pid, tuple) or not pid:
      raise UnsafeCheckpointError(f"{self._source}: malformed persistent id {pid!r}")
    typename = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if typename == "module":
      raise UnsafeCheckpointError(
          f"{self._source}: the file contains a pickled torch.nn.Module ({pid[1]!r}), not a "
          "state dict. Re-save with `torch.save(model.state_dict(), path)`.")
    if typename != "storage" or len(pid) not in (5, 6):
      raise UnsafeCheckpointError(f"{self._source}: unknown persistent id {pid!r}")
    storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise UnsafeCheckpointError(f"{self._source}: unsupported storage type {storage_type!r}")
    view = None
    if len(pid) == 6 and pid[5] is not None:
      _, view_offset, view_size = pid[5]
      view = (int(view_offset), int(view_size))
    root = self.storages.setdefault(str(key), _StorageRef(str(key), storage_type.dtype,
                                                          int(numel)))
    return dataclasses.replace(root, view=view) if view else root


def _unpickle(data: bytes | io.BufferedIOBase, source: str,
              storages: dict[str, _StorageRef] | None = None) -> Any:
  stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
  unpickler = _RestrictedUnpickler(stream, source)
  obj = unpickler.load()
  if storages is not None:
    storages.update(unpickler.storages)
  return obj


def _materialize(tensor: _LazyTensor, read_storage: Callable[[_StorageRef], np.ndarray],
                 source: str) -> np.ndarray:
  flat = read_storage(tensor.storage)
  if tensor.storage.view is not None:
    start, size = tensor.storage.view
    flat = flat[start:start + size]
  if tensor.dtype != flat.dtype:
    flat = flat.view(tensor.dtype)
  shape, stride, offset = tensor.shape, tensor.stride, tensor.offset
  if len(shape) != len(stride) or any(s < 0 for s in shape) or any(s < 0 for s in stride):
    raise ValueError(f"{source}: invalid tensor layout size={shape} stride={stride}")
  if 0 in shape:
    return np.zeros(shape, flat.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
  if offset < 0 or last >= flat.size:
    # as_strided would read outside the buffer: a corrupt or hostile file.
    raise ValueError(f"{source}: tensor (size={shape}, stride={stride}, offset={offset}) "
                     f"runs past its storage of {flat.size} elements; the file is corrupt")
  item = flat.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(flat[offset:], shape=shape,
                                         strides=tuple(s * item for s in stride), writeable=False)
  return np.array(view, copy=True)


def _map_tensors(obj: Any, fn: Callable[[Any], Any], leaf_type: type = _LazyTensor) -> Any:
  if isinstance(obj, leaf_type):
    return fn(obj)
  if isinstance(obj, dict):  # dict or OrderedDict (the only mappings the unpickler makes)
    return type(obj)((k, _map_tensors(v, fn, leaf_type)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_map_tensors(v, fn, leaf_type) for v in obj)
  if isinstance(obj, _StorageRef):
    raise ValueError("bare storages (not tensors) are not supported")
  return obj


class _Reader:
  """An opened checkpoint: its lazily-unpickled object and a storage reader."""

  def __init__(self, path: str | os.PathLike):
    self.source = os.fspath(path)
    self._cache: dict[str, np.ndarray] = {}
    self._zip: zipfile.ZipFile | None = None
    self._zip_prefix = ""
    self._legacy_storages: dict[str, bytes] = {}
    self._big_endian = False
    if not os.path.isfile(self.source):
      raise FileNotFoundError(f"checkpoint not found: {self.source}")
    if zipfile.is_zipfile(self.source):
      self._open_zip()
    else:
      self._open_legacy()

  def close(self) -> None:
    if self._zip is not None:
      self._zip.close()

  def _open_zip(self) -> None:
    with zipfile.ZipFile(self.source) as zf:
      names = zf.namelist()
      pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
      if not pkl:
        hint = " (a TorchScript archive?)" if any("/code/" in n for n in names) else ""
        raise ValueError(f"{self.source}: zip file without '<archive>/data.pkl'{hint}; "
                         "not a torch.save checkpoint")
      self._zip_prefix = pkl[0][: -len("data.pkl")]
      order = f"{self._zip_prefix}byteorder"
      self._big_endian = order in names and zf.read(order).strip() == b"big"
      self.obj = _unpickle(zf.read(pkl[0]), self.source)
    # Kept open only once the pickle was accepted: storages are read lazily, on selection.
    self._zip = zipfile.ZipFile(self.source)

  def _open_legacy(self) -> None:
    if tarfile.is_tarfile(self.source):
      self.obj = _load_tar_with_torch(self.source)
      return
    with open(self.source, "rb") as f:
      try:
        magic = _unpickle(f, self.source)
      except UnsafeCheckpointError:
        raise
      except Exception as e:  # any parse failure of a non-pickle file
        raise ValueError(f"{self.source}: not a PyTorch checkpoint (neither zip nor legacy "
                         f"pickle format): {type(e).__name__}: {e}") from None
      if magic != _LEGACY_MAGIC:
        raise ValueError(f"{self.source}: not a PyTorch checkpoint (bad magic number)")
      if _unpickle(f, self.source) != _LEGACY_PROTOCOL:
        raise ValueError(f"{self.source}: unsupported legacy protocol version")
      sys_info = _unpickle(f, self.source)
      self._big_endian = not sys_info.get("little_endian", True)
      refs: dict[str, _StorageRef] = {}
      self.obj = _unpickle(f, self.source, refs)
      keys = _unpickle(f, self.source)
      for key in keys:
        count = int(np.frombuffer(f.read(8), "<i8")[0])
        if str(key) not in refs:
          raise ValueError(f"{self.source}: storage '{key}' is not referenced; corrupt file")
        itemsize = refs[str(key)].dtype.itemsize
        raw = f.read(count * itemsize)
        if len(raw) != count * itemsize:
          raise ValueError(f"{self.source}: truncated file (storage {key})")
        self._legacy_storages[str(key)] = raw

  def read_storage(self, ref: _StorageRef) -> np.ndarray:
    if ref.key in self._cache:
      return self._cache[ref.key].view(ref.dtype)
    if self._zip is not None:
      try:
        raw = self._zip.read(f"{self._zip_prefix}data/{ref.key}")
      except KeyError:
        raise ValueError(f"{self.source}: storage '{ref.key}' missing from archive") from None
    else:
      if ref.key not in self._legacy_storages:
        raise ValueError(f"{self.source}: storage '{ref.key}' missing from file")
      raw = self._legacy_storages[ref.key]
    dtype = ref.dtype.newbyteorder(">") if self._big_endian else ref.dtype
    arr = np.frombuffer(raw, dtype=dtype).astype(ref.dtype, copy=False)
    if arr.size < ref.numel:
      raise ValueError(f"{self.source}: storage '{ref.key}' holds {arr.size} elements, "
                       f"{ref.numel} expected; the file is corrupt")
    self._cache[ref.key] = arr
    return arr

  def materialize(self, obj: Any) -> Any:
    return _map_tensors(obj, lambda t: _materialize(t, self.read_storage, self.source))


def _load_tar_with_torch(path: str) -> Any:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ValueError(f"{path}: pre-2017 tar-format torch checkpoint; install torch to read it, "
                     "or re-save it with a recent torch") from None

  def to_numpy(x):
    if x.dtype == torch.bfloat16:
      return x.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return x.detach().numpy()
  return _map_tensors(torch.load(path, map_location="cpu", weights_only=True), to_numpy,
                      torch.Tensor)


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
  """The whole unpickled checkpoint (dicts/lists/scalars), every tensor as a numpy array."""
  with contextlib.closing(_Reader(path)) as reader:
    return reader.materialize(reader.obj)


def _is_tensor_dict(obj: Any) -> bool:
  return isinstance(obj, Mapping) and bool(obj) and all(
      isinstance(v, (_LazyTensor, np.ndarray)) for v in obj.values())


def _select(obj: Any, key: str | Sequence[str] | None, source: str) -> Mapping:
  if key is None:
    path: list[str] = []
  elif key == "auto":
    path = []
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
      found = next((k for k in _AUTO_KEYS if isinstance(obj.get(k), Mapping)), None)
      if found is None:
        break
      path.append(found)
      obj = obj[found]
  else:
    path = [key] if isinstance(key, str) else list(key)
    for k in path:
      if not isinstance(obj, Mapping) or k not in obj:
        have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise KeyError(f"{source}: no entry {k!r} on path {path}; available: {have}")
      obj = obj[k]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
  bad = [str(k) for k, v in obj.items() if not isinstance(v, (_LazyTensor, np.ndarray))]
  if bad or not obj:
    raise ValueError(
        f"{source}: entry {'/'.join(path) or '<top level>'} is not a state dict of tensors "
        f"(non-tensor entries: {bad[:10]}{' ...' if len(bad) > 10 else ''}). "
        f"Pass key=... to choose the sub-dict (top-level keys: {sorted(map(str, obj))[:10]}).")
  return obj


def load_torch_state_dict(path: str | os.PathLike, key: str | Sequence[str] | None = "auto",
                          strip_prefix: str | None = "module.") -> dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint's state dict as `{name: np.ndarray}` (original dtypes/shapes).

  Args:
    path: `.pt/.pth` file (zip or legacy format).
    key: which sub-dict holds the tensors. "auto" descends through the usual wrappers
      ("state_dict", "model_state_dict", "model", "ema") until it reaches a dict of tensors;
      a string or a sequence of strings names the entry (path) explicitly; None means the
      top level must already be the state dict.
    strip_prefix: removed from the start of names that have it (DataParallel's "module.").
  Raises:
    UnsafeCheckpointError: the file references anything but tensors and plain containers.
    ValueError / KeyError: not a checkpoint, corrupt, or the chosen entry is not tensors.
  """
  out: dict[str, np.ndarray] = {}
  with contextlib.closing(_Reader(path)) as reader:
    for name, value in _select(reader.obj, key, reader.source).items():
      name = str(name)
      if strip_prefix and name.startswith(strip_prefix):
        name = name[len(strip_prefix):]
      out[name] = reader.materialize(value)
  return out


def check_state_dict(state_dict: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
                     model_name: str, optional: Sequence[str] = ()) -> None:
  """Raises one `StateDictMismatchError` listing every missing, unexpected and mis-shaped key.

  `expected` maps names to shapes; names in `optional` may be absent (e.g. BatchNorm's
  `num_batches_tracked`) and are never reported as unexpected.
  """
  optional = set(optional)
  missing = [k for k in expected if k not in state_dict and k not in optional]
  unexpected = [k for k in state_dict if k not in expected and k not in optional]
  misshaped = [f"{k}: file {tuple(np.shape(state_dict[k]))} vs model {tuple(expected[k])}"
               for k in expected if k in state_dict
               and tuple(np.shape(state_dict[k])) != tuple(expected[k])]
  if missing or unexpected or misshaped:
    lines = [f"state dict does not match {model_name}:"]
    for title, items in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", misshaped)):
      if items:
        lines.append(f"  {title} ({len(items)}): " + ", ".join(items))
    raise StateDictMismatchError("\n".join(lines))
