"""Orbax checkpoints that the sampler loads: converted PyTorch weights or exported training state.

Layout: ``DIR`` is an Orbax ``CheckpointManager`` directory; each step holds an item
``params`` (the Flax params pytree used for sampling, EMA weights for trained models) and
an item ``config`` (the run's ConfigDict as JSON, so a checkpoint is self-describing).
The trainer's workdir holds such a directory under ``<workdir>/checkpoints`` with more items
(optimizer state, data iterator); :func:`load_inference_checkpoint` reads either.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from diff2lip_jax import config_utils


class CheckpointError(ValueError):
  """A checkpoint directory is missing, incomplete or does not match the model config."""


def _manager(directory: str | os.PathLike, create: bool = False) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(directory),
                               options=ocp.CheckpointManagerOptions(create=create))


def save_inference_checkpoint(directory: str | os.PathLike, params: Any,
                              config: ml_collections.ConfigDict, step: int = 0) -> None:
  """Writes ``params`` and ``config`` as step ``step`` of an Orbax checkpoint at ``directory``."""
  mngr = _manager(directory, create=True)
  mngr.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      config=ocp.args.JsonSave(json.loads(config_utils.config_to_json(config)))))
  mngr.wait_until_finished()
  mngr.close()


def resolve_checkpoint_dir(path: str | os.PathLike) -> pathlib.Path:
  """Accepts a checkpoint directory or a training workdir (uses ``<workdir>/checkpoints``)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise CheckpointError(f"checkpoint {path} does not exist; pass a directory written by "
                          "`python -m diff2lip_jax.convert` or a training --workdir")
  if (path / "checkpoints").is_dir():
    return path / "checkpoints"
  return path


def load_inference_checkpoint(path: str | os.PathLike, step: int | None = None
                              ) -> tuple[Any, ml_collections.ConfigDict]:
  """Returns ``(params, config)`` from the latest (or given) complete step at ``path``."""
  directory = resolve_checkpoint_dir(path)
  mngr = _manager(directory)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"{directory} holds no complete checkpoint step (expected numbered "
                          "step directories written by Orbax)")
  items = set(os.listdir(directory / str(step)))
  if not {"params", "config"} <= items:
    raise CheckpointError(f"{directory / str(step)} lacks the 'params' and 'config' items "
                          f"(found {sorted(items)}); it was not written by diff2lip_jax")
  restored = mngr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(), config=ocp.args.JsonRestore()))
  mngr.close()
  params = jax.tree_util.tree_map(lambda x: x, restored["params"])
  return params, config_utils.config_from_dict(restored["config"])
