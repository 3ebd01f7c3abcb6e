"""Record files without TensorFlow: TFRecord writer/index/CRC-checked random access, ArrayRecord.

TFRecord framing (the format ``tf.io.TFRecordWriter`` writes, read by ``tf.data.TFRecordDataset``)::

  uint64 length          little endian
  uint32 masked_crc32c(length bytes)
  byte   data[length]
  uint32 masked_crc32c(data)

``masked_crc32c(x) = ((crc >> 15 | crc << 17) + 0xa282ead8) mod 2**32`` with CRC-32C (Castagnoli).

Random access for Grain: :class:`TFRecordDataSource` scans the 12-byte headers of every file once
(checking each length CRC), keeps the record offsets, and reads a record with one ``pread``,
verifying its data CRC so that a flipped bit is reported as :class:`CorruptRecordError` instead of
reaching the protobuf parser. A corrupt *header* (or a file cut short) ends the index of that
file at the last good record; the problem is logged and kept in ``index_problems``.

:class:`ArrayRecordSource` wraps Grain's ``ArrayRecordDataSource`` so that riegeli's hash
mismatches also surface as :class:`CorruptRecordError`; :class:`ConcatSource` numbers several
sources one after the other. All sources have ``len``, ``[i] -> bytes`` and ``describe(i)``.

Which files make a dataset (:func:`find_shard_files`): in a directory with a ``manifest.json``
(written by ``data_pipelines.prepare`` and the synthetic-shard writer), exactly the shards it
lists; elsewhere every ``*.tfrecord`` / ``*.array_record`` that is not a ``.tmp-`` file. A shard
renamed into place just before a crash, but never entered in the manifest, is ignored (with a
warning) instead of being read next to the copy of its clips that a resumed run wrote again.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import struct
from collections.abc import Sequence
from typing import Any

import google_crc32c
import numpy as np

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8
FORMATS = {"tfrecord": ".tfrecord", "arrayrecord": ".array_record"}
TMP_PREFIX = ".tmp-"  # unfinished files: written under this prefix, renamed when complete
MANIFEST_FILE = "manifest.json"  # {"shards": {file name: [clip ids]}, ...}: the finished shards


class CorruptRecordError(ValueError):
  """A record whose bytes fail their checksum or cannot be parsed."""


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC-32C of ``data``."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class TFRecordWriter:
  """Appends records to one TFRecord file (use :func:`shards.ShardWriter` for atomic shards)."""

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self._file = open(self.path, "wb")
    self.num_records = 0

  def write(self, record: bytes) -> None:
    length = struct.pack("<Q", len(record))
    self._file.write(length)
    self._file.write(_FOOTER.pack(masked_crc32c(length)))
    self._file.write(record)
    self._file.write(_FOOTER.pack(masked_crc32c(record)))
    self.num_records += 1

  def flush(self) -> None:
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    if not self._file.closed:
      self.flush()
      self._file.close()

  def __enter__(self) -> "TFRecordWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def index_tfrecord_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, str | None]:
  """Offsets of every record in a TFRecord file.

  Returns:
    (offsets [N] int64 of each record's header, lengths [N] int64 of each payload, problem):
    ``problem`` is None for a clean file, else a message saying where and why indexing stopped
    (corrupt length header or truncated file); the N records before that point stay usable.
  """
  path = os.fspath(path)
  offsets, lengths = [], []
  problem = None
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    position = 0
    while position < size:
      header = os.pread(f.fileno(), _HEADER.size, position)
      if len(header) < _HEADER.size:
        problem = (f"{path}: file ends inside the header of record {len(offsets)} at byte "
                   f"{position} (truncated file)")
        break
      length, length_crc = _HEADER.unpack(header)
      if masked_crc32c(header[:8]) != length_crc:
        problem = (f"{path}: length header of record {len(offsets)} at byte {position} fails "
                   "its CRC (corrupt file); later records of this file are skipped")
        break
      end = position + _HEADER.size + length + _FOOTER.size
      if end > size:
        problem = (f"{path}: record {len(offsets)} at byte {position} claims {length} bytes but "
                   f"the file ends at byte {size} (truncated file)")
        break
      offsets.append(position)
      lengths.append(length)
      position = end
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64), problem


def read_tfrecord_file(path: str | os.PathLike, verify_checksums: bool = True):
  """Yields every record of a TFRecord file in order (a sequential reader for tools and tests)."""
  source = TFRecordDataSource([path], verify_checksums=verify_checksums)
  for index in range(len(source)):
    yield source[index]


class TFRecordDataSource:
  """Grain ``RandomAccessDataSource`` over TFRecord files: ``source[i] -> bytes``.

  Records are numbered file by file in the order of ``paths``. Picklable (open file descriptors
  are dropped and reopened lazily), so it can be shipped to Grain worker processes.
  """

  def __init__(self, paths: Sequence[str | os.PathLike], verify_checksums: bool = True):
    self.paths = [os.fspath(p) for p in paths]
    if not self.paths:
      raise ValueError("TFRecordDataSource needs at least one file")
    self.verify_checksums = verify_checksums
    offsets, lengths, file_ids = [], [], []
    self.index_problems: list[str] = []
    for file_id, path in enumerate(self.paths):
      file_offsets, file_lengths, problem = index_tfrecord_file(path)
      if problem is not None:
        logging.warning("%s", problem)
        self.index_problems.append(problem)
      offsets.append(file_offsets)
      lengths.append(file_lengths)
      file_ids.append(np.full(len(file_offsets), file_id, np.int32))
    self._offsets = np.concatenate(offsets)
    self._lengths = np.concatenate(lengths)
    self._file_ids = np.concatenate(file_ids)
    self._fds: dict[int, int] = {}

  def __len__(self) -> int:
    return len(self._offsets)

  def __getitem__(self, record_key: int) -> bytes:
    index = int(record_key)
    if not 0 <= index < len(self._offsets):
      raise IndexError(f"record {index} out of range for {len(self._offsets)} records")
    file_id = int(self._file_ids[index])
    fd = self._fds.get(file_id)
    if fd is None:
      fd = self._fds[file_id] = os.open(self.paths[file_id], os.O_RDONLY)
    length = int(self._lengths[index])
    offset = int(self._offsets[index]) + _HEADER.size
    data = os.pread(fd, length, offset)  # two reads: slicing one blob would copy the payload
    footer = os.pread(fd, _FOOTER.size, offset + length)
    if len(data) != length or len(footer) != _FOOTER.size:
      raise CorruptRecordError(f"{self.paths[file_id]}: record at byte {offset - _HEADER.size} "
                               "is cut short (file changed after indexing?)")
    if self.verify_checksums and masked_crc32c(data) != _FOOTER.unpack(footer)[0]:
      raise CorruptRecordError(f"{self.paths[file_id]}: record at byte {offset - _HEADER.size} "
                               "fails its data CRC (corrupt bytes)")
    return data

  def describe(self, record_key: int) -> str:
    """Human-readable location of a record: 'path record@byte'."""
    index = int(record_key)
    return f"{self.paths[int(self._file_ids[index])]} @byte {int(self._offsets[index])}"

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_fds"] = {}
    return state

  def __del__(self):
    for fd in getattr(self, "_fds", {}).values():
      try:
        os.close(fd)
      except OSError:
        pass

  def __repr__(self) -> str:
    return (f"TFRecordDataSource({len(self.paths)} files, {len(self)} records, "
            f"verify_checksums={self.verify_checksums})")


class ArrayRecordSource:
  """``ArrayRecordDataSource`` whose corrupt chunks raise :class:`CorruptRecordError`."""

  def __init__(self, paths: Sequence[str]):
    import grain  # pylint: disable=import-outside-toplevel
    self.paths = list(paths)
    self._source = grain.sources.ArrayRecordDataSource(self.paths)
    self.index_problems: list[str] = []

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, record_key: int) -> bytes:
    try:
      return self._source[int(record_key)]
    except RuntimeError as error:  # riegeli reports hash mismatches as RuntimeError
      raise CorruptRecordError(f"ArrayRecord record {int(record_key)} of {self.paths}: "
                               f"{error}") from error

  def describe(self, record_key: int) -> str:
    return f"array_record record {int(record_key)} of {len(self.paths)} files"


class ConcatSource:
  """Random access over several sources, numbered one after the other."""

  def __init__(self, sources: Sequence[Any]):
    self.sources = list(sources)
    self._starts = np.cumsum([0] + [len(s) for s in self.sources])
    self.index_problems = [p for s in self.sources for p in s.index_problems]

  def __len__(self) -> int:
    return int(self._starts[-1])

  def _locate(self, record_key: int) -> tuple[Any, int]:
    index = int(record_key)
    if not 0 <= index < len(self):
      raise IndexError(f"record {index} out of range for {len(self)} records")
    which = int(np.searchsorted(self._starts, index, side="right")) - 1
    return self.sources[which], index - int(self._starts[which])

  def __getitem__(self, record_key: int) -> bytes:
    source, local = self._locate(record_key)
    return source[local]

  def describe(self, record_key: int) -> str:
    source, local = self._locate(record_key)
    return source.describe(local)


def _is_shard_path(path: str) -> bool:
  return (path.endswith(tuple(FORMATS.values()))
          and not os.path.basename(path).startswith(TMP_PREFIX))


def manifest_shards(directory: str | os.PathLike) -> list[str] | None:
  """The shard paths ``directory/manifest.json`` lists (sorted by name); None without a manifest.

  Raises ``ValueError`` for an unreadable manifest and ``FileNotFoundError`` when a listed shard
  is missing.
  """
  path = os.path.join(os.fspath(directory), MANIFEST_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      names = sorted(json.load(f)["shards"])
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise ValueError(f"{path} is not a shard manifest ({type(error).__name__}: {error}); restore "
                     "it, or delete it to read every shard file in the directory") from error
  files = [os.path.join(os.fspath(directory), name) for name in names]
  missing = [name for name, file in zip(names, files) if not os.path.isfile(file)]
  if missing:
    raise FileNotFoundError(
        f"{len(missing)} shard(s) listed in {path} are missing (first: {missing[0]}); restore "
        "them, or re-run `python -m data_pipelines.prepare` with the same --out_dir, which "
        "writes their clips again")
  return files


def _directory_shards(directory: str) -> list[str]:
  on_disk = sorted(p for p in (os.path.join(directory, n) for n in os.listdir(directory))
                   if _is_shard_path(p))
  listed = manifest_shards(directory)
  if listed is None:
    return on_disk
  orphans = sorted(set(on_disk) - set(listed))
  if orphans:
    logging.warning("ignoring %d shard file(s) in %s that %s does not list (left by an "
                    "interrupted run; their clips are in listed shards or not finished): %s",
                    len(orphans), directory, MANIFEST_FILE,
                    ", ".join(os.path.basename(p) for p in orphans[:5]))
  return listed


def find_shard_files(shards: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
  """Shard files from a directory, a glob pattern, a file, or a list of those (no temp files).

  A directory gives the shards its manifest lists (:func:`manifest_shards`), else every shard file
  in it, sorted by name; a glob gives its sorted matches.
  """
  items = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
  found: list[str] = []
  for item in items:
    item = os.fspath(item)
    if os.path.isdir(item):
      found.extend(_directory_shards(item))
    else:
      candidates = glob.glob(item) if any(c in item for c in "*?[") else [item]
      found.extend(sorted(p for p in candidates if _is_shard_path(p)))
  if not found:
    raise FileNotFoundError(f"no shard files (*.tfrecord, *.array_record) in {shards!r}; "
                            "create them with `python -m data_pipelines.prepare`")
  return found


def open_data_source(shard_files: Sequence[str], verify_checksums: bool = True) -> ConcatSource:
  """Random-access source (``len``, ``[i] -> bytes``) over TFRecord and/or ArrayRecord shards."""
  tfrecords = [p for p in shard_files if p.endswith(FORMATS["tfrecord"])]
  array_records = [p for p in shard_files if p.endswith(FORMATS["arrayrecord"])]
  sources = []
  if tfrecords:
    sources.append(TFRecordDataSource(tfrecords, verify_checksums=verify_checksums))
  if array_records:
    sources.append(ArrayRecordSource(array_records))
  if not sources:
    raise ValueError(f"no .tfrecord or .array_record files among {list(shard_files)[:5]}")
  return ConcatSource(sources)
