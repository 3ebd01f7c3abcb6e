"""Training data for a run: the configured shards, or the synthetic dataset made in the workdir."""
from __future__ import annotations

import json
import logging
import os
import time

import jax
import ml_collections

from data_pipelines import input_pipeline, shards, synthetic

# Held-out synthetic clips use seeds far from the training ones, so no identity repeats.
EVAL_SEED_OFFSET = 1_000_003


def _write_synthetic(out_dir: str, num_clips: int, seed: int, config) -> None:
  done = os.path.join(out_dir, "DONE.json")
  if os.path.exists(done):
    return
  start = time.time()
  clips = synthetic.generate_dataset(num_clips, seed=seed, min_frames=config.data.min_frames,
                                     max_frames=config.data.max_frames,
                                     image_size=config.data.pipeline.image_size)
  num_shards = max(1, min(8, num_clips // 16))
  shards.write_shards(clips, out_dir, num_shards=num_shards)
  with open(done + ".tmp", "w") as f:
    json.dump({"clips": num_clips, "seed": seed, "seconds": time.time() - start}, f)
  os.replace(done + ".tmp", done)
  logging.info("wrote %d synthetic clips to %s in %.1f s", num_clips, out_dir, time.time() - start)


def resolve_shards(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, str | None]:
  """Returns ``(train_shards, eval_shards)``; makes the synthetic dataset when none is given.

  Only process 0 writes; the others wait for it (the workdir is shared storage).
  """
  if config.data.shards:
    return config.data.shards, (config.data.eval_shards or None)
  if not config.data.synthetic_clips:
    raise ValueError("config.data.shards is empty and data.synthetic_clips is 0: give shards "
                     "written by `python -m data_pipelines.prepare` (--config.data.shards=DIR)")
  train_dir = os.path.join(workdir, "data", "train")
  eval_dir = os.path.join(workdir, "data", "eval")
  if jax.process_index() == 0:
    _write_synthetic(train_dir, int(config.data.synthetic_clips), int(config.data.synthetic_seed),
                     config)
    if config.data.synthetic_eval_clips:
      _write_synthetic(eval_dir, int(config.data.synthetic_eval_clips),
                       int(config.data.synthetic_seed) + EVAL_SEED_OFFSET, config)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("synthetic data written")
  return train_dir, (eval_dir if config.data.synthetic_eval_clips else None)


def per_host_batch_size(config: ml_collections.ConfigDict) -> int:
  global_batch = int(config.train.batch_size)
  if global_batch % jax.process_count():
    raise ValueError(f"train.batch_size={global_batch} must be divisible by the "
                     f"{jax.process_count()} hosts")
  return global_batch // jax.process_count()


def train_iterator(config: ml_collections.ConfigDict, train_shards: str,
                   seed_offset: int = 0) -> input_pipeline.TrainIterator:
  pipeline = config.data.pipeline.copy_and_resolve_references()
  pipeline.num_frames = int(config.model.nframes)
  return input_pipeline.create_train_iterator(pipeline, train_shards,
                                              seed=int(config.train.seed) + seed_offset,
                                              batch_size=per_host_batch_size(config))
