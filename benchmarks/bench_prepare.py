"""Preprocessing throughput, clips per second per core: the local engine and Beam's
DirectRunner on the same synthetic VoxCeleb2-like videos (H.264 + AAC, 224x224 at 25 fps).

    PYTHONPATH=. python benchmarks/bench_prepare.py --clips 8 --frames 100 [--out r.json]

Settings (each on a fresh output directory, after one warm-up clip in the same process):
  local          prepare.prepare, num_workers=0, fixed VoxCeleb2 crop (decode, 16 kHz audio,
                 mel, crops, JPEG, record);
  local_curate   the same with curation (scene cuts, face filters, sync with the synthetic
                 measurer; syncnet_python's network costs ~15 s per clip more on CPU, see
                 benchmarks/CURATION.md);
  beam_1         beam_prepare.run on the DirectRunner, in_memory (one process);
  beam_mp        the DirectRunner multi_processing with --workers processes.
Rates: clips / wall second / cores used, and clips / CPU second (this process and its finished
children): on a loaded machine the CPU-time rate is what one free core gives.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time


def _cpu_seconds() -> float:
  return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
             for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def _measure(run, clips: int, cores: int) -> dict:
  wall, cpu = time.perf_counter(), _cpu_seconds()
  summary = run()
  wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
  assert summary["written"] == clips, summary
  return {"clips": clips, "cores": cores, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
          "clips_per_s_per_core_wall": round(clips / wall / cores, 3),
          "clips_per_cpu_s": round(clips / cpu, 3)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--clips", type=int, default=8)
  parser.add_argument("--frames", type=int, default=100)
  parser.add_argument("--workers", type=int, default=2, help="beam_mp worker processes")
  parser.add_argument("--only", default="local,local_curate,beam_1,beam_mp")
  parser.add_argument("--out", default=None, help="also write the results as JSON")
  args = parser.parse_args()
  from data_pipelines import beam_prepare, curation, prepare, synthetic  # pylint: disable=import-outside-toplevel
  work = tempfile.mkdtemp(prefix="bench_prepare_")
  videos, warm = os.path.join(work, "videos"), os.path.join(work, "warm")
  synthetic.write_dataset(videos, args.clips, seed=7, min_frames=args.frames,
                          max_frames=args.frames, file_format="mp4", full_frame_size=224)
  synthetic.write_dataset(warm, 1, seed=8, min_frames=args.frames, max_frames=args.frames,
                          file_format="mp4", full_frame_size=224)
  plain = prepare.PrepareOptions()
  curated = prepare.PrepareOptions(curation=curation.CurationConfig(min_frames=20),
                                   sync_measurer="synthetic")
  beam_1 = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]
  beam_mp = ["--direct_running_mode", "multi_processing", "--direct_num_workers",
             str(args.workers)]
  settings = {
      "local": (1, lambda src, out: prepare.prepare(src, out, plain, progress=False)),
      "local_curate": (1, lambda src, out: prepare.prepare(src, out, curated, progress=False)),
      "beam_1": (1, lambda src, out: beam_prepare.run(src, out, plain, pipeline_args=beam_1)),
      "beam_mp": (args.workers,
                  lambda src, out: beam_prepare.run(src, out, plain, pipeline_args=beam_mp)),
  }
  results = {"load_before": os.getloadavg(), "cpus": os.cpu_count(), "frames": args.frames}
  for name in args.only.split(","):
    cores, run = settings[name]
    run(warm, os.path.join(work, f"warm_{name}"))  # imports, caches, Beam start-up paths
    results[name] = _measure(lambda: run(videos, os.path.join(work, name)), args.clips, cores)
    print(name, json.dumps(results[name]), flush=True)
  results["load_after"] = os.getloadavg()
  print(json.dumps(results))
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
