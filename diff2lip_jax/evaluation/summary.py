"""The summary table, laid out like the paper's: one row per setting, one column per metric.

Per setting: the mean over the successfully evaluated videos of each per-video metric, and
FID between the accumulated generated and real face-crop statistics (one Fréchet distance
over all frames of the setting, as pytorch-fid on two image folders).
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable, Mapping, Sequence

from diff2lip_jax.evaluation import fid as fid_lib
from diff2lip_jax.evaluation import fid_stream, results_log

# (key, title, format, the skipped group that removes it)
COLUMNS = (("fid", "FID", "{:.3f}", "fid"), ("ssim", "SSIM", "{:.4f}", None),
           ("psnr", "PSNR", "{:.2f}", None), ("lse_d", "LSE-D", "{:.3f}", "lse"),
           ("lse_c", "LSE-C", "{:.3f}", "lse"),
           ("wav2lip_expert_lse_d", "Wav2Lip-expert LSE-D", "{:.3f}", "wav2lip_expert"),
           ("wav2lip_expert_lse_c", "Wav2Lip-expert LSE-C", "{:.3f}", "wav2lip_expert"),
           ("sync_r", "sync r", "{:.3f}", "sync_r"))
PER_VIDEO = tuple(key for key, *_ in COLUMNS if key != "fid")


def setting_row(setting: str, records: Iterable[Mapping[str, Any]],
                moments: Mapping[str, fid_stream.FeatureMoments] | None,
                skipped: Mapping[str, str], fid_method: str = "sqrtm") -> dict[str, Any]:
  """`{"setting", "videos", "failed", <metric>: mean or None, "skipped": {...}}`."""
  records = list(records)
  ok = [r for r in records if "error" not in r]
  row: dict[str, Any] = {"setting": setting, "videos": len(ok),
                         "failed": len(records) - len(ok), "skipped": dict(skipped)}
  for key in PER_VIDEO:
    values = [float(r[key]) for r in ok if r.get(key) is not None]
    row[key] = sum(values) / len(values) if values else None
  row["fid"] = None
  if moments is not None and moments["real"].count >= 2 and moments["generated"].count >= 2:
    row["fid"] = fid_lib.frechet_distance(*moments["generated"].statistics(),
                                          *moments["real"].statistics(), method=fid_method)
    row["fid_frames"] = {name: m.count for name, m in moments.items()}
  return row


def load_run(out_dir: str | os.PathLike, fid_method: str = "sqrtm") -> dict[str, Any]:
  """The summary row of one `--out_dir` (all its processes' shards)."""
  settings = json.loads((pathlib.Path(out_dir) / "run.json").read_text(encoding="utf-8"))
  records, moments = [], None
  for jsonl, npz in results_log.shard_files(out_dir):
    records.extend(results_log.read_records(jsonl))
    if npz.exists():
      shard_moments = fid_stream.load_moments(npz)[0]
      if moments is None:
        moments = shard_moments
      else:
        for name, m in shard_moments.items():
          moments[name].merge(m)
  latest = results_log.latest_by_key(records)
  row = setting_row(settings["setting"], latest.values(), moments,
                    settings.get("skipped", {}), fid_method)
  if moments is not None:   # every recorded video's features must be in the statistics
    ok = sum("error" not in r for r in latest.values())
    row["fid_videos_missing"] = ok - _fid_key_count(out_dir)
  return row


def _fid_key_count(out_dir) -> int:
  return sum(len(fid_stream.load_moments(npz)[1])
             for _, npz in results_log.shard_files(out_dir) if npz.exists())


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
  """Markdown table (rows: settings; columns: metrics), then a line per skipped metric."""
  header = ["setting", "videos", "failed"] + [title for _, title, _, _ in COLUMNS]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  notes = {}
  for row in rows:
    cells = [str(row["setting"]), str(row["videos"]), str(row["failed"])]
    for key, _, fmt, group in COLUMNS:
      value = row.get(key)
      if value is not None:
        cells.append(fmt.format(value))
      elif group in row.get("skipped", {}):
        cells.append("skipped")
        notes[group] = row["skipped"][group]
      else:
        cells.append("-")
    lines.append("| " + " | ".join(cells) + " |")
  lines += [f"\nskipped: {group} (enable with {flag})" for group, flag in sorted(notes.items())]
  return "\n".join(lines) + "\n"


def write_summary(out_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> str:
  """Writes `summary.md` and `summary.json` into `out_dir` (complete or not at all); returns
  the markdown."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  text = markdown_table(rows)
  for name, content in (("summary.md", text),
                        ("summary.json", json.dumps({"rows": list(rows)}, indent=2) + "\n")):
    temp = out_dir / f".{name}.{os.getpid()}.partial"
    temp.write_text(content, encoding="utf-8")
    os.replace(temp, out_dir / name)
  return text
