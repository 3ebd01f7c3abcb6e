"""Evaluation of a test list: streaming, resumable, split over processes.

One process evaluates items `index::count` one video at a time (`clip_metrics`), appends each
video's record to its own `results.<i>-of-<N>.jsonl` (fsynced) and accumulates FID statistics
(`fid_stream.FeatureMoments`, saved every `checkpoint_every` videos and at the end to
`fid.<i>-of-<N>.npz` with the keys they include). A re-run with the same `out_dir` skips the
videos in its JSONL (failed ones too, unless `retry_failed`) and recomputes only the FID
features of recorded videos missing from the statistics file (a run killed between two
checkpoints); a video re-run whose features are already counted is not counted twice. A video that fails is recorded with its error and the run goes on.
`run.json` in `out_dir` holds the run's settings; a re-run with other settings is refused.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
from typing import Any, Sequence

from diff2lip_jax.evaluation import clip_metrics, filelists, fid_stream, results_log

FID_SETS = ("generated", "real")


@dataclasses.dataclass
class RunOptions:
  setting: str
  out_dir: str | None = None
  process_index: int = 0
  process_count: int = 1
  retry_failed: bool = False
  checkpoint_every: int = 25
  progress: bool = True
  settings: dict[str, Any] = dataclasses.field(default_factory=dict)   # recorded in run.json


@dataclasses.dataclass
class ShardResult:
  records: list[dict[str, Any]]
  moments: dict[str, fid_stream.FeatureMoments] | None


def check_run_settings(out_dir: str | os.PathLike, settings: dict[str, Any]) -> None:
  """Writes `run.json`, or checks that the one there has the same settings."""
  path = pathlib.Path(out_dir) / "run.json"
  text = json.dumps(settings, sort_keys=True, indent=1) + "\n"
  if path.exists():
    old = json.loads(path.read_text(encoding="utf-8"))
    if old != json.loads(text):
      changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
      raise ValueError(f"{out_dir} holds a run with other settings ({', '.join(changed)}); "
                       "use another --out_dir, or the same flags to resume it")
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  temp = path.with_name(f".run.json.{os.getpid()}.partial")
  temp.write_text(text, encoding="utf-8")
  os.replace(temp, path)


def _progress(todo: Sequence, enabled: bool, desc: str):
  if not enabled:
    return todo
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(todo, desc=desc, unit="video", dynamic_ncols=True, file=sys.stderr)


def _one(item: filelists.EvalItem, suite: clip_metrics.MetricSuite, task: str,
         moments, setting: str) -> dict[str, Any]:
  """The item's record; on success its FID features are added to `moments` (task: "all",
  "fid" (features only) or "metrics" (all but the features, already counted))."""
  base = {"key": item.key, "setting": setting, "generated": item.generated,
          "reference": item.reference}
  try:
    result = clip_metrics.evaluate_clip(item, suite, fid=task != "metrics",
                                        others=task != "fid")
  except Exception as error:  # pylint: disable=broad-except  (recorded; the run goes on)
    message = " ".join(f"{type(error).__name__}: {error}".split())
    print(f"FAILED {item.generated}: {message}", file=sys.stderr)
    return {**base, "error": message}
  if moments is not None and result.fid_generated is not None:
    moments["generated"].add(result.fid_generated)
    if result.fid_real is not None:
      moments["real"].add(result.fid_real)
  return {**base, **result.record}


def _resume_state(opts: RunOptions, suite) -> tuple[dict, dict | None, set[str]]:
  done, moments, fid_keys = {}, None, set()
  if opts.out_dir:
    done = results_log.latest_by_key(results_log.read_records(results_log.results_path(
        opts.out_dir, opts.process_index, opts.process_count)))
    path = results_log.fid_path(opts.out_dir, opts.process_index, opts.process_count)
    if suite.inception is not None and path.exists():
      moments, keys, _ = fid_stream.load_moments(path)
      fid_keys = set(keys)
  if suite.inception is not None and moments is None:
    moments = {name: fid_stream.FeatureMoments(suite.fid_dims) for name in FID_SETS}
  return done, moments, fid_keys


def run_shard(items: Sequence[filelists.EvalItem], suite: clip_metrics.MetricSuite,
              opts: RunOptions) -> ShardResult:
  """Evaluates this process's share of `items` (see the module docstring)."""
  mine = filelists.shard(items, opts.process_index, opts.process_count)
  if opts.out_dir:
    check_run_settings(opts.out_dir, {**opts.settings, "setting": opts.setting,
                                      "process_count": opts.process_count})
  done, moments, fid_keys = _resume_state(opts, suite)
  todo = []
  for item in mine:
    record = done.get(item.key)
    counted = moments is None or item.key in fid_keys
    if record is None or (opts.retry_failed and "error" in record):
      todo.append((item, "metrics" if counted and moments is not None else "all"))
    elif not counted and "error" not in record:
      todo.append((item, "fid"))
  writer = (results_log.RecordWriter(results_log.results_path(
      opts.out_dir, opts.process_index, opts.process_count)) if opts.out_dir else None)
  fid_file = (results_log.fid_path(opts.out_dir, opts.process_index, opts.process_count)
              if opts.out_dir else None)
  try:
    for count, (item, task) in enumerate(_progress(todo, opts.progress, opts.setting), 1):
      record = _one(item, suite, task, moments, opts.setting)
      if task != "fid":
        done[item.key] = record
        if writer:
          writer.write(record)
      if moments is not None and "error" not in record:
        fid_keys.add(item.key)
      if fid_file and moments is not None and (count % opts.checkpoint_every == 0
                                               or count == len(todo)):
        fid_stream.save_moments(fid_file, moments, sorted(fid_keys), opts.setting)
  finally:
    if writer:
      writer.close()
  return ShardResult([done[i.key] for i in mine if i.key in done], moments)
