"""PyTorch Diff2Lip checkpoint -> Flax params, and a CLI that writes an Orbax checkpoint.

    python -m diff2lip_jax.convert --torch_checkpoint model.pt --config configs/released.py \
        --out /path/to/ckpt

Names map by rule: numeric parts join the part before them (``input_blocks.1.0.in_layers.2``
-> ``input_blocks_1_0/in_layers_2``); ``weight`` becomes ``kernel`` (convs, linears) or
``scale`` (norms). Conv2d ``[O,I,kh,kw]`` -> ``[kh,kw,I,O]``, Conv1d ``[O,I,k]`` -> ``[k,I,O]``
(or ``[I,O]`` where the Flax layer is a Dense, as for attention's 1x1 ``qkv``), Linear
``[out,in]`` -> ``[in,out]``. The expected tree comes from the model itself, so every
config the model supports converts.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.models import _get, create_model


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


def _expected_params(model_config: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
  model = create_model(model_config)
  nrefer = int(_get(model_config, "nrefer", 1))
  size = int(_get(model_config, "image_size", 128))
  img = jnp.zeros((1, size, size, 3), jnp.float32)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), img, jnp.zeros((1,), jnp.int32), cond_img=img,
                         mask=jnp.zeros((1, size, size, 1)),
                         ref_img=jnp.zeros((1, size, size, 3 * nrefer)),
                         indiv_mels=jnp.zeros((1, 80, 16))))
  flat = flax.traverse_util.flatten_dict(shapes["params"])
  return {k: tuple(v.shape) for k, v in flat.items()}


def params_from_torch(state_dict: Mapping[str, Any], model_config: Any) -> dict:
  """Converts an original-name state dict (name -> array) to the Flax params pytree.

  Buffers that carry no parameters (``num_batches_tracked``) are ignored. Raises
  :class:`CheckpointMismatchError` listing every missing, unexpected and mis-shaped key.
  """
  expected = _expected_params(model_config)
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


def _select_model_state(state: Mapping[str, Any], key: str | None) -> Mapping[str, Any]:
  if key:
    if key not in state:
      raise CheckpointMismatchError(f"checkpoint has no entry {key!r}; top-level keys: "
                                    f"{sorted(state)[:10]}")
    return state[key]
  return state


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m diff2lip_jax.convert",
      description="Convert an original (PyTorch) Diff2Lip checkpoint into an Orbax checkpoint "
                  "that diff2lip_jax's sampler and trainer load. The .pt file is read without "
                  "executing pickled code.")
  parser.add_argument("--torch_checkpoint", required=True,
                      help="Path to the original .pt/.pth state dict (e.g. the released "
                           "Diff2Lip checkpoint).")
  parser.add_argument("--config", required=True,
                      help="Config file whose get_config().model matches the checkpoint, e.g. "
                           "configs/released.py.")
  parser.add_argument("--out", required=True,
                      help="Output directory for the Orbax checkpoint (must not exist yet).")
  parser.add_argument("--state_key", default=None,
                      help="Entry of the checkpoint holding the state dict if it is nested "
                           "(e.g. 'state_dict' or 'ema'); default: auto-detect.")
  args = parser.parse_args(argv)

  from diff2lip_jax import checkpoints, config_utils
  from diff2lip_jax.torch_io import load_torch_state_dict

  config = config_utils.load_config_file(args.config)
  try:
    state = load_torch_state_dict(args.torch_checkpoint, key=args.state_key)
    params = params_from_torch(state, config.model)
  except (CheckpointMismatchError, ValueError, OSError) as e:
    print(f"error: {args.torch_checkpoint}: {e}", file=sys.stderr)
    return 2
  out = os.path.abspath(args.out)
  checkpoints.save_inference_checkpoint(out, params, config)
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  print(f"wrote {out} ({n:,} parameters)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
