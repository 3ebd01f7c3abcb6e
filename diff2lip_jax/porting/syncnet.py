"""PyTorch Wav2Lip `SyncNet_color` state dict -> Flax `SyncNetColor` variables.

Torch name `{face,audio}_encoder.{i}.conv_block.0.{weight,bias}` is the conv,
`...conv_block.1.{weight,bias,running_mean,running_var}` the BatchNorm.
"""
from __future__ import annotations

import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.porting import torch_io
from diff2lip_jax.models.syncnet import (AUDIO_ENCODER, FACE_ENCODER, SyncNetColor,
                                          init_syncnet_variables)

# torch suffix -> (flax collection, submodule, leaf)
_LEAVES = {
    "conv_block.0.weight": ("params", "conv", "kernel"),
    "conv_block.0.bias": ("params", "conv", "bias"),
    "conv_block.1.weight": ("params", "bn", "scale"),
    "conv_block.1.bias": ("params", "bn", "bias"),
    "conv_block.1.running_mean": ("batch_stats", "bn", "mean"),
    "conv_block.1.running_var": ("batch_stats", "bn", "var"),
}
_OPTIONAL_SUFFIX = "conv_block.1.num_batches_tracked"


def _torch_layout(flax_shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
  if leaf == "kernel":  # HWIO -> OIHW
    h, w, i, o = flax_shape
    return (o, i, h, w)
  return tuple(flax_shape)


def _layer_names() -> list[tuple[str, str]]:
  """(torch prefix, flax module name) for every conv block, in torch order."""
  out = []
  for stream, specs in (("face_encoder", FACE_ENCODER), ("audio_encoder", AUDIO_ENCODER)):
    out += [(f"{stream}.{i}", f"{stream}_{i}") for i in range(len(specs))]
  return out


def expected_torch_shapes(model: SyncNetColor | None = None) -> dict[str, tuple[int, ...]]:
  """Torch name -> torch shape of every tensor the Flax model needs."""
  shapes = jax.eval_shape(lambda: init_syncnet_variables(jax.random.PRNGKey(0), model))
  expected = {}
  for torch_prefix, module in _layer_names():
    for suffix, (collection, sub, leaf) in _LEAVES.items():
      flax_shape = shapes[collection][module][sub][leaf].shape
      expected[f"{torch_prefix}.{suffix}"] = _torch_layout(flax_shape, leaf)
  return expected


def params_from_torch(state_dict: Mapping[str, np.ndarray],
                      model: SyncNetColor | None = None) -> dict:
  """Converts a `SyncNet_color` state dict to `{"params": ..., "batch_stats": ...}`.

  Names may carry DataParallel's "module." prefix. Raises `StateDictMismatchError` listing
  every missing, unexpected and mis-shaped key at once.
  """
  state = {(k[len("module."):] if k.startswith("module.") else k): v
           for k, v in state_dict.items()}
  expected = expected_torch_shapes(model)
  optional = [f"{prefix}.{_OPTIONAL_SUFFIX}" for prefix, _ in _layer_names()]
  torch_io.check_state_dict(state, expected, "Wav2Lip SyncNet_color", optional=optional)
  variables: dict = {"params": {}, "batch_stats": {}}
  for torch_prefix, module in _layer_names():
    for suffix, (collection, sub, leaf) in _LEAVES.items():
      value = np.asarray(state[f"{torch_prefix}.{suffix}"], dtype=np.float32)
      if leaf == "kernel":
        value = np.transpose(value, (2, 3, 1, 0))
      variables[collection].setdefault(module, {}).setdefault(sub, {})[leaf] = jnp.asarray(value)
  return variables


def load_syncnet_variables(path: str | os.PathLike, model: SyncNetColor | None = None) -> dict:
  """Variables from a Wav2Lip checkpoint such as `lipsync_expert.pth` (`{"state_dict": ...}`)."""
  return params_from_torch(torch_io.load_torch_state_dict(path), model)
