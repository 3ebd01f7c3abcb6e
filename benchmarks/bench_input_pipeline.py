"""Training-input throughput of the Grain pipeline (samples/s), printed as JSON.

Builds shards from synthetic talking-face clips (or uses ``--shards``), then times batches from
``input_pipeline.create_train_iterator`` after a warm-up, for each requested worker count.

  python benchmarks/bench_input_pipeline.py                       # defaults: 48 clips, B=32
  python benchmarks/bench_input_pipeline.py --worker_counts 0 2 --image_dtypes float32 --seconds 20

Per example: read + CRC + parse one record, decode 10 JPEG crops (5 target + 5 reference
frames), slice 6 mel windows; per batch: stack, and for float32 convert the images.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from configs import released
from data_pipelines import input_pipeline, shards, synthetic


def time_pipeline(shard_dir: str, *, batch_size: int, worker_count: int, image_dtype: str,
                  read_threads: int, seconds: float, warmup_batches: int, seed: int) -> dict:
  config = released.get_config().data.pipeline
  config.worker_count = worker_count
  config.read_threads = read_threads
  config.image_dtype = image_dtype
  iterator = input_pipeline.create_train_iterator(config, shard_dir, seed=seed,
                                                  batch_size=batch_size, shard_index=0,
                                                  shard_count=1)
  start = time.perf_counter()
  for _ in range(warmup_batches):
    next(iterator)
  warmup_s = time.perf_counter() - start
  batches = 0
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    batches += 1
  elapsed = time.perf_counter() - start
  iterator.close()
  return {"worker_count": worker_count, "image_dtype": image_dtype, "batches": batches,
          "seconds": round(elapsed, 2), "warmup_s": round(warmup_s, 2),
          "samples_per_s": round(batches * batch_size / elapsed, 1)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shards", default=None,
                      help="existing shard directory (default: write synthetic clips to a temp dir)")
  parser.add_argument("--num_clips", type=int, default=48, help="synthetic clips to generate")
  parser.add_argument("--format", choices=sorted(shards.FORMATS), default="tfrecord")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--worker_counts", type=int, nargs="+", default=[0, 2],
                      help="Grain worker processes to time (0 = in-process)")
  parser.add_argument("--image_dtypes", nargs="+", default=["float32", "uint8"],
                      choices=["float32", "uint8"],
                      help="batch image dtype: float32 in [-1, 1] (host converts) or uint8")
  parser.add_argument("--read_threads", type=int, default=0, help="decode threads per process")
  parser.add_argument("--seconds", type=float, default=15.0, help="timed duration per setting")
  parser.add_argument("--warmup_batches", type=int, default=8)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    shard_dir = args.shards
    if shard_dir is None:
      shard_dir = os.path.join(tmp, "shards")
      start = time.perf_counter()
      shards.write_shards(synthetic.generate_dataset(args.num_clips, seed=args.seed), shard_dir,
                          num_shards=4, format=args.format)
      print(f"wrote {args.num_clips} synthetic clips in {time.perf_counter() - start:.1f} s",
            flush=True)
    load_before = os.getloadavg()[0]
    results = [time_pipeline(shard_dir, batch_size=args.batch_size, worker_count=workers,
                             image_dtype=dtype, read_threads=args.read_threads,
                             seconds=args.seconds, warmup_batches=args.warmup_batches,
                             seed=args.seed)
               for workers in args.worker_counts for dtype in args.image_dtypes]
  print(json.dumps({
      "benchmark": "input_pipeline", "format": args.format, "batch_size": args.batch_size,
      "num_frames": 5, "image_size": 128, "cpu_count": os.cpu_count(),
      "machine": platform.processor() or platform.machine(),
      # Other jobs on the machine slow every number down; the 1-minute load average says how busy.
      "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
      "results": results,
      "best_samples_per_s": {dtype: max(r["samples_per_s"] for r in results
                                        if r["image_dtype"] == dtype)
                             for dtype in args.image_dtypes}}, indent=2))


if __name__ == "__main__":
  main()
