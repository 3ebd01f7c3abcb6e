"""Evaluation speed (videos/s) of `evaluate --filelist` per metric set, printed as JSON lines.

  python benchmarks/bench_evaluate.py                         # 4 videos of 50 frames, 224x224
  python benchmarks/bench_evaluate.py --videos 6 --frames 29 --metrics image lse

Videos: synthetic talking faces (`data_pipelines.synthetic`) at VoxCeleb2's 224x224 frame
size; the generated videos are noisy copies, evaluated in the reconstruction setting with the
VoxCeleb2 crop through the same runner as the command (`evaluation.runner.run_shard`, JSONL
and FID sums written to a temp directory). Networks: syncnet_python's SyncNet and the FID
Inception with seeded random weights (speed does not depend on their values).
Metric sets:
  image  PSNR + SSIM only
  lse    + LSE-D/LSE-C (SyncNet v2 on 224x224 crops, +-15 offsets)
  fid    + FID features (2048-d) of the generated and the real face crops
  all    image + lse + fid
`first_video_s` is the first video alone (XLA compilation included); `videos_per_s`,
`frames_per_s` and `cpu_s_per_video` (CPU time of all the process's threads: steadier than
wall time on a shared machine) are over the later videos.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import face_crops, synthetic, video_io
from diff2lip_jax.evaluation import clip_metrics, evaluate, fid, filelists, lse, runner
from diff2lip_jax.models.inception_fid import INPUT_SIZE, FIDInceptionV3
from diff2lip_jax.models.syncnet_v2 import init_syncnet_v2_variables

METRIC_SETS = {"image": (), "lse": ("lse",), "fid": ("fid",), "all": ("lse", "fid")}


def write_videos(root: str, count: int, frames: int, size: int) -> list[filelists.EvalItem]:
  rng = np.random.default_rng(0)
  items = []
  for i in range(count):
    clip = synthetic.generate_clip(i, num_frames=frames, image_size=64, full_frame_size=size,
                                   noise_std=0.0)
    real, gen = os.path.join(root, f"real{i}.mp4"), os.path.join(root, f"gen{i}.mp4")
    noisy = np.clip(clip.full_frames.astype(int) + rng.integers(-10, 11, clip.full_frames.shape),
                    0, 255).astype(np.uint8)
    for path, video in ((real, clip.full_frames), (gen, noisy)):
      video_io.write_video(path, video, fps=25.0, audio=clip.wav[:frames * 640], audio_sr=16000,
                           preset="ultrafast")
    items.append(filelists.EvalItem(key=f"clip{i}", generated=gen, reference=real, real=real))
  return items


def networks(groups, devices):
  placement = {"fixed_batch": True, "devices": devices}
  out = {}
  if "lse" in groups:
    out["syncnet_v2"] = lse.SyncNetV2Scorer(init_syncnet_v2_variables(jax.random.PRNGKey(0)),
                                            **placement)
  if "fid" in groups:
    variables = jax.jit(FIDInceptionV3().init)(
        jax.random.PRNGKey(1), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)))
    out["inception"] = fid.InceptionFeatures(variables, **placement)
  return out


def _timed(items, suite) -> tuple[list[dict], float, float]:
  with tempfile.TemporaryDirectory() as out_dir:
    wall, cpu = time.time(), time.process_time()
    result = runner.run_shard(items, suite, runner.RunOptions(
        setting="reconstruction", out_dir=out_dir, progress=False))
    wall, cpu = time.time() - wall, time.process_time() - cpu
  failed = [r["error"] for r in result.records if "error" in r]
  if failed:
    raise RuntimeError(f"benchmark videos failed: {failed}")
  return result.records, wall, cpu


def run(items, name: str, devices) -> dict:
  """The first video alone (XLA compilation included), then the others (timed)."""
  suite = clip_metrics.MetricSuite(crop=face_crops.parse_crop("voxceleb2"),
                                   image_metrics=evaluate.image_metrics(),
                                   **networks(METRIC_SETS[name], devices))
  _, first_s, _ = _timed(items[:1], suite)
  records, wall, cpu = _timed(items[1:], suite)
  frames = sum(r["frames"] for r in records)
  return {"metrics": name, "timed_videos": len(records), "first_video_s": round(first_s, 2),
          "videos_per_s": round(len(records) / wall, 4), "frames_per_s": round(frames / wall, 2),
          "cpu_s_per_video": round(cpu / len(records), 2)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--videos", type=int, default=4, help="videos (>= 2: one warm-up)")
  p.add_argument("--frames", type=int, default=50)
  p.add_argument("--size", type=int, default=224)
  p.add_argument("--metrics", nargs="+", default=list(METRIC_SETS), choices=list(METRIC_SETS))
  p.add_argument("--single_device", action="store_true")
  args = p.parse_args()
  devices = None if args.single_device else jax.local_devices()
  machine = {"platform": platform.platform(), "cpus": os.cpu_count(),
             "jax_devices": len(devices or [None]), "backend": jax.default_backend()}
  with tempfile.TemporaryDirectory() as root:
    items = write_videos(root, args.videos, args.frames, args.size)
    for name in args.metrics:
      row = run(items, name, devices)
      row.update(frames_per_video=args.frames, frame_size=args.size, machine=machine,
                 loadavg_1m=round(os.getloadavg()[0], 2))
      print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
