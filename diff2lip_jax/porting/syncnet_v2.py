"""syncnet_python's `syncnet_v2.model` (a state dict of `SyncNetModel.S`) -> Flax `SyncNetV2`.

The file is a legacy-format (pre-zip) `torch.save` of the state dict; it is read with the
restricted reader of `torch_io` (no pickled code runs). Names are the torch module paths
(`netcnnaud.0.weight`, `netcnnlip.1.running_var`, `netfclip.3.bias`, ...); BatchNorm's
`num_batches_tracked` may be present or absent. The lip stream's Conv3d weights
`[O, C, T, kh, kw]` become 2-D kernels `[kh, kw, T*C, O]` (time folded into channels as
`3*t + c`, see `models.syncnet_v2`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import jax
import numpy as np

from diff2lip_jax.models.syncnet_v2 import (CLIP_FRAMES, LIP_LAYERS, SyncNetV2,
                                             init_syncnet_v2_variables)
from diff2lip_jax.porting import torch_io, torch_names

MODEL_NAME = "syncnet_python SyncNet (syncnet_v2.model)"


def _conv3d_to_flax(value: np.ndarray) -> np.ndarray:
  # [O, C, T, kh, kw] -> [kh, kw, T, C, O] -> [kh, kw, T*C, O]
  out, channels, frames, kh, kw = value.shape
  return np.transpose(value, (3, 4, 2, 1, 0)).reshape(kh, kw, frames * channels, out)


def torch_layout(model: SyncNetV2 | None = None) -> dict[str, torch_names.TorchTensor]:
  """`{torch name: TorchTensor}` for every tensor the Flax model needs."""
  shapes = jax.eval_shape(lambda: init_syncnet_v2_variables(jax.random.PRNGKey(0), model))
  layout = torch_names.mirrored_layout(shapes)
  for i, layer in enumerate(LIP_LAYERS):
    name = f"netcnnlip.{layer.index}.weight"
    kh, kw, cin, cout = shapes["params"]["netcnnlip"][str(layer.index)]["kernel"].shape
    frames = CLIP_FRAMES if i == 0 else 1
    layout[name] = dataclasses.replace(
        layout[name], torch_shape=(cout, cin // frames, frames, kh, kw), to_flax=_conv3d_to_flax)
  return layout


def expected_torch_shapes(model: SyncNetV2 | None = None) -> dict[str, tuple[int, ...]]:
  """Torch name -> torch shape of every tensor the Flax model needs (no num_batches_tracked)."""
  return {name: t.torch_shape for name, t in torch_layout(model).items()}


def params_from_torch(state_dict: Mapping[str, np.ndarray],
                      model: SyncNetV2 | None = None) -> dict:
  """Converts the state dict to `{"params": ..., "batch_stats": ...}` for `SyncNetV2`.

  Raises `torch_io.StateDictMismatchError` listing every missing, unexpected and mis-shaped
  key at once.
  """
  layout = torch_layout(model)
  return torch_names.convert_state_dict(state_dict, layout, MODEL_NAME,
                                        optional=torch_names.batchnorm_counters(layout))


def load_syncnet_v2_variables(path: str | os.PathLike, model: SyncNetV2 | None = None) -> dict:
  """Variables from a user-supplied `syncnet_v2.model` (never downloads anything)."""
  return params_from_torch(torch_io.load_torch_state_dict(path), model)
