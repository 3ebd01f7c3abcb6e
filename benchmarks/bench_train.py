"""Training throughput and model FLOP utilisation (MFU); prints one JSON object.

    python benchmarks/bench_train.py                  # released config, 1 window of 5 frames
    python benchmarks/bench_train.py --config configs/synthetic.py --windows 8
    python benchmarks/bench_train.py --dtype bfloat16 --windows 16   # on a GPU/TPU

FLOPs per step come from XLA's cost analysis of the compiled step. The peak is the
device's nominal dense bf16/fp32 rate when known (``--peak_tflops`` overrides); on CPU it
is measured with a large float32 matmul, so CPU "MFU" means "fraction of what this
machine's matmul reaches".
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from diff2lip_jax.config_utils import load_config_file  # noqa: E402
from diff2lip_jax.diffusion import create_diffusion  # noqa: E402
from diff2lip_jax.models import create_model  # noqa: E402
from diff2lip_jax.models import init_params  # noqa: E402
from diff2lip_jax.training.state import create_train_state  # noqa: E402
from diff2lip_jax.training.step import make_train_step  # noqa: E402

NOMINAL_TFLOPS = {"H100": {"bfloat16": 989.0, "float32": 67.0},
                  "H200": {"bfloat16": 989.0, "float32": 67.0},
                  "A100": {"bfloat16": 312.0, "float32": 19.5},
                  "TPU v4": {"bfloat16": 275.0, "float32": 275.0},
                  "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0}}


def measured_matmul_tflops(n: int = 2048) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  start = time.perf_counter()
  for _ in range(5):
    f(a).block_until_ready()
  return 5 * 2 * n ** 3 / (time.perf_counter() - start) / 1e12


def peak_tflops(dtype: str, override: float | None) -> tuple[float, str]:
  if override:
    return override, "given"
  kind = jax.devices()[0].device_kind
  for name, rates in NOMINAL_TFLOPS.items():
    if name.lower() in kind.lower():
      return rates[dtype] * jax.device_count(), f"nominal {name} dense {dtype}"
  return measured_matmul_tflops() * jax.device_count(), "measured float32 matmul"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..",
                                                       "configs", "released.py"))
  parser.add_argument("--windows", type=int, default=1, help="5-frame windows per step")
  parser.add_argument("--dtype", default="float32", help="float32 or bfloat16 compute")
  parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
  parser.add_argument("--remat", action="store_true", help="rematerialise blocks")
  parser.add_argument("--peak_tflops", type=float, default=None, help="override the peak")
  args = parser.parse_args(argv)

  config = load_config_file(args.config)
  config.model.dtype = args.dtype
  config.model.remat = args.remat
  for name in ("sync", "lpips", "adversarial"):  # frozen nets need user weights
    config.loss[name] = 0.0
  model = create_model(config.model)
  diffusion = create_diffusion(config.diffusion, timestep_respacing="")
  params = jax.jit(lambda r: init_params(model, config.model, r))(jax.random.PRNGKey(0))
  state = create_train_state(jax.random.PRNGKey(1), params, config)
  size, frames = int(config.model.image_size), int(config.model.nframes)
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(-1, 1, (args.windows, frames, size, size, 3)).astype(np.float32),
           "indiv_mels": rng.standard_normal((args.windows, frames, 80, 16)).astype(np.float32),
           "mel": rng.standard_normal((args.windows, 80, 16)).astype(np.float32)}
  batch["ref_img"] = batch["image"][::-1].copy()
  step = jax.jit(make_train_step(model, diffusion, config), donate_argnums=(0,))
  start = time.perf_counter()
  compiled = step.lower(state, batch, {}).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  flops = float(cost.get("flops", 0.0))
  state, metrics = compiled(state, batch, {})
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, {})
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  seconds = statistics.median(times)
  peak, peak_source = peak_tflops(args.dtype, args.peak_tflops)
  achieved = flops / seconds / 1e12
  print(json.dumps({
      "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
      "devices": jax.device_count(), "date": time.strftime("%Y-%m-%d"),
      "config": os.path.basename(args.config), "dtype": args.dtype, "remat": args.remat,
      "windows_per_step": args.windows, "frames_per_step": args.windows * frames,
      "step_s": seconds, "train_frames_per_s": args.windows * frames / seconds,
      "compile_s": compile_s, "step_tflop": flops / 1e12, "achieved_tflops": achieved,
      "peak_tflops": peak, "peak_source": peak_source, "mfu": achieved / peak,
      "loss": float(metrics["loss"])}, indent=2))


if __name__ == "__main__":
  main()
