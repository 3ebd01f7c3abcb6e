"""Generic torch state dict -> Flax variables for models whose module names mirror torch's.

A Flax model built with the torch module path as its module names (``netcnnaud/0/kernel``,
``Mixed_5b/branch1x1/conv/kernel``) converts by rule: the torch name is the module path joined
with dots plus the torch leaf name (``kernel``/``scale`` -> ``weight``, ``mean`` ->
``running_mean``, ``var`` -> ``running_var``). Conv kernels are re-laid out OIHW -> HWIO and
Linear weights ``[out, in]`` -> ``[in, out]``; a converter overrides single tensors whose
layout differs (e.g. a Conv3d run as a Conv2d).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.porting import torch_io

TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean",
              "var": "running_var"}


@dataclasses.dataclass(frozen=True)
class TorchTensor:
  """Where one torch tensor goes: Flax path `(collection, *modules, leaf)`, its torch shape and
  the function that re-lays a torch array out for Flax."""
  path: tuple[str, ...]
  torch_shape: tuple[int, ...]
  to_flax: Callable[[np.ndarray], np.ndarray]


def _kernel_to_flax(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:       # Conv2d [O, I, kh, kw] -> [kh, kw, I, O]
    return np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 2:       # Linear [out, in] -> [in, out]
    return value.T
  raise ValueError(f"no default layout for a {value.ndim}-d kernel")


def _torch_kernel_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(flax_shape) == 4:
    kh, kw, cin, cout = flax_shape
    return (cout, cin, kh, kw)
  if len(flax_shape) == 2:
    return (flax_shape[1], flax_shape[0])
  raise ValueError(f"no default layout for a Flax kernel of shape {flax_shape}")


def _identity(value: np.ndarray) -> np.ndarray:
  return value


def mirrored_layout(variable_shapes: Mapping[str, Any]) -> dict[str, TorchTensor]:
  """`{torch name: TorchTensor}` for every leaf of a Flax variables tree (shapes or arrays).

  Args:
    variable_shapes: `{"params": ..., "batch_stats": ...}` as from `jax.eval_shape(init)`.
  """
  layout: dict[str, TorchTensor] = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(variable_shapes)[0]:
    path = tuple(str(k.key) for k in key_path)
    name = ".".join(path[1:-1] + (TORCH_LEAF[path[-1]],))
    shape = tuple(leaf.shape)
    if path[-1] == "kernel":
      layout[name] = TorchTensor(path, _torch_kernel_shape(shape), _kernel_to_flax)
    else:
      layout[name] = TorchTensor(path, shape, _identity)
  return layout


def batchnorm_counters(layout: Mapping[str, TorchTensor]) -> list[str]:
  """The `num_batches_tracked` names of the BatchNorms in `layout` (optional in files)."""
  return [name[: -len("running_mean")] + "num_batches_tracked"
          for name in layout if name.endswith(".running_mean")]


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
  """Names without DataParallel's `module.` prefix."""
  return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def convert_state_dict(state_dict: Mapping[str, Any], layout: Mapping[str, TorchTensor],
                       model_name: str, optional: Sequence[str] = ()) -> dict:
  """Checks `state_dict` against `layout` and builds the nested Flax variables (float32).

  Args:
    state_dict: torch name -> array (a `module.` prefix is stripped).
    layout: from `mirrored_layout`, possibly with overrides.
    model_name: used in the error message.
    optional: names that may be present or absent and are not converted (e.g. BatchNorm's
      `num_batches_tracked`, a classifier head the features do not use).
  Raises:
    torch_io.StateDictMismatchError: lists every missing, unexpected and mis-shaped key.
  """
  state = strip_prefix(state_dict)
  expected = {name: t.torch_shape for name, t in layout.items()}
  torch_io.check_state_dict(state, expected, model_name, optional=optional)
  variables: dict = {}
  for name, tensor in layout.items():
    value = tensor.to_flax(np.asarray(state[name], np.float32))
    node = variables
    for key in tensor.path[:-1]:
      node = node.setdefault(key, {})
    node[tensor.path[-1]] = jnp.asarray(value)
  return variables


def weights_as_variables(weights: str | os.PathLike | Mapping[str, Any],
                         load: Callable[[str | os.PathLike], dict]) -> dict:
  """Flax variables from a user's checkpoint file (read and converted by `load`) or from
  already converted `{"params": ...}` variables (as device arrays)."""
  if isinstance(weights, (str, os.PathLike)):
    weights = load(weights)
  if not isinstance(weights, Mapping) or "params" not in weights:
    raise ValueError("weights must be a checkpoint path or converted variables "
                     f"{{'params': ...}}, got {type(weights).__name__}")
  return jax.tree_util.tree_map(jnp.asarray, dict(weights))
