"""Accelerator suite: one command, one JSON of the released model's speed on one chip.

    bash benchmarks/accelerator_suite.sh                  # on a GPU/TPU machine, < 8 minutes
    bash benchmarks/accelerator_suite.sh --cpu_smoke      # tiny model on CPU, < 1 minute (CI)
    python -m benchmarks.accelerator_suite --output results.json   # also write the JSON

Needs only jax (CUDA or TPU), flax, optax and numpy (orbax-checkpoint is not used), and no
network. Measures on the first device, each item compiled first and then timed warm with
``block_until_ready``: the released config's forward frames/s in float32 and bfloat16
(batch 5/32/128), DDIM-25 frames/s in bfloat16 at 128x128 through the package's sampler
(batch 128 and 256), one training step's time and MFU (XLA cost-analysis FLOPs / step time
/ the chip's nominal bf16 peak), peak device memory, and the forward with
``model.attention_impl="dot_product_attention"`` (cuDNN on GPU) against the default
attention. A wall-time guard skips (and lists) the items that would not fit ``--budget_s``;
an item that fails is reported with its error and the others still run. Progress goes to
stderr, the JSON to stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable

import jax

from benchmarks.accelerator import device as device_lib
from benchmarks.accelerator import measure
from benchmarks.accelerator.configs import suite_config

# Sizes of a full run and of --cpu_smoke: forward batches, DDIM batches and respacing,
# training windows (5 frames each), attention batch (a forward batch, so its default run is
# reused), timed calls per item, and the seconds per item the budget guard reserves
# (estimated compile + timing on an H100-class GPU, not measured; idle-CPU guesses for smoke).
# `dtype` is the compute dtype of the DDIM, training and attention items: --cpu_smoke runs
# them in float32 because XLA:CPU compiles bfloat16 graphs ~4x slower (measured 400 s vs
# 96 s for the tiny DDIM loop on the loaded 2-core VM); its bfloat16 forward still checks
# that path.
FULL = dict(forward=(5, 32, 128), ddim=(128, 256), respacing="ddim25", windows=16, attention=32,
            repeats=5, dtype="bfloat16", est_s=dict(forward=30, ddim=60, train=120, attention=40))
SMOKE = dict(forward=(2,), ddim=(2,), respacing="ddim5", windows=1, attention=2, repeats=2,
             dtype="float32", est_s=dict(forward=5, ddim=8, train=15, attention=5))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cpu_smoke", action="store_true",
                      help="tiny model and sizes: checks that every item runs (CI, any backend)")
  parser.add_argument("--budget_s", type=float, default=450.0,
                      help="wall-time budget; items that would not fit are skipped (default "
                           "450 s, leaving start-up and margin inside 8 minutes)")
  parser.add_argument("--output", default="", help="also write the JSON to this file")
  parser.add_argument("--compilation_cache", default="",
                      help="a folder for JAX's persistent compilation cache: a second run on "
                           "the same machine skips most compile time")
  return parser.parse_args(argv)


class Budget:
  """Wall time since start; ``allows(est_s)`` while ``est_s`` more seconds fit the budget."""

  def __init__(self, budget_s: float):
    self.budget_s, self.start = budget_s, time.perf_counter()

  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def allows(self, est_s: float) -> bool:
    return self.elapsed() + est_s <= self.budget_s


def plan(sizes: dict[str, Any], tiny: bool, params: Any,
         peak: float | None) -> list[tuple[tuple[str, ...], str, Callable[[], dict]]]:
  """The items in priority order: (report path, budget class, measurement thunk).

  The issue's goal metrics (DDIM-25 at batch 128, training MFU) come first, so a slow
  machine still reports them.
  """
  cfg = {dtype: suite_config(tiny=tiny, dtype=dtype) for dtype in ("float32", "bfloat16")}
  dtype, reps = sizes["dtype"], sizes["repeats"]
  fused = suite_config(tiny=tiny, dtype=dtype, attention_impl="dot_product_attention")
  ddim = [(("ddim", dtype, str(b)), "ddim",
           lambda b=b: measure.ddim(cfg[dtype], params, b, max(1, reps // 2), sizes["respacing"]))
          for b in sizes["ddim"]]
  forward = {d: [(("forward", d, str(b)), "forward",
                  lambda b=b, c=cfg[d]: measure.forward(c, params, b, reps))
                 for b in sizes["forward"]] for d in cfg}
  train = (("train_step",), "train",
           lambda: measure.train_step(cfg[dtype], params, sizes["windows"], reps, peak))
  attention = (("attention",), "attention",
               lambda: measure.attention_impls({"default": cfg[dtype],
                                                "dot_product_attention": fused},
                                               params, sizes["attention"], reps))
  return ddim[:1] + [train] + forward["bfloat16"] + [attention] + ddim[1:] + forward["float32"]


def put(report: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    report = report.setdefault(key, {})
  report[path[-1]] = value


def run_items(items, sizes: dict[str, Any], budget: Budget, report: dict) -> None:
  """Runs each item that fits the budget; records results, skips and errors in ``report``."""
  for path, kind, thunk in items:
    name = "/".join(path)
    if not budget.allows(sizes["est_s"][kind]):
      report["skipped"].append(f"{name}: skipped at {budget.elapsed():.0f} s, the "
                               f"{budget.budget_s:.0f} s budget leaves no room for it")
      continue
    _log(budget, f"{name} ...")
    try:
      result = thunk()
    except Exception as error:  # pylint: disable=broad-except  (one failure must not end the run)
      report["errors"].append(f"{name}: {type(error).__name__}: {str(error)[:500]}")
      _log(budget, f"{name} failed: {type(error).__name__}: {str(error)[:200]}")
      continue
    memory = device_lib.memory_stats()
    result["peak_bytes_in_use_so_far"] = memory and memory["peak_bytes_in_use"]
    put(report, path, result)
    rate = result.get("frames_per_s") or result.get("speedup")
    _log(budget, f"{name}: {rate:.4g}" + (" frames/s" if "frames_per_s" in result else ""))


def _log(budget: Budget, message: str) -> None:
  print(f"[accelerator_suite {budget.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict:
  args = parse_args(argv)
  budget = Budget(args.budget_s)
  if args.compilation_cache:
    jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
  backend = jax.default_backend()
  if backend == "cpu" and not args.cpu_smoke:
    raise SystemExit("error: the full suite needs a GPU or TPU (jax sees only the CPU); "
                     "run with --cpu_smoke for the small CPU check")
  sizes = SMOKE if args.cpu_smoke else FULL
  info = device_lib.device_info()
  peak, peak_note = device_lib.peak_bf16_flops(info["device_kind"])
  params = measure.random_params(suite_config(tiny=args.cpu_smoke, dtype="float32"))
  report: dict[str, Any] = {
      "suite": "diff2lip-jax accelerator suite", "mode": "cpu_smoke" if args.cpu_smoke else "full",
      "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": info,
      "model": {"config": "tiny (--cpu_smoke)" if args.cpu_smoke else "configs/released.py",
                "parameters": int(sum(p.size for p in jax.tree_util.tree_leaves(params))),
                "note": "random N(0, 0.02) params (timings do not depend on the values)"},
      "peak_bf16_flops": peak, "peak_note": peak_note, "skipped": [], "errors": []}
  run_items(plan(sizes, args.cpu_smoke, params, peak), sizes, budget, report)
  report["memory"] = device_lib.memory_stats() or {
      "note": f"{backend} devices report no memory_stats; peak device memory unknown"}
  report["imported_packages"] = device_lib.third_party_modules()
  report["budget_s"], report["elapsed_s"] = args.budget_s, budget.elapsed()
  text = json.dumps(report, indent=2, sort_keys=False, default=str)
  if args.output:
    tmp = f"{args.output}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text + "\n")
    os.replace(tmp, args.output)        # the file appears only when complete
  print(text, flush=True)
  return report


if __name__ == "__main__":
  main()
