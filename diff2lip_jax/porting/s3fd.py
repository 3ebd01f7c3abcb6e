"""Public `s3fd.pth` (face-alignment's S3FD) state dict -> Flax `S3FD` params."""
from __future__ import annotations

import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.face_detection.s3fd import S3FD, init_s3fd_params
from diff2lip_jax.porting import torch_io


def _leaf_names(flax_params: Mapping) -> dict[str, tuple[str, str]]:
  """torch name -> (flax module, flax leaf) for every parameter of the Flax model."""
  names = {}
  for module, leaves in flax_params.items():
    for leaf in leaves:
      torch_leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
      names[f"{module}.{torch_leaf}"] = (module, leaf)
  return names


def expected_torch_shapes(model: S3FD | None = None) -> dict[str, tuple[int, ...]]:
  """Torch name -> torch shape (conv weights OIHW) of every tensor the Flax model needs."""
  params = jax.eval_shape(lambda: init_s3fd_params(jax.random.PRNGKey(0), model))["params"]
  expected = {}
  for torch_name, (module, leaf) in _leaf_names(params).items():
    shape = params[module][leaf].shape
    expected[torch_name] = (shape[3], shape[2], shape[0], shape[1]) if leaf == "kernel" else shape
  return expected


def params_from_torch(state_dict: Mapping[str, np.ndarray], model: S3FD | None = None) -> dict:
  """Converts an S3FD state dict to `{"params": ...}`.

  Raises `StateDictMismatchError` listing every missing, unexpected and mis-shaped key.
  """
  state = {(k[len("module."):] if k.startswith("module.") else k): v
           for k, v in state_dict.items()}
  expected = expected_torch_shapes(model)
  torch_io.check_state_dict(state, expected, "S3FD")
  params: dict = {}
  for torch_name in expected:
    module, torch_leaf = torch_name.rsplit(".", 1)
    value = np.asarray(state[torch_name], np.float32)
    if torch_leaf == "weight" and value.ndim == 4:
      leaf, value = "kernel", np.transpose(value, (2, 3, 1, 0))
    elif torch_leaf == "weight":
      leaf = "scale"
    else:
      leaf = "bias"
    params.setdefault(module, {})[leaf] = jnp.asarray(value)
  return {"params": params}


def load_s3fd_params(path: str | os.PathLike, model: S3FD | None = None) -> dict:
  """Params from a user-supplied S3FD checkpoint (e.g. `s3fd.pth`, zip or legacy format)."""
  return params_from_torch(torch_io.load_torch_state_dict(path), model)
