"""Curation report: counts per reason, histograms, every decision and the dropped shots.

`write_report(decisions, out_dir)` writes (each file complete or absent: temp name + rename):
  summary.json   clip / shot / frame counts, shots per reason, offset / confidence / face-size
                 statistics of the measured shots, and the configuration when given;
  summary.txt    the same counts as a table;
  decisions.jsonl one `ClipCuration.to_dict()` per clip (read back with `read_decisions`);
  dropped.csv    one row per dropped shot: clip, frames, reason, detail and its measurements;
  offset.png, confidence.png, face_size.png   histograms of the shots, kept and dropped stacked,
                 with the configured thresholds marked.
Decisions can come from many workers (e.g. a Beam job writing `to_dict()` lines): pass the
dicts or `ClipCuration`s; the report only needs the collection.
"""
from __future__ import annotations

import collections
import csv
import io
import json
import os
import pathlib
from typing import Any, Iterable

import numpy as np

from data_pipelines.curation import plots
from data_pipelines.curation.curate import REASONS, ClipCuration, CurationConfig

DROPPED_COLUMNS = ("clip_id", "start", "end", "reason", "detail", "offset", "confidence",
                   "min_dist", "face_size", "mean_score", "min_score", "missing_fraction")


def _as_curation(item: ClipCuration | dict) -> ClipCuration:
  return item if isinstance(item, ClipCuration) else ClipCuration.from_dict(item)


def read_decisions(path: str | os.PathLike) -> list[ClipCuration]:
  """Decisions from a `decisions.jsonl` (or any file of `ClipCuration.to_dict()` lines)."""
  out = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          out.append(ClipCuration.from_dict(json.loads(line)))
        except (ValueError, TypeError, KeyError) as error:
          raise ValueError(f"{path}:{number}: not a curation decision ({error})") from error
  return out


def _stats(values: list[float]) -> dict[str, float] | None:
  values = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
  if not len(values):
    return None
  return {"count": int(len(values)), "mean": float(values.mean()),
          "median": float(np.median(values)), "min": float(values.min()),
          "max": float(values.max())}


def summarize(decisions: Iterable[ClipCuration | dict]) -> dict[str, Any]:
  """Counts and statistics of decisions (the `summary.json` content without the config)."""
  clips = [_as_curation(d) for d in decisions]
  segments = [s for c in clips for s in c.segments]
  reasons = collections.Counter(s.reason for s in segments)
  return {
      "clips": len(clips), "clips_kept": sum(c.keep for c in clips),
      "clips_with_cuts": sum(bool(c.cuts) for c in clips),
      "shots": len(segments), "shots_kept": sum(s.keep for s in segments),
      "frames_in": int(sum(c.num_frames for c in clips)),
      "frames_kept": int(sum(s.span.num_frames for s in segments if s.keep and s.span)),
      "reasons": {r: reasons.get(r, 0) for r in REASONS if reasons.get(r, 0)} | {
          r: n for r, n in reasons.items() if r not in REASONS},
      "offset": _stats([s.offset for s in segments]),
      "confidence": _stats([s.confidence for s in segments]),
      "face_size": _stats([s.face_size for s in segments]),
      "measurers": sorted({c.measurer for c in clips if c.measurer}),
  }


def _write_text(path: pathlib.Path, text: str) -> None:
  temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
  temp.write_text(text, encoding="utf-8")
  os.replace(temp, path)


def _dropped_csv(clips: list[ClipCuration]) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(DROPPED_COLUMNS)
  for clip in clips:
    for s in clip.segments:
      if not s.keep:
        row = {"clip_id": clip.clip_id, **{k: getattr(s, k) for k in DROPPED_COLUMNS[1:]}}
        writer.writerow(["" if row[k] is None else row[k] for k in DROPPED_COLUMNS])
  return buffer.getvalue()


def _summary_table(summary: dict[str, Any]) -> str:
  lines = [f"clips: {summary['clips']} in, {summary['clips_kept']} with kept shots, "
           f"{summary['clips_with_cuts']} with scene cuts",
           f"shots: {summary['shots']} in, {summary['shots_kept']} kept",
           f"frames: {summary['frames_in']} in, {summary['frames_kept']} kept", "",
           "shots per reason:"]
  lines += [f"  {reason:22s} {count:8d}" for reason, count in summary["reasons"].items()]
  for key in ("offset", "confidence", "face_size"):
    if summary[key]:
      s = summary[key]
      lines.append(f"{key:11s} n={s['count']} mean={s['mean']:.3f} median={s['median']:.3f} "
                   f"min={s['min']:.3f} max={s['max']:.3f}")
  return "\n".join(lines) + "\n"


def _edges(values: list[float], marker: float | None, bins: int = 30) -> np.ndarray:
  finite = [v for v in values if np.isfinite(v)] + ([marker] if marker is not None else [])
  low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
  if high - low < 1e-9:
    low, high = low - 0.5, high + 0.5
  return np.linspace(low, high, bins + 1)


def _plots(clips: list[ClipCuration], out: pathlib.Path, config: CurationConfig | None,
           confidence_threshold: float | None) -> None:
  segments = [s for c in clips for s in c.segments]

  def values(name: str, kept: bool) -> list[float]:
    return [float(getattr(s, name)) for s in segments
            if s.keep == kept and getattr(s, name) is not None]
  offsets = values("offset", True) + values("offset", False)
  reach = max([config.vshift if config else 0] + [abs(v) for v in offsets] + [1])
  plots.histogram_png(out / "offset.png", {"kept": values("offset", True),
                                            "dropped": values("offset", False)},
                      np.arange(-reach - 0.5, reach + 1.0), title="Audio-video offset per shot",
                      xlabel="offset (frames at 25 fps; > 0: audio leads video)")
  for name, title, xlabel, marker in (
      ("confidence", "Sync confidence per shot", "confidence (median - min distance)",
       confidence_threshold if config and config.sync else None),
      ("face_size", "Face size per shot", "median shorter face-box side (pixels)",
       config.min_face_size if config and config.face_filter else None)):
    kept, dropped = values(name, True), values(name, False)
    plots.histogram_png(out / f"{name}.png", {"kept": kept, "dropped": dropped},
                        _edges(kept + dropped, marker), title=title, xlabel=xlabel,
                        markers={"threshold": marker} if marker is not None else None)


def write_report(decisions: Iterable[ClipCuration | dict], out_dir: str | os.PathLike,
                 config: CurationConfig | None = None,
                 confidence_threshold: float | None = None) -> dict[str, Any]:
  """Writes the report files (module docstring) into `out_dir` (created); returns the summary.

  `confidence_threshold` marks the confidence plot (default: `config.min_confidence`; pass
  `curate.min_confidence(config, measurer)` when the measurer's default was used)."""
  clips = [_as_curation(d) for d in decisions]
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  summary = summarize(clips)
  if config is not None:
    summary["config"] = config.to_dict()
  _write_text(out / "decisions.jsonl", "".join(json.dumps(c.to_dict()) + "\n" for c in clips))
  _write_text(out / "dropped.csv", _dropped_csv(clips))
  if confidence_threshold is None and config is not None:
    confidence_threshold = config.min_confidence
  _plots(clips, out, config, confidence_threshold)
  _write_text(out / "summary.txt", _summary_table(summary))
  _write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
  return summary
