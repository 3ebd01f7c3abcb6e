"""Data preparation as an Apache Beam pipeline: ``python -m data_pipelines.prepare --engine beam
--input DIR_OR_FILELIST --out_dir OUT [prepare flags] [Beam pipeline options]``.

The same per-clip work as the local engine (``clip_work.ClipWorker.process``: decode at 25 fps,
16 kHz audio, crops, mels, JPEG, records, optional curation) and the same outputs: shards
``clips-r<run>-<i>.<ext>``, ``features.json``, ``manifest.json``, ``failures.jsonl`` and, with
``--curate``, ``curation/``. Beam is an optional extra: ``pip install 'diff2lip-jax[beam]'``.

Pipeline options pass through unchanged (``--runner``, ``--project``, ``--temp_location``, ...;
Dataflow, Flink and Spark workers need this package installed, e.g. ``--setup_file``). The
default runner is the DirectRunner; for large local jobs run it multi-process:
``--direct_running_mode multi_processing --direct_num_workers 8`` (``in_memory`` is one process,
used by the tests). ``--out_dir`` is a POSIX path (a shared mount such as NFS or gcsfuse for
remote runners; ``gs://`` URLs are not supported): every worker writes shards and sidecars there.

How it stays exact under retries and kills:
  * The driver lists the videos, leaves out the clips the manifest has (written or failed) and
    deals the rest, in order, into groups of ``--clips_per_shard``; group ``i`` of run ``r`` is
    shard ``clips-r<r>-<i>``. The run counter is saved first, so every run has its own names.
  * Workers process clips in parallel (a Reshuffle spreads them); results are grouped by shard;
    one worker writes each shard under a temporary name and renames it, then writes the
    group's sidecar ``_beam/<shard>.json`` (record ids, input ids, failures with reasons,
    curation decisions), also temp + rename. A retried bundle rewrites identical files.
  * After the pipeline the driver adopts every sidecar into the manifest (failures included),
    writes the curation report and deletes the sidecars. A re-run after a kill first adopts the
    sidecars a killed run left (their shards are complete) and deletes shards of unfinished
    runs that have no sidecar, so no clip is written twice and finished work is not redone.
A clip that fails (unreadable, silent, too short, dropped by curation) is recorded with its
reason; it never stops the job.
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
from typing import Any, Iterable, Iterator

from data_pipelines import shards
from data_pipelines.clip_work import ClipWorker, PrepareOptions, check_options
from data_pipelines.prepare_outputs import (Manifest, atomic_write, pending_jobs,
                                            remove_temp_files, update_curation_report)

SIDECAR_DIR = "_beam"
SHARD_NAME = re.compile(r"clips-r\d{3,}-\d{5}\.")
INSTALL_HINT = ("the Beam engine needs Apache Beam: pip install 'diff2lip-jax[beam]' (or "
                "pip install apache-beam); or use --engine local")


class BeamUnavailableError(ImportError):
  """apache-beam is not installed."""


def import_beam() -> Any:
  """The ``apache_beam`` module, or BeamUnavailableError saying how to install it."""
  try:
    import apache_beam  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise BeamUnavailableError(INSTALL_HINT) from error
  return apache_beam


class ProcessClips:
  """FlatMap callable: a job line ``[shard, path, clip_id]`` -> ``(shard, ClipResult fields)``.
  The worker (face detector, SyncNet) is built on the first call of each deserialized copy,
  i.e. once per Beam DoFn instance, not per clip."""

  def __init__(self, options: PrepareOptions):
    self.options = options
    self.worker = None

  def __call__(self, line: str) -> Iterator[tuple[str, dict]]:
    shard, path, clip_id = json.loads(line)
    if self.worker is None:
      self.worker = ClipWorker(self.options)
    result = self.worker.process(path, clip_id)
    yield shard, {"path": path, "clip_id": clip_id, "records": result.records,
                  "decision": result.decision, "failure": result.failure}


def write_group(out_dir: str, format: str, shard: str, results: Iterable[dict]) -> dict:  # pylint: disable=redefined-builtin
  """Writes one shard (records in clip-id order) and its sidecar; returns the sidecar."""
  results = sorted(results, key=lambda r: r["clip_id"])
  written = [r for r in results if r["records"]]
  sidecar = {"shard": shard if written else None, "records": [], "inputs": [],
             "failures": [{"clip_id": r["clip_id"], "path": r["path"], "reason": r["failure"]}
                          for r in results if not r["records"]],
             "decisions": [r["decision"] for r in results if r["decision"] is not None]}
  if written:
    writer = shards.ShardWriter(os.path.join(out_dir, shard), format)
    try:
      for result in written:
        for record_id, record in result["records"]:
          writer.write(record)
          sidecar["records"].append(record_id)
        sidecar["inputs"].append(result["clip_id"])
    except BaseException:
      writer.abort()
      raise
    writer.close()
  side_dir = os.path.join(out_dir, SIDECAR_DIR)
  os.makedirs(side_dir, exist_ok=True)
  atomic_write(os.path.join(side_dir, f"{shard}.json"), json.dumps(sidecar, ensure_ascii=False))
  return sidecar


def adopt_sidecars(out_dir: str, manifest: Manifest) -> dict:
  """Adds every sidecar's shard and failures to ``manifest`` (the caller saves it, then calls
  :func:`drop_sidecars_and_orphans`). Returns ``{"decisions", "written", "failed", "shards"}``:
  the curation decisions, record and failure counts and shard paths of the sidecars."""
  side_dir = os.path.join(out_dir, SIDECAR_DIR)
  out = {"decisions": [], "written": 0, "failed": 0, "shards": []}
  for name in sorted(os.listdir(side_dir)) if os.path.isdir(side_dir) else []:
    if not name.endswith(".json"):
      continue
    with open(os.path.join(side_dir, name), encoding="utf-8") as f:
      sidecar = json.load(f)
    if sidecar["shard"] is not None:
      if not os.path.exists(os.path.join(out_dir, sidecar["shard"])):
        continue  # its shard was deleted: the clips are redone
      manifest.add_shard(sidecar["shard"], sidecar["records"], sidecar["inputs"])
      out["written"] += len(sidecar["records"])
      out["shards"].append(os.path.join(out_dir, sidecar["shard"]))
    for failure in sidecar["failures"]:
      manifest.add_failure(failure["clip_id"], failure["path"], failure["reason"])
    out["failed"] += len(sidecar["failures"])
    out["decisions"].extend(sidecar["decisions"])
  return out


def finish(out_dir: str, manifest: Manifest, options: PrepareOptions) -> dict:
  """Adopts the sidecars, saves the manifest, updates the curation report, drops the sidecars."""
  adopted = adopt_sidecars(out_dir, manifest)
  manifest.save()
  if adopted["decisions"] and options.curation is not None:
    adopted["curation"] = update_curation_report(out_dir, adopted["decisions"], options.curation,
                                                 options.confidence_threshold())["reasons"]
  drop_sidecars_and_orphans(out_dir, manifest)
  return adopted


def drop_sidecars_and_orphans(out_dir: str, manifest: Manifest) -> None:
  """After the manifest is saved: deletes the sidecars and the shards no manifest entry owns
  (renamed by a killed run that never wrote their sidecar)."""
  side_dir = os.path.join(out_dir, SIDECAR_DIR)
  if os.path.isdir(side_dir):
    for name in os.listdir(side_dir):
      os.remove(os.path.join(side_dir, name))
    os.rmdir(side_dir)
  for name in os.listdir(out_dir):
    if SHARD_NAME.match(name) and name not in manifest.data["shards"]:
      print(f"warning: removing {name}: written by an unfinished run and not in the manifest; "
            "its clips are redone", file=sys.stderr)
      os.remove(os.path.join(out_dir, name))


def start(input_path: str, out_dir: str, options: PrepareOptions, *, clips_per_shard: int,
          format: str, root: str | None, video_ext: str,  # pylint: disable=redefined-builtin
          retry_failed: bool) -> tuple[Manifest, list[tuple[str, str, str]], dict]:
  """Driver's first step: adopts a killed run's work, lists the jobs ``(shard, path, clip_id)``
  and saves the new run number. Returns ``(manifest, jobs, summary)``."""
  check_options(options)
  if clips_per_shard < 1:
    raise ValueError(f"--clips_per_shard must be >= 1, got {clips_per_shard}")
  os.makedirs(out_dir, exist_ok=True)
  remove_temp_files(out_dir)
  manifest = Manifest(out_dir, {**options.record_settings(), "format": format}, retry_failed)
  finish(out_dir, manifest, options)  # what a killed run finished
  pending, seen, done = pending_jobs(manifest, input_path, root, video_ext)
  run = manifest.data["runs"]
  manifest.data["runs"] = run + 1
  manifest.save()
  shards.ClipSerializer(options.image_size).save_features(out_dir)
  ext = shards.FORMATS[format]
  jobs = [(f"clips-r{run:03d}-{i // clips_per_shard:05d}{ext}", path, clip_id)
          for i, (path, clip_id) in enumerate(pending)]
  summary = {"videos": len(seen), "already_done": len(seen & done), "written": 0, "failed": 0,
             "shards": []}
  return manifest, jobs, summary


def build_pipeline(pipeline: Any, jobs_file: str, options: PrepareOptions, out_dir: str,
                   format: str) -> Any:  # pylint: disable=redefined-builtin
  """Adds the steps to ``pipeline``: job lines -> per-clip work -> shards + sidecars."""
  beam = import_beam()
  return (pipeline
          | "ReadJobs" >> beam.io.ReadFromText(jobs_file)
          | "Spread" >> beam.Reshuffle()
          | "ProcessClip" >> beam.FlatMap(ProcessClips(options))
          | "GroupByShard" >> beam.GroupByKey()
          | "WriteShard" >> beam.MapTuple(functools.partial(write_group, out_dir, format)))


def run(input_path: str, out_dir: str, options: PrepareOptions = PrepareOptions(), *,
        pipeline_args: Iterable[str] = (), clips_per_shard: int = 256, format: str = "tfrecord",  # pylint: disable=redefined-builtin
        root: str | None = None, video_ext: str = ".mp4", retry_failed: bool = False) -> dict:
  """Prepares every not-yet-finished video with Beam; returns a summary like ``prepare``'s.

  ``pipeline_args``: Beam pipeline options as command-line words (``["--runner", ...]``).
  """
  import_beam()
  manifest, jobs, summary = start(input_path, out_dir, options, clips_per_shard=clips_per_shard,
                                  format=format, root=root, video_ext=video_ext,
                                  retry_failed=retry_failed)
  execute(jobs, out_dir, options, format, run_number=manifest.data["runs"] - 1,
          pipeline_args=pipeline_args)
  adopted = finish(out_dir, manifest, options)
  summary.update({k: v for k, v in adopted.items() if k != "decisions"})
  return summary


def execute(jobs: list[tuple[str, str, str]], out_dir: str, options: PrepareOptions,
            format: str, run_number: int, pipeline_args: Iterable[str] = ()) -> None:  # pylint: disable=redefined-builtin
  """Runs the pipeline over ``jobs`` (from :func:`start`); leaves shards and sidecars."""
  if not jobs:
    return
  beam = import_beam()
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  side_dir = os.path.join(out_dir, SIDECAR_DIR)
  os.makedirs(side_dir, exist_ok=True)
  jobs_file = os.path.join(side_dir, f"jobs-r{run_number:03d}.jsonl")
  atomic_write(jobs_file, "".join(json.dumps(job, ensure_ascii=False) + "\n" for job in jobs))
  with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as pipeline:
    build_pipeline(pipeline, jobs_file, options, out_dir, format)
