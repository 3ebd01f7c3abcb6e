"""End-to-end lip-sync inference throughput (decode, crop, sample, paste, encode); prints JSON.

    python benchmarks/bench_inference.py                         # released config, DDIM-25
    python benchmarks/bench_inference.py --respacing ddim2 --frames 16 --batch_size 8  # CPU

Renders a synthetic talking-face video (``--full_size`` square frames, 25 fps, with speech),
then times ``inference.lip_sync_video`` on it after a warm-up run that compiles the sampler.
Weights are random (``--checkpoint`` to use real ones): speed does not depend on them. Also
times each stage alone on the same frames, so the report shows where the time goes:
decode, crop, sample (the jitted DDIM loop), paste and encode.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from data_pipelines import crops, synthetic, video_io  # noqa: E402
from diff2lip_jax import config_utils, inference  # noqa: E402


def random_params(model_config, seed: int = 0) -> dict:
  import flax
  from diff2lip_jax.models import param_shapes
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in sorted(param_shapes(model_config).items()):
    if len(shape) > 1:
      flat[path] = (rng.standard_normal(shape, np.float32) / np.sqrt(np.prod(shape[:-1])))
    else:
      flat[path] = np.full(shape, float(path[-1] == "scale"), np.float32)
  return flax.traverse_util.unflatten_dict(flat)


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "configs",
                                                  "released.py"))
  p.add_argument("--checkpoint", help="real weights (default: random weights of --config)")
  p.add_argument("--frames", type=int, default=100, help="video length (frames at 25 fps)")
  p.add_argument("--full_size", type=int, default=512, help="side of the square video frames")
  p.add_argument("--respacing", default="ddim25")
  p.add_argument("--batch_size", type=int, default=32, help="frames per sampler call")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--preset", default="medium", help="x264 preset of the output")
  args = p.parse_args(argv)

  if args.checkpoint:
    sampler = inference.Diff2LipSampler.from_checkpoint(
        args.checkpoint, respacing=args.respacing, batch_size=args.batch_size, dtype=args.dtype)
  else:
    config = config_utils.load_config_file(args.config)
    sampler = inference.Diff2LipSampler(random_params(config.model), config,
                                        respacing=args.respacing, batch_size=args.batch_size,
                                        dtype=args.dtype, check=False)
  size = sampler.image_size
  work = tempfile.mkdtemp(prefix="bench_inference_")
  clip = synthetic.generate_clip(0, num_frames=args.frames, image_size=size,
                                 full_frame_size=args.full_size)
  video = video_io.write_video(os.path.join(work, "face.mp4"), clip.full_frames, audio=clip.wav,
                               audio_sr=16000, preset="veryfast")
  short = video_io.write_video(os.path.join(work, "short.mp4"),
                               clip.full_frames[:args.batch_size + 4],
                               audio=clip.wav[:(args.batch_size + 4) * 640], audio_sr=16000,
                               preset="ultrafast")
  _, compile_s = _timed(lambda: inference.lip_sync_video(
      sampler, short, short, os.path.join(work, "warmup.mp4"), preset=args.preset))
  result, total_s = _timed(lambda: inference.lip_sync_video(
      sampler, video, video, os.path.join(work, "out.mp4"), preset=args.preset))
  n = result.num_frames

  frames, decode_s = _timed(lambda: video_io.read_video(video, max_frames=n)[0])
  box = crops.voxceleb2_crop_box(*frames.shape[1:3])
  faces, crop_s = _timed(lambda: crops.crop_uint8(frames, box, size))
  mels = inference.mel_windows(clip.mel, 0, n)
  generated, sample_s = _timed(lambda: sampler.generate(faces, faces, mels))
  pasted, paste_s = _timed(lambda: crops.paste_back(frames, generated, box))
  _, encode_s = _timed(lambda: video_io.write_video(os.path.join(work, "enc.mp4"), pasted,
                                                    audio=clip.wav[:n * 640], audio_sr=16000,
                                                    preset=args.preset))
  stages = {"decode": decode_s, "crop": crop_s, "sample": sample_s, "paste": paste_s,
            "encode": encode_s}
  report = {
      "backend": jax.default_backend(), "device": str(jax.devices()[0]),
      "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
      "config": os.path.basename(args.checkpoint or args.config), "sampler": sampler.describe(),
      "frames": n, "frame_size": args.full_size, "crop_size": size,
      "warmup_compile_s": round(compile_s, 2), "end_to_end_s": round(total_s, 2),
      "end_to_end_frames_per_s": round(n / total_s, 3),
      "stage_frames_per_s": {k: round(n / v, 2) for k, v in stages.items()},
      "stage_share_of_sum": {k: round(v / sum(stages.values()), 3) for k, v in stages.items()},
      "realtime": n / total_s >= 25.0,
  }
  print(json.dumps(report, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
