"""Goldens of the paper metrics' original code (tests/goldens, see its README).

syncnet_python (LSE-D / LSE-C, MFCC, run_pipeline's tracking and crops) and pytorch-fid (FID)
were run with deterministic weights (the fill rule of `tests.reference`); the manifests list
the original state dicts so the weights are rebuilt here.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from tests.reference import deterministic_tensor

GOLDEN_DIR = pathlib.Path(__file__).resolve().parent / "goldens"


def load_golden(name: str) -> dict[str, np.ndarray]:
  with np.load(GOLDEN_DIR / name, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def manifest_state_dict(name: str) -> dict[str, np.ndarray]:
  """The original state dict (names, shapes, dtypes as torch saves them), deterministic values."""
  with open(GOLDEN_DIR / name) as f:
    manifest = json.load(f)
  state = {}
  for tensor_name, shape in manifest["state_dict"]:
    if tensor_name.endswith("num_batches_tracked"):
      state[tensor_name] = np.zeros((), np.int64)
    else:
      state[tensor_name] = deterministic_tensor(tensor_name, shape)
  return state


def max_rel_diff(actual: np.ndarray, expected: np.ndarray) -> float:
  """max |actual - expected| relative to the largest |expected| (float32 network outputs)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def upscale_56_to_224(frames: np.ndarray) -> np.ndarray:
  """The LSE golden's video: 56x56 synthetic frames repeated 4x4 (exact, no interpolation)."""
  return np.repeat(np.repeat(frames, 4, axis=1), 4, axis=2)


def crafted_embeddings(count: int = 19, shift: int = 3, seed: int = 99
                       ) -> tuple[np.ndarray, np.ndarray]:
  """Embeddings with a known offset: audio[v] = lip[v - shift] (rolled) + noise."""
  rng = np.random.default_rng(seed)
  lip = (5 * rng.standard_normal((count, 1024))).astype(np.float32)
  audio = np.roll(lip, shift, axis=0) + 0.5 * rng.standard_normal((count, 1024))
  return lip, audio.astype(np.float32)
