"""Training data for a run: the configured shards, or the synthetic dataset made in the workdir.

Both trainers (Diff2Lip here, the SyncNet expert in ``syncnet/data.py``) make their synthetic
data with :func:`synthetic_shards_once`; :func:`per_host_batch_size` splits a global batch over
the hosts (with a message naming the config field when it cannot).
"""
from __future__ import annotations

import os

import jax
import ml_collections

from data_pipelines import grain_chain, input_pipeline, synthetic
from diff2lip_jax.training import multihost

# Held-out synthetic clips use seeds far from the training ones, so no identity repeats.
EVAL_SEED_OFFSET = 1_000_003


def synthetic_shards_once(out_dir: str | os.PathLike, *, num_clips: int, seed: int,
                          min_frames: int, max_frames: int, image_size: int,
                          num_shards: int | None = None) -> str:
  """``synthetic.write_synthetic_shards`` on process 0 while the other processes wait for it.

  With several hosts ``out_dir`` must be on storage they all share. Returns ``out_dir``.
  """
  if jax.process_index() == 0:
    synthetic.write_synthetic_shards(out_dir, num_clips, seed, min_frames, max_frames, image_size,
                                     num_shards)
  multihost.barrier(f"synthetic shards {os.fspath(out_dir)}")
  return os.fspath(out_dir)


def resolve_shards(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, str | None]:
  """Returns ``(train_shards, eval_shards)``; makes the synthetic dataset when none is given.

  Synthetic clips go to ``workdir/data/train`` and ``workdir/data/eval`` (see
  :func:`synthetic_shards_once`).
  """
  if config.data.shards:
    return config.data.shards, (config.data.eval_shards or None)
  if not config.data.synthetic_clips:
    raise ValueError("config.data.shards is empty and data.synthetic_clips is 0: give shards "
                     "written by `python -m data_pipelines.prepare` (--config.data.shards=DIR)")
  settings = dict(min_frames=int(config.data.min_frames), max_frames=int(config.data.max_frames),
                  image_size=int(config.data.pipeline.image_size))
  seed = int(config.data.synthetic_seed)
  train_dir = synthetic_shards_once(os.path.join(workdir, "data", "train"), seed=seed,
                                    num_clips=int(config.data.synthetic_clips), **settings)
  if not config.data.synthetic_eval_clips:
    return train_dir, None
  return train_dir, synthetic_shards_once(os.path.join(workdir, "data", "eval"),
                                          seed=seed + EVAL_SEED_OFFSET,
                                          num_clips=int(config.data.synthetic_eval_clips),
                                          **settings)


def per_host_batch_size(global_batch: int, name: str = "train.batch_size") -> int:
  """This host's share of a global batch; ``name`` is the config field, for the error message."""
  hosts = jax.process_count()
  if global_batch < 1 or global_batch % hosts:
    raise ValueError(f"{name}={global_batch} must be a positive multiple of the {hosts} hosts "
                     "(each host loads the same number of examples)")
  return global_batch // hosts


def train_iterator(config: ml_collections.ConfigDict, train_shards: str, seed_offset: int = 0,
                   start_step: int = 0, process_local: bool = False
                   ) -> grain_chain.TrainIterator:
  """This host's batches of the run's global example stream, from step ``start_step`` on.

  The global batches do not depend on the host count (``grain_chain``), so a run resumed at
  step ``s`` on another topology continues with the batch an uninterrupted run would use.
  ``process_local``: the whole ``train.batch_size`` on this process, as if it were the only
  host (for work one process does alone, e.g. sample grids).
  """
  pipeline = config.data.pipeline.copy_and_resolve_references()
  pipeline.num_frames = int(config.model.nframes)
  batch_size = int(config.train.batch_size)
  hosts = dict(shard_index=0, shard_count=1) if process_local else {}
  return input_pipeline.create_train_iterator(
      pipeline, train_shards, seed=int(config.train.seed) + seed_offset,
      batch_size=batch_size if process_local else per_host_batch_size(batch_size),
      start_batch=int(start_step), **hosts)
