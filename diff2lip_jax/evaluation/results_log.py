"""Per-video results as JSON lines, one file per process, appended and fsynced.

A run writes `results.<i>-of-<N>.jsonl` (and `fid.<i>-of-<N>.npz`) in its output directory.
Each line is one video's record, flushed and fsynced before the next video starts, so a
killed run loses at most the video in progress. A last line without its newline is a write
cut short: it is ignored on reading and cut off before appending.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Iterable

SHARD_RE = re.compile(r"^results\.(\d+)-of-(\d+)\.jsonl$")


def shard_tag(index: int, count: int) -> str:
  return f"{index:05d}-of-{count:05d}"


def results_path(out_dir: str | os.PathLike, index: int, count: int) -> pathlib.Path:
  return pathlib.Path(out_dir) / f"results.{shard_tag(index, count)}.jsonl"


def fid_path(out_dir: str | os.PathLike, index: int, count: int) -> pathlib.Path:
  return pathlib.Path(out_dir) / f"fid.{shard_tag(index, count)}.npz"


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Complete records of one JSONL file (a cut-off last line is left out).

  Raises:
    ValueError: a complete line that is not a JSON object (file and line named).
  """
  path = pathlib.Path(path)
  if not path.exists():
    return []
  text = path.read_text(encoding="utf-8")
  lines = text.split("\n")[:-1]   # the part after the last newline is incomplete
  records = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path}:{number}: not a JSON line ({error}); the file was edited or "
                       "damaged, remove that line to resume") from None
    if not isinstance(record, dict) or "key" not in record:
      raise ValueError(f"{path}:{number}: not an evaluation record (no 'key')")
    records.append(record)
  return records


def latest_by_key(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """The last record of each key (a retried video replaces its failure), in first-seen order."""
  out: dict[str, dict[str, Any]] = {}
  for record in records:
    out.pop(record["key"], None)
    out[record["key"]] = record
  return out


class RecordWriter:
  """Appends records to a JSONL file; each `write` is flushed and fsynced."""

  def __init__(self, path: str | os.PathLike):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if self.path.exists():   # drop a cut-off last line so appends start on a fresh line
      data = self.path.read_bytes()
      keep = data.rfind(b"\n") + 1
      if keep != len(data):
        os.truncate(self.path, keep)
    self._file = open(self.path, "a", encoding="utf-8")

  def write(self, record: dict[str, Any]) -> None:
    self._file.write(json.dumps(record, sort_keys=True) + "\n")
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    self._file.close()

  def __enter__(self) -> "RecordWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def shard_files(out_dir: str | os.PathLike) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """`(results.jsonl, fid.npz)` paths of every process of a run directory, in process order.

  Raises:
    ValueError: no results, or shards of runs split into different process counts.
  """
  out_dir = pathlib.Path(out_dir)
  found = sorted((int(m.group(1)), int(m.group(2)))
                 for m in (SHARD_RE.match(p.name) for p in out_dir.glob("results.*.jsonl")) if m)
  if not found:
    raise ValueError(f"{out_dir}: no results.<i>-of-<N>.jsonl files (not an evaluate --out_dir)")
  counts = {count for _, count in found}
  if len(counts) > 1:
    raise ValueError(f"{out_dir}: results of runs split into {sorted(counts)} processes; keep "
                     "one split per directory")
  count = counts.pop()
  missing = sorted(set(range(count)) - {i for i, _ in found})
  if missing:
    raise ValueError(f"{out_dir}: processes {missing} of {count} have no results yet; wait for "
                     "them (or re-run them) before merging")
  return [(results_path(out_dir, i, count), fid_path(out_dir, i, count)) for i, _ in found]
