"""Face-crop sampling throughput vs device count (``Diff2LipSampler`` on a data-parallel mesh).

    python benchmarks/bench_sharded_inference.py                      # 1,2,4,8 simulated CPUs
    python benchmarks/bench_sharded_inference.py --config configs/released.py --devices 1,8 \\
        --respacing ddim25 --batch_size 16 --dtype bfloat16           # on an accelerator host

Without an accelerator the devices are simulated CPU devices
(``--xla_force_host_platform_device_count``, set here before JAX starts unless XLA_FLAGS is
given) that share the machine's cores, so on CPU the table shows the cost of splitting a
call over a mesh, not a speed-up. Each row: ``batch_size`` frames per device per call (the
frames per call grow with the devices), random weights of ``--config`` (speed does not depend
on them), one compile + warm-up call, then ``--repeats`` timed calls. Prints a Markdown table
and a JSON report.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

if "XLA_FLAGS" not in os.environ and "--help" not in sys.argv and "-h" not in sys.argv:
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks.bench_inference import random_params  # noqa: E402
from data_pipelines import synthetic  # noqa: E402
from diff2lip_jax import config_utils, inference  # noqa: E402


def measure(params, config, args, count: int) -> dict:
  """One row: compile time and steady frames/s of ``count`` devices."""
  sampler = inference.Diff2LipSampler(params, config, respacing=args.respacing,
                                      sampler=args.sampler, batch_size=args.batch_size,
                                      dtype=args.dtype, devices=jax.local_devices()[:count],
                                      check=False)
  frames_per_call = sampler.batch_size
  clip = synthetic.generate_clip(0, num_frames=frames_per_call + 4,
                                 image_size=sampler.image_size)
  frames = clip.frames[:frames_per_call]
  mels = inference.mel_windows(clip.mel, 0, frames_per_call)
  start = time.perf_counter()
  sampler.generate(frames, frames, mels)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(args.repeats):
    sampler.generate(frames, frames, mels)
  seconds = (time.perf_counter() - start) / args.repeats
  return {"devices": count, "frames_per_call": frames_per_call,
          "compile_and_first_call_s": round(compile_s, 2), "call_s": round(seconds, 3),
          "frames_per_s": round(frames_per_call / seconds, 2)}


def table(rows: list[dict]) -> str:
  base = rows[0]["frames_per_s"] / rows[0]["devices"]
  lines = ["| devices | frames/call | s/call | frames/s | frames/s per device vs first row |",
           "|---|---|---|---|---|"]
  for row in rows:
    per_device = row["frames_per_s"] / row["devices"] / base
    lines.append(f"| {row['devices']} | {row['frames_per_call']} | {row['call_s']} | "
                 f"{row['frames_per_s']} | {per_device:.2f} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..", "configs",
                                                  "synthetic.py"))
  p.add_argument("--devices", default="1,2,4,8", help="comma-separated device counts")
  p.add_argument("--respacing", default="ddim10")
  p.add_argument("--sampler", default="ddim")
  p.add_argument("--batch_size", type=int, default=8, help="frames per device per call")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--repeats", type=int, default=3, help="timed calls per row")
  args = p.parse_args(argv)
  counts = [int(c) for c in args.devices.split(",") if c.strip()]
  available = jax.local_device_count()
  if not counts or min(counts) < 1 or max(counts) > available:
    p.error(f"--devices must list counts in 1..{available} (the local devices), got "
            f"{args.devices!r}")
  config = config_utils.load_config_file(args.config)
  params = random_params(config.model)
  rows = [measure(params, config, args, count) for count in counts]
  load = os.getloadavg()
  report = {"backend": jax.default_backend(), "device": str(jax.devices()[0]),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_average_after": [round(v, 1) for v in load],
            "config": os.path.basename(args.config), "respacing": args.respacing,
            "sampler": args.sampler, "dtype": args.dtype, "batch_size_per_device":
            args.batch_size, "rows": rows}
  print(table(rows))
  print(json.dumps(report, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
