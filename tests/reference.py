"""Access to the golden reference data in ../shared/reference (see its README).

The goldens were computed with deterministic weights: every tensor of the original PyTorch
state dict is filled from a seed derived from its name, so tests rebuild the exact weights
from the manifest alone.
"""
from __future__ import annotations

import json
import os
import pathlib
import zlib

import numpy as np

_REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_DIR = pathlib.Path(
    os.environ.get("DIFF2LIP_REFERENCE", _REPO.parent / "shared" / "reference"))


def load_npz(name: str) -> dict[str, np.ndarray]:
  with np.load(REFERENCE_DIR / name) as data:
    return {k: data[k] for k in data.files}


def load_manifest(name: str) -> dict:
  with open(REFERENCE_DIR / name) as f:
    return json.load(f)


def deterministic_tensor(name: str, shape) -> np.ndarray:
  """The README's fill rule for one tensor of the original state dict."""
  shape = tuple(shape)
  if shape == ():
    return np.zeros((), np.float32)
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  w = rng.standard_normal(shape).astype(np.float32)
  if name.endswith("bias") or name.endswith("running_mean"):
    w = 0.1 * w
  elif len(shape) == 1:
    w = 1 + 0.1 * np.abs(w)
  else:
    w = w / np.sqrt(np.prod(shape[1:]))
  return w.astype(np.float32)  # the reference loads these into float32 tensors


def deterministic_state_dict(manifest: dict) -> dict[str, np.ndarray]:
  """Original-name -> numpy array, in manifest order."""
  return {name: deterministic_tensor(name, shape) for name, shape in manifest["state_dict"]}


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (0, 2, 3, 1))


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (0, 3, 1, 2))
