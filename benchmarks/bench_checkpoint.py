"""Step-time cost of a training checkpoint, synchronous vs Orbax async, printed as JSON.

Runs the real Diff2Lip training loop pieces (``training.loop.setup``) on a config and times
every step; a step that also saves a checkpoint pays the save's blocking part (all of it for
a synchronous save; the device-to-host copy and the Grain state for an async one), and with
async saves the steps after it share the CPU with the background write. ``total_s``: all
timed steps plus the final wait for the last write.

  python benchmarks/bench_checkpoint.py                          # configs/synthetic.py
  python benchmarks/bench_checkpoint.py --steps 60 --every 5 --config.model.num_channels=64
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from diff2lip_jax import checkpoints, cli  # noqa: E402


def time_steps(config, steps: int, every: int, async_save: bool) -> dict:
  import jax
  from diff2lip_jax.training import loop, sharding
  from diff2lip_jax.training.state import inference_params
  with config.unlocked():
    config.train.async_checkpointing = async_save
    config.train.keep_checkpoints = 2
  with tempfile.TemporaryDirectory() as workdir:
    run = loop.setup(config.copy_and_resolve_references(), workdir)
    plain, saving = [], []
    for step in range(1, steps + 1):
      start = time.perf_counter()
      batch = sharding.global_batch(next(run.iterator), run.mesh)
      run.state, metrics = run.step_fn(run.state, batch, run.frozen)
      jax.block_until_ready(metrics)
      if step % every == 0:
        checkpoints.save_training_state(run.manager, step, run.state,
                                        inference_params(run.state, config), run.iterator,
                                        config)
      if step > 2:  # the first steps compile
        (saving if step % every == 0 else plain).append(time.perf_counter() - start)
    start = time.perf_counter()
    run.manager.close()
    close_s = time.perf_counter() - start
    run.logger.close()
  step_s = statistics.median(plain)
  return {"async": async_save, "total_s": round(sum(plain) + sum(saving) + close_s, 2),
          "step_s": round(step_s, 4),
          "saving_step_s": round(statistics.median(saving), 4),
          "save_cost_s": round(statistics.median(saving) - step_s, 4),
          "final_wait_s": round(close_s, 4), "saves": len(saving)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/synthetic.py")
  parser.add_argument("--steps", type=int, default=42)
  parser.add_argument("--every", type=int, default=4, help="checkpoint every N steps")
  rest, overrides = cli.split_overrides(sys.argv[1:])
  args = parser.parse_args(rest)
  cli.setup_logging()
  config = cli.load_config(args.config, overrides)
  import jax
  results = [time_steps(config, args.steps, args.every, mode) for mode in (False, True)]
  print(json.dumps({"config": args.config, "overrides": overrides, "devices": jax.device_count(),
                    "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
  main()
