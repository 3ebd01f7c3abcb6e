"""Orbax checkpoints of a training run in ``<workdir>/checkpoints``.

Each step holds ``state`` (the whole :class:`TrainState`), ``data`` (the Grain iterator
state, so the next batch after a restore is the one an uninterrupted run would have seen),
``params`` (the EMA params to sample with) and ``config``. Orbax writes a step into a
temporary directory and renames it when complete, so a process killed mid-save leaves the
previous step as the latest; the next run resumes from there.
"""
from __future__ import annotations

import json
import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from diff2lip_jax import config_utils


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def create_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=int(config.train.keep_checkpoints), create=True,
      enable_async_checkpointing=False)
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "params": ocp.StandardCheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state: Any, params: Any, data_iterator: Any,
         config: ml_collections.ConfigDict) -> None:
  """Saves all items of ``step`` synchronously (returns once the step is committed)."""
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      params=ocp.args.StandardSave(params),
      config=ocp.args.JsonSave(json.loads(config_utils.config_to_json(config))),
      data=grain.checkpoint.CheckpointSave(data_iterator)), force=True)
  manager.wait_until_finished()


def restore_latest(manager: ocp.CheckpointManager, abstract_state: Any, data_iterator: Any
                   ) -> tuple[int | None, Any]:
  """Restores the latest complete step into ``abstract_state``'s structure and shardings.

  Returns ``(step, state)``, or ``(None, None)`` when the workdir has no checkpoint yet.
  The data iterator is restored in place.
  """
  step = manager.latest_step()
  if step is None:
    return None, None
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=grain.checkpoint.CheckpointRestore(data_iterator)))
  return step, restored["state"]


def abstract_with_shardings(state: Any, shardings: Any) -> Any:
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
