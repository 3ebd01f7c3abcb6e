"""pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` -> Flax `FIDInceptionV3` variables.

The file is the state dict of torchvision's `Inception3(num_classes=1008, aux_logits=False)`
with the FID blocks, i.e. torchvision names (`Conv2d_1a_3x3.conv.weight`,
`Mixed_7c.branch_pool.bn.running_var`, ...). The classifier `fc.*` and BatchNorm's
`num_batches_tracked` are accepted and ignored (FID uses the pool3 features). It is read with
the restricted reader of `torch_io` (no pickled code runs) and never downloaded.
"""
from __future__ import annotations

import functools
import os
from typing import Mapping

import jax
import numpy as np

from diff2lip_jax.models.inception_fid import FIDInceptionV3, init_inception_variables
from diff2lip_jax.porting import torch_io, torch_names

MODEL_NAME = "pytorch-fid FID Inception-v3 (pt_inception-2015-12-05-6726825d.pth)"
IGNORED = ("fc.weight", "fc.bias")


@functools.lru_cache(maxsize=1)
def _layout() -> tuple[tuple[str, torch_names.TorchTensor], ...]:
  shapes = jax.eval_shape(
      lambda: init_inception_variables(jax.random.PRNGKey(0), FIDInceptionV3()))
  return tuple(torch_names.mirrored_layout(shapes).items())


def torch_layout() -> dict[str, torch_names.TorchTensor]:
  """`{torch name: TorchTensor}` for every tensor the Flax model needs."""
  return dict(_layout())   # tracing the network for its shapes takes seconds: done once


def expected_torch_shapes() -> dict[str, tuple[int, ...]]:
  """Torch name -> torch shape of every tensor the Flax model needs (no fc, no counters)."""
  return {name: t.torch_shape for name, t in torch_layout().items()}


def params_from_torch(state_dict: Mapping[str, np.ndarray]) -> dict:
  """Converts the state dict to `{"params": ..., "batch_stats": ...}` for `FIDInceptionV3`.

  Raises `torch_io.StateDictMismatchError` listing every missing, unexpected and mis-shaped
  key at once, or ValueError for torchvision's ImageNet Inception weights (not the FID ones).
  """
  state = torch_names.strip_prefix(state_dict)
  if any(name.startswith("AuxLogits.") for name in state):
    raise ValueError("these are torchvision's ImageNet Inception-v3 weights (they have "
                     "AuxLogits); FID needs pytorch-fid's pt_inception-2015-12-05-6726825d.pth, "
                     "the TensorFlow FID graph's weights")
  layout = torch_layout()
  optional = list(IGNORED) + torch_names.batchnorm_counters(layout)
  return torch_names.convert_state_dict(state, layout, MODEL_NAME, optional=optional)


def load_inception_variables(path: str | os.PathLike) -> dict:
  """Variables from a user-supplied `pt_inception-2015-12-05-6726825d.pth`."""
  return params_from_torch(torch_io.load_torch_state_dict(path))
