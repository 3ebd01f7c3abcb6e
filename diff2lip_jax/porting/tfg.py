"""PyTorch Diff2Lip (TFG model) state dict <-> Flax params.

Names map by rule: numeric parts join the part before them (``input_blocks.1.0.in_layers.2``
-> ``input_blocks_1_0/in_layers_2``); ``weight`` becomes ``kernel`` (convs, linears) or
``scale`` (norms). Conv2d ``[O,I,kh,kw]`` -> ``[kh,kw,I,O]``, Conv1d ``[O,I,k]`` -> ``[k,I,O]``
(or ``[I,O]`` where the Flax layer is a Dense, as for attention's 1x1 ``qkv``), Linear
``[out,in]`` -> ``[in,out]``. The expected tree comes from the model itself, so every
config the model supports converts.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.models import param_shapes


class CheckpointMismatchError(ValueError):
  """The state dict does not fit the model built from the config."""


def flax_path_for(torch_name: str) -> tuple[str, ...]:
  """``input_blocks.1.0.in_layers.2.weight`` -> ``(input_blocks_1_0, in_layers_2, weight)``."""
  path: list[str] = []
  for part in torch_name.split("."):
    if part.isdigit() and path:
      path[-1] = f"{path[-1]}_{part}"
    else:
      path.append(part)
  return tuple(path)


def torch_to_flax_array(value: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
  """Re-lays one tensor out for Flax given the shape Flax expects."""
  value = np.asarray(value)
  if value.ndim == 4:                                   # Conv2d [O, I, kh, kw]
    value = value.transpose(2, 3, 1, 0)
  elif value.ndim == 3:                                 # Conv1d [O, I, k]
    value = value.transpose(2, 1, 0)
    if len(target_shape) == 2 and value.shape[0] == 1:  # 1x1 Conv1d as a Dense
      value = value[0]
  elif value.ndim == 2:                                 # Linear [out, in]
    value = value.T
  return value


def params_from_torch(state_dict: Mapping[str, Any], model_config: Any) -> dict:
  """Converts an original-name state dict (name -> array) to the Flax params pytree.

  Buffers that carry no parameters (``num_batches_tracked``) are ignored. Raises
  :class:`CheckpointMismatchError` listing every missing, unexpected and mis-shaped key.
  """
  expected = param_shapes(model_config)
  leaf_names = {"weight": ("kernel", "scale"), "bias": ("bias",)}
  converted: dict[tuple[str, ...], np.ndarray] = {}
  unexpected, misshaped, misshaped_targets = [], [], set()
  for name, value in state_dict.items():
    if name.endswith("num_batches_tracked"):
      continue
    path = flax_path_for(name)
    candidates = [path[:-1] + (leaf,) for leaf in leaf_names.get(path[-1], (path[-1],))]
    target = next((c for c in candidates if c in expected), None)
    if target is None:
      unexpected.append(name)
      continue
    array = torch_to_flax_array(np.asarray(value, dtype=np.float32), expected[target])
    if array.shape != expected[target]:
      misshaped.append(f"{name}: checkpoint {tuple(np.shape(value))} -> {array.shape}, "
                       f"model expects {expected[target]} at {'/'.join(target)}")
      misshaped_targets.add(target)
      continue
    converted[target] = array
  missing = ["/".join(k) for k in expected if k not in converted and k not in misshaped_targets]
  if unexpected or missing or misshaped:
    lines = [f"checkpoint does not match the model config ({len(missing)} missing, "
             f"{len(unexpected)} unexpected, {len(misshaped)} mis-shaped):"]
    lines += [f"  missing (Flax path): {m}" for m in missing]
    lines += [f"  unexpected: {u}" for u in unexpected]
    lines += [f"  mis-shaped: {m}" for m in misshaped]
    lines.append("Check that the config's model flags match the ones the checkpoint was "
                 "trained with (image_size, num_channels, num_res_blocks, attention_resolutions, "
                 "num_head_channels, use_ref, use_audio, audio_as_style, learn_sigma).")
    raise CheckpointMismatchError("\n".join(lines))
  return flax.traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in converted.items()})


def torch_name_for(path: tuple[str, ...]) -> str:
  """Inverse of :func:`flax_path_for` for model params (``kernel``/``scale`` -> ``weight``)."""
  parts = []
  for part in path[:-1]:
    tokens, nums = part.split("_"), []
    while len(tokens) > 1 and tokens[-1].isdigit():  # "input_blocks_1_0" -> "input_blocks.1.0"
      nums.insert(0, tokens.pop())
    parts.append(".".join(["_".join(tokens)] + nums))
  leaf = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
  return ".".join(parts + [leaf])


def torch_state_dict_from_params(params: Any) -> dict[str, np.ndarray]:
  """Flax params -> original-name numpy state dict (for the PyTorch Diff2Lip code).

  Attention ``qkv``/``proj_out`` Dense kernels become Conv1d weights ``[O, I, 1]`` as in
  the original; other Dense kernels become Linear weights ``[out, in]``.
  """
  out = {}
  for path, value in flax.traverse_util.flatten_dict(params).items():
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == 4:
      value = value.transpose(3, 2, 0, 1)
    elif value.ndim == 3:
      value = value.transpose(2, 1, 0)
    elif value.ndim == 2:
      value = value.T
      if path[-2] in ("qkv", "proj_out"):
        value = value[:, :, None]
    out[torch_name_for(path)] = value
  return out
