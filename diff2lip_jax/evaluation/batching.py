"""Converted metric networks (SyncNet for LSE, Inception for FID) run in fixed-size batches.

Jitted forwards compile once per input shape, so every batch has the same size: `batch_size`,
or the item count when there are fewer items; the last batch is padded by repeating its last
item and the padding's outputs are dropped.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from diff2lip_jax.porting import torch_names


class BatchedNetwork:
  """Holds converted `variables` and yields padded batch indices."""

  def __init__(self, weights: str | os.PathLike | Mapping[str, Any],
               load: Callable[[str | os.PathLike], dict], batch_size: int):
    """weights: a user's checkpoint file (converted by `load`) or converted variables."""
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    self.variables = torch_names.weights_as_variables(weights, load)
    self.batch_size = int(batch_size)

  def batches(self, count: int) -> Iterator[tuple[np.ndarray, int]]:
    """`(indices [size], valid)` covering `0..count-1`; indices past `valid` are padding."""
    size = min(self.batch_size, count)
    for start in range(0, count, size):
      indices = np.arange(start, min(count, start + size))
      yield np.pad(indices, (0, size - len(indices)), mode="edge"), len(indices)
