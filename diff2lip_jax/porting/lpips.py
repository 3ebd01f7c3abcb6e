"""User-supplied PyTorch LPIPS weights -> Flax `LPIPS` parameters.

Accepted inputs (names after DataParallel's "module." prefix is stripped):
  * two files: torchvision's `vgg16()` / `alexnet()` state dict (`features.{i}.weight/bias`;
    `classifier.*` is ignored) and the LPIPS linear weights `weights/v0.1/{vgg,alex}.pth`
    (`lin{k}.model.1.weight`, shape [1, C, 1, 1]);
  * one combined file, in any of these layouts:
      - the two dicts merged into one;
      - `lpips.LPIPS(...).state_dict()` (richzhang): `net.slice{s}.{i}.*`, `lin{k}.model.1.weight`,
        `scaling_layer.{shift,scale}`;
      - `lpips_pytorch.LPIPS(...).state_dict()` (S-aiueo32): `net.layers.{i}.*`, `lin.{k}.1.weight`,
        `net.{mean,std}`.
Scaling buffers, when present, must equal the fixed LPIPS constants (they are not parameters).
"""
from __future__ import annotations

import os
import re
from typing import Mapping

import jax
import numpy as np

from diff2lip_jax.porting import torch_io
from diff2lip_jax.models.lpips import BACKBONES, SCALE, SHIFT, conv_indices, init_lpips_params

# alias pattern -> canonical name template (groups: layer index, leaf)
_ALIASES = (
    (re.compile(r"^net\.slice\d+\.(\d+)\.(weight|bias)$"), "features.{0}.{1}"),
    (re.compile(r"^net\.layers\.(\d+)\.(weight|bias)$"), "features.{0}.{1}"),
    (re.compile(r"^lin\.(\d+)\.1\.weight$"), "lin{0}.model.1.weight"),
    (re.compile(r"^(\d+)\.1\.weight$"), "lin{0}.model.1.weight"),  # lpips_pytorch's renamed file
    (re.compile(r"^lin(\d+)\.model\.0\.weight$"), "lin{0}.model.1.weight"),  # use_dropout=False
)
_SCALING_BUFFERS = {"scaling_layer.shift": SHIFT, "scaling_layer.scale": SCALE,
                    "net.mean": SHIFT, "net.std": SCALE}
_IGNORED = re.compile(r"^classifier\.")


def expected_torch_shapes(net: str = "vgg") -> dict[str, tuple[int, ...]]:
  """Canonical torch name -> torch shape for every tensor the Flax model needs."""
  params = jax.eval_shape(lambda: init_lpips_params(jax.random.PRNGKey(0), net))
  expected = {}
  for i in conv_indices(net):
    kh, kw, cin, cout = params[f"features_{i}"]["kernel"].shape
    expected[f"features.{i}.weight"] = (cout, cin, kh, kw)
    expected[f"features.{i}.bias"] = (cout,)
  for k, channels in enumerate(BACKBONES[net].channels):
    expected[f"lin{k}.model.1.weight"] = (1, channels, 1, 1)
  return expected


def canonicalize(state_dict: Mapping[str, np.ndarray], source: str = "state dict"
                 ) -> dict[str, np.ndarray]:
  """Renames every accepted layout to `features.{i}.*` / `lin{k}.model.1.weight`.

  Drops `classifier.*` and checks scaling buffers against the LPIPS constants.
  """
  out: dict[str, np.ndarray] = {}
  origin: dict[str, str] = {}
  for name, value in state_dict.items():
    name = name[len("module."):] if name.startswith("module.") else name
    if _IGNORED.match(name):
      continue
    if name in _SCALING_BUFFERS:
      want = np.asarray(_SCALING_BUFFERS[name], np.float32)
      got = np.asarray(value, np.float32).reshape(-1)
      if got.shape != want.shape or not np.allclose(got, want, atol=1e-6):
        raise ValueError(f"{source}: '{name}' = {got.tolist()} differs from the LPIPS v0.1 "
                         f"constant {want.tolist()}; these weights are not standard LPIPS")
      continue
    canonical = name
    for pattern, template in _ALIASES:
      match = pattern.match(name)
      if match:
        canonical = template.format(*match.groups())
        break
    if canonical in out:
      raise ValueError(f"{source}: '{name}' and '{origin[canonical]}' are the same tensor "
                       f"('{canonical}'); pass each weight once")
    out[canonical] = value
    origin[canonical] = name
  return out


def params_from_torch(state_dict: Mapping[str, np.ndarray], net: str = "vgg",
                      source: str = "state dict") -> dict:
  """Converts a (canonicalised or aliased) state dict to the Flax `LPIPS(net)` params tree.

  Raises `torch_io.StateDictMismatchError` listing every missing, unexpected and mis-shaped
  key at once.
  """
  if net not in BACKBONES:
    raise ValueError(f"LPIPS net must be one of {sorted(BACKBONES)}, got {net!r}")
  state = canonicalize(state_dict, source)
  torch_io.check_state_dict(state, expected_torch_shapes(net),
                            f"LPIPS(net={net!r}) from {source}")
  params: dict = {}
  for i in conv_indices(net):
    weight = np.asarray(state[f"features.{i}.weight"], np.float32)
    params[f"features_{i}"] = {
        "kernel": np.transpose(weight, (2, 3, 1, 0)),  # OIHW -> HWIO
        "bias": np.asarray(state[f"features.{i}.bias"], np.float32),
    }
  for k in range(len(BACKBONES[net].channels)):
    weight = np.asarray(state[f"lin{k}.model.1.weight"], np.float32)
    params[f"lin{k}"] = {"kernel": np.transpose(weight, (2, 3, 1, 0))}
  return jax.tree_util.tree_map(jax.numpy.asarray, params)


def load_lpips_params(backbone_path: str | os.PathLike, lin_path: str | os.PathLike | None = None,
                      net: str = "vgg") -> dict:
  """Flax `LPIPS(net)` params from user files (never downloads anything).

  Args:
    backbone_path: torchvision `vgg16`/`alexnet` state dict (e.g. `vgg16-397923af.pth`), or a
      combined state dict holding the lin weights too (then `lin_path` is None).
    lin_path: LPIPS linear weights, e.g. `lpips/weights/v0.1/vgg.pth`.
    net: "vgg" or "alex"; must match the files.
  Returns:
    the params tree (use as `LPIPS(net).apply({"params": params}, x, y)`).
  """
  state = dict(torch_io.load_torch_state_dict(backbone_path))
  source = os.fspath(backbone_path)
  if lin_path is not None:
    lin_state = torch_io.load_torch_state_dict(lin_path)
    both = sorted(set(state) & set(lin_state))
    if both:
      raise ValueError(f"{source} and {os.fspath(lin_path)} both define {both[:5]}; pass the "
                       "backbone and the LPIPS lin weights as separate files, or one combined file")
    state.update(lin_state)
    source = f"{source} + {os.fspath(lin_path)}"
  return params_from_torch(state, net, source)
