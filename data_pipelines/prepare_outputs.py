"""Inputs and outputs of data preparation shared by both engines (``prepare``, ``beam_prepare``):
the video list, the output directory's ``manifest.json`` / ``failures.jsonl`` and the curation
report beside the shards (``curation/``, written by ``curation.write_report``)."""
from __future__ import annotations

import json
import os
import sys

from data_pipelines import shards

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".m4v", ".mpg", ".mpeg")
MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
CURATION_DIR = "curation"
DUPLICATE_ID = ("duplicate clip id: another input has the same path without extension; rename "
                "one of them")


def find_videos(input_path: str, root: str | None = None,
                video_ext: str = ".mp4") -> list[tuple[str, str]]:
  """``(path, clip_id)`` of every video under a directory or listed in a filelist, sorted."""
  if os.path.isdir(input_path):
    found = []
    for folder, subfolders, names in os.walk(input_path):
      subfolders.sort()
      for name in sorted(names):
        if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
          path = os.path.join(folder, name)
          found.append((path, _clip_id(os.path.relpath(path, input_path))))
    return found
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f"--input {input_path!r} is neither a directory nor a filelist")
  base = root if root is not None else os.path.dirname(os.path.abspath(input_path))
  found = []
  with open(input_path, encoding="utf-8") as lines:
    for line in lines:
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      entry = line if os.path.isfile(os.path.join(base, line)) else line.split()[0]
      if not os.path.splitext(entry)[1]:
        entry += video_ext
      found.append((os.path.join(base, entry), _clip_id(entry)))
  return found


def _clip_id(relative_path: str) -> str:
  return os.path.splitext(relative_path)[0].replace(os.sep, "/")


class Manifest:
  """``manifest.json`` + ``failures.jsonl`` of an output directory, rewritten atomically.

  ``shards``: shard name -> record ids; ``inputs``: shard name -> the input clip ids it holds,
  only where they differ from the record ids (curation split a clip into ``<id>#<shot>``);
  ``failed``: clip id -> ``{"path", "reason"}``.
  """

  def __init__(self, out_dir: str, settings: dict, retry_failed: bool = False):
    self.out_dir = out_dir
    self.path = os.path.join(out_dir, MANIFEST)
    self.data = {"version": 1, "settings": settings, "runs": 0, "shards": {}, "failed": {}}
    if os.path.exists(self.path):
      with open(self.path, encoding="utf-8") as f:
        self.data = json.load(f)
      if self.data["settings"] != settings:
        raise ValueError(f"{out_dir} was prepared with {self.data['settings']}, not {settings}; "
                         "use another --out_dir or the same settings")
    missing = [name for name in self.data["shards"]
               if not os.path.exists(os.path.join(out_dir, name))]
    for name in missing:  # a deleted shard's clips are simply processed again
      print(f"warning: shard {name} listed in {MANIFEST} is missing; its clips will be redone",
            file=sys.stderr)
      del self.data["shards"][name]
      self.data.get("inputs", {}).pop(name, None)
    if retry_failed:
      self.data["failed"] = {}

  def done_ids(self) -> set[str]:
    inputs = self.data.get("inputs", {})
    written = {clip for name, clips in self.data["shards"].items()
               for clip in inputs.get(name, clips)}
    return written | set(self.data["failed"])

  def add_shard(self, name: str, record_ids: list[str], input_ids: list[str] | None = None) -> None:
    self.data["shards"][name] = record_ids
    for clip_id in input_ids or record_ids:  # a clip retried with --retry_failed now has records
      self.data["failed"].pop(clip_id, None)
    if input_ids is not None and list(input_ids) != list(record_ids):
      self.data.setdefault("inputs", {})[name] = list(input_ids)

  def add_failure(self, clip_id: str, path: str, reason: str) -> None:
    self.data["failed"][clip_id] = {"path": path, "reason": reason}

  def save(self) -> None:
    atomic_write(self.path, json.dumps(self.data, indent=1, ensure_ascii=False))
    lines = [json.dumps({"clip_id": clip_id, **entry}, ensure_ascii=False) + "\n"
             for clip_id, entry in sorted(self.data["failed"].items())]
    atomic_write(os.path.join(self.out_dir, FAILURES), "".join(lines))


def atomic_write(path: str, text: str) -> None:
  """Writes ``text`` under a temporary name in the same folder, then renames it into place."""
  tmp = os.path.join(os.path.dirname(path), f"{shards.TMP_PREFIX}{os.getpid()}-{os.path.basename(path)}")
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def remove_temp_files(out_dir: str) -> None:
  """Drops leftovers (``.tmp-*``) of an interrupted run."""
  for name in os.listdir(out_dir):
    if name.startswith(shards.TMP_PREFIX):
      os.remove(os.path.join(out_dir, name))


def pending_jobs(manifest: Manifest, input_path: str, root: str | None, video_ext: str,
                 videos: list[tuple[str, str]] | None = None,
                 ) -> tuple[list[tuple[str, str]], set[str], set[str]]:
  """``(jobs [(path, clip_id)] not yet done, every input clip id, the done ones)``; duplicate
  ids are recorded as failures in ``manifest``. ``videos``: ``find_videos``' result if known."""
  done = manifest.done_ids()
  jobs, seen = [], set()
  if videos is None:
    videos = find_videos(input_path, root, video_ext)
  for path, clip_id in videos:
    if clip_id in seen:
      manifest.add_failure(clip_id, path, DUPLICATE_ID)
      continue
    seen.add(clip_id)
    if clip_id not in done:
      jobs.append((path, clip_id))
  return jobs, seen, done


def update_curation_report(out_dir: str, decisions: list[dict],
                           config: "curation.CurationConfig",
                           confidence_threshold: float | None) -> dict:
  """Merges this run's decisions with the earlier runs' (``curation/decisions.jsonl``; a clip
  decided again replaces its old decision) and rewrites the report; returns its summary."""
  from data_pipelines import curation  # pylint: disable=import-outside-toplevel (loads JAX)
  report_dir = os.path.join(out_dir, CURATION_DIR)
  previous = os.path.join(report_dir, "decisions.jsonl")
  merged = {}
  if os.path.exists(previous):
    merged = {d.clip_id: d.to_dict() for d in curation.read_decisions(previous)}
  merged.update((d["clip_id"], d) for d in decisions)
  return curation.write_report([merged[k] for k in sorted(merged)], report_dir, config,
                               confidence_threshold)
