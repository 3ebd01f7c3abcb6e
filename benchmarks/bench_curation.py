"""Curation throughput per step, clips per second on ONE core (JAX single-threaded, process
pinned to one CPU), on synthetic VoxCeleb2-like clips (224x224 frames at 25 fps).

    PYTHONPATH=. python benchmarks/bench_curation.py --frames 100 --clips 4 [--out r.json]

Steps (each timed alone on already decoded frames; first call = warm-up, not timed):
  scene_cuts     frame signatures + cut rule (`scene_cuts.detect_scene_cuts`);
  face_filter    face statistics of per-frame boxes and scores (`faces.face_stats`);
  sync_synthetic offset search with the synthetic mouth measurer (test / check path);
  sync_syncnet_v2 syncnet_python's SyncNet (random weights: same cost) on 224x224 crops;
  sync_expert    the Wav2Lip-style expert (random weights) on 96x96 crops;
  shift_and_mel  audio shift (`apply_segment`) + mel spectrogram of the shifted audio;
  curate_clip    the whole decision with the syncnet_v2 measurer (scene + faces + sync);
  report         `write_report` per clip (amortised over the clips).
Decoding and face detection are not included (see bench_input_pipeline / prepare).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time


def _pin_one_core() -> None:
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_multi_thread_eigen=false"
                             " intra_op_parallelism_threads=1").strip()
  for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[name] = "1"
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _timed(fn, clips) -> tuple[float, float]:
  """Clips per second of `fn(clip)` over `clips` after one warm-up call: by wall time and by
  this process's CPU time (on a shared, loaded machine the CPU-time rate is what one free
  core would give; pinned to one core the two agree when the machine is idle)."""
  fn(clips[0])
  wall, cpu = time.perf_counter(), time.process_time()
  for clip in clips:
    fn(clip)
  return (len(clips) / (time.perf_counter() - wall), len(clips) / (time.process_time() - cpu))


def _measurers(workdir: str):
  import jax  # pylint: disable=import-outside-toplevel
  from data_pipelines.curation import sync  # pylint: disable=import-outside-toplevel
  from diff2lip_jax.models import syncnet_v2  # pylint: disable=import-outside-toplevel
  from diff2lip_jax.syncnet import expert  # pylint: disable=import-outside-toplevel
  from configs import syncnet as syncnet_config  # pylint: disable=import-outside-toplevel
  v2 = sync.syncnet_v2_measurer(syncnet_v2.init_syncnet_v2_variables(jax.random.PRNGKey(0)))
  path = expert.export_expert(os.path.join(workdir, "expert"), expert.torch_default_init(0),
                              syncnet_config.get_config(), 0)
  return {"synthetic": sync.synthetic_measurer(), "syncnet_v2": v2,
          "expert": sync.expert_measurer(path)}


def run(frames: int, count: int, steps: list[str], workdir: str
        ) -> dict[str, dict[str, float]]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from data_pipelines import audio, synthetic  # pylint: disable=import-outside-toplevel
  from data_pipelines.curation import curate, faces, report, scene_cuts, sync  # pylint: disable=import-outside-toplevel
  clips = [synthetic.generate_clip(seed, frames, full_frame_size=224) for seed in range(count)]
  clips = [(c.full_frames, c.wav, c.full_face_box, np.full(frames, 0.99)) for c in clips]
  measurers = _measurers(workdir)
  config = curate.CurationConfig(min_confidence=0.0, min_face_size=10)
  kept = curate.SegmentDecision(0, frames, keep=True, offset=3,
                                span=sync.aligned_span(frames, frames * 640, 3))
  decisions = [curate.curate_clip(*c, config=curate.CurationConfig(sync=False)) for c in clips]
  table = {
      "scene_cuts": lambda c: scene_cuts.detect_scene_cuts(c[0]),
      "face_filter": lambda c: faces.face_stats(c[2], c[3]),
      "sync_synthetic": lambda c: measurers["synthetic"].measure(
          synthetic_crops(c[0]), c[2], c[1]),
      "sync_syncnet_v2": lambda c: measurers["syncnet_v2"].measure(c[0], c[2], c[1]),
      "sync_expert": lambda c: measurers["expert"].measure(c[0], c[2], c[1]),
      "shift_and_mel": lambda c: audio.melspectrogram(curate.apply_segment(c[0], c[1], kept)[1]),
      "curate_clip": lambda c: curate.curate_clip(*c, config=config,
                                                  measurer=measurers["syncnet_v2"]),
      "report": lambda c: report.write_report(decisions, os.path.join(workdir, "report"),
                                              config),
  }
  out = {}
  for step in steps:
    scale = len(clips) if step == "report" else 1     # one report covers all clips
    wall, cpu = (rate * scale for rate in _timed(table[step], clips))
    out[step] = {"wall": round(wall, 3), "cpu": round(cpu, 3)}
    print(f"{step:16s} {wall:10.3f} clips/s by wall time, {cpu:10.3f} by CPU time "
          f"({frames} frames, {count} clips)", flush=True)
  return out


def synthetic_crops(frames):
  """The synthetic measurer reads face crops: the VoxCeleb2 crop window of a full frame."""
  from data_pipelines import crops, synthetic_render  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  box = synthetic_render.voxceleb_crop_box(frames.shape[1]).astype(np.int64)
  return np.clip(np.rint(crops.crop_and_resize(frames, box, 128)), 0, 255).astype(np.uint8)


STEPS = ("scene_cuts", "face_filter", "sync_synthetic", "sync_syncnet_v2", "sync_expert",
         "shift_and_mel", "curate_clip", "report")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--frames", type=int, default=100, help="frames per clip (25 fps)")
  parser.add_argument("--clips", type=int, default=4, help="timed clips per step")
  parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
  parser.add_argument("--out", help="write the results as JSON here")
  args = parser.parse_args(argv)
  _pin_one_core()
  started = time.time()
  workdir = tempfile.mkdtemp(prefix="bench_curation_")
  try:
    results = run(args.frames, args.clips, args.steps, workdir)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump({"settings": vars(args), "clips_per_second_per_core": results,
                 "seconds": round(time.time() - started, 1),
                 "load_average": os.getloadavg()}, f, indent=2)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
