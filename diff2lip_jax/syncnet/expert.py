"""SyncNet expert weights: PyTorch-style initialisation, Orbax export, and loading a frozen expert.

An expert is the ``SyncNetColor`` variables ``{"params", "batch_stats"}``. Sources that
:func:`load_syncnet_expert` accepts:

* a Wav2Lip checkpoint file (``lipsync_expert.pth``), converted by ``syncnet_convert``;
* a directory written by :func:`export_expert` (``<workdir>/expert`` of ``train_syncnet``):
  an Orbax ``CheckpointManager`` whose steps hold the items ``variables`` and ``config``;
* a ``train_syncnet`` workdir (its ``expert``, else its latest training checkpoint) or its
  ``checkpoints`` directory (steps with a ``variables`` item, among others).

All use the face input of ``syncnet_face_input`` (BGR, like the released expert's cv2 frames).
"""
from __future__ import annotations

import json
import os
import pathlib

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from diff2lip_jax import config_utils
from diff2lip_jax.models.syncnet import init_syncnet_variables
from diff2lip_jax.porting.syncnet import load_syncnet_variables

TORCH_SUFFIXES = (".pth", ".pt", ".tar")
VARIABLES_ITEM = "variables"


def torch_default_init(seed: int) -> dict:
  """SyncNet variables initialised as PyTorch does by default (how Wav2Lip's expert started).

  Conv kernels and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``kaiming_uniform_(a=sqrt(5))``),
  BatchNorm scale 1, offset 0, running mean 0, variance 1. Drawn with NumPy from ``seed``: XLA's
  compile of Flax's random initialisers takes ~10 s on CPU, this takes a fraction of a second.
  """
  shapes = jax.eval_shape(init_syncnet_variables, jax.random.PRNGKey(0))
  rng = np.random.default_rng(seed)

  def conv(layer: dict) -> dict:
    kernel = layer["kernel"].shape
    bound = 1.0 / np.sqrt(np.prod(kernel[:-1]))  # fan_in = kh * kw * in
    return {"kernel": rng.uniform(-bound, bound, kernel).astype(np.float32),
            "bias": rng.uniform(-bound, bound, layer["bias"].shape).astype(np.float32)}

  params, stats = {}, {}
  for name in sorted(shapes["params"]):  # a fixed draw order
    layer = shapes["params"][name]
    features = layer["bn"]["scale"].shape
    params[name] = {"conv": conv(layer["conv"]),
                    "bn": {"scale": np.ones(features, np.float32),
                           "bias": np.zeros(features, np.float32)}}
    stats[name] = {"bn": {"mean": np.zeros(features, np.float32),
                          "var": np.ones(features, np.float32)}}
  return {"params": params, "batch_stats": stats}


def export_expert(directory: str | os.PathLike, variables: dict,
                  config: ml_collections.ConfigDict, step: int) -> pathlib.Path:
  """Writes ``{"params", "batch_stats"}`` (+ the run's config) as step ``step`` at ``directory``.

  Orbax writes the step under a temporary name and renames it when complete. A step that
  already exists is left as it is (a finished run started again exports nothing new).
  """
  directory = pathlib.Path(directory).absolute()
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                         enable_async_checkpointing=False)
  with ocp.CheckpointManager(directory, options=options) as manager:
    if step not in manager.all_steps():
      manager.save(step, args=ocp.args.Composite(**{
          VARIABLES_ITEM: ocp.args.StandardSave(variables),
          "config": ocp.args.JsonSave(json.loads(config_utils.config_to_json(config)))}))
  return directory


def _checkpoint_dir(path: pathlib.Path) -> pathlib.Path:
  for candidate in (path / "expert", path / "checkpoints"):
    if candidate.is_dir():
      return candidate
  return path


def load_syncnet_expert(path: str | os.PathLike, step: int | None = None) -> dict:
  """SyncNet variables ``{"params", "batch_stats"}`` to use as a frozen expert.

  Args:
    path: a Wav2Lip ``.pth`` file, an exported expert directory, a ``train_syncnet`` workdir or
      its ``checkpoints`` directory (see the module docstring).
    step: checkpoint step of a directory (default: the latest).
  Returns:
    float32 variables for ``SyncNetColor().apply(variables, mel, face)`` (eval mode) on the
    first local device. Wrap them in ``jax.lax.stop_gradient`` to keep the expert frozen.
  """
  path = pathlib.Path(path)
  if path.is_file():
    if path.suffix not in TORCH_SUFFIXES:
      raise ValueError(f"{path} is a file but not a PyTorch checkpoint "
                       f"({', '.join(TORCH_SUFFIXES)}); pass a Wav2Lip lipsync_expert.pth or a "
                       "directory written by `python -m diff2lip_jax.train_syncnet`")
    return load_syncnet_variables(path)
  if not path.is_dir():
    raise FileNotFoundError(f"SyncNet expert {path} does not exist; pass lipsync_expert.pth or a "
                            "directory written by `python -m diff2lip_jax.train_syncnet`")
  directory = _checkpoint_dir(path).absolute()
  options = ocp.CheckpointManagerOptions(read_only=True, create=False)
  with ocp.CheckpointManager(directory, options=options) as manager:
    step = manager.latest_step() if step is None else step
    if step is None or not (directory / str(step) / VARIABLES_ITEM).is_dir():
      found = sorted(manager.all_steps())
      raise ValueError(f"{directory} has no checkpoint step {'' if step is None else step} with "
                       f"a '{VARIABLES_ITEM}' item (steps found: {found}); it was not written by "
                       "diff2lip_jax.train_syncnet")
    # Restore onto one local device whatever mesh saved it (a GPU pod, 8 CPU devices, ...).
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(init_syncnet_variables, jax.random.PRNGKey(0)))
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          **{VARIABLES_ITEM: ocp.args.StandardRestore(target)}))
    except (ValueError, KeyError) as error:
      raise ValueError(f"{directory / str(step) / VARIABLES_ITEM} does not hold SyncNetColor "
                       f"variables: {error}") from error
  return restored[VARIABLES_ITEM]
