"""Converted metric networks (SyncNet for LSE, Inception for FID) run in fixed-size batches.

Jitted forwards compile once per input shape, so every batch has the same size: `batch_size`,
or the item count when there are fewer items (`fixed_batch=True`: always `batch_size`, so a
stream of videos of different lengths compiles once); the last batch is padded by repeating
its last item and the padding's outputs are dropped. With several `devices` the variables are
replicated and each batch is split over the devices along its first axis (`place`); the
batch size is rounded up to a multiple of the device count.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

from diff2lip_jax.porting import torch_names


class BatchedNetwork:
  """Holds converted `variables` and yields padded batch indices."""

  def __init__(self, weights: str | os.PathLike | Mapping[str, Any],
               load: Callable[[str | os.PathLike], dict], batch_size: int, *,
               devices: Sequence[Any] | None = None, fixed_batch: bool = False):
    """weights: a user's checkpoint file (converted by `load`) or converted variables.
    devices: split batches over these (e.g. `jax.local_devices()`); None: the default one."""
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    self.variables = torch_names.weights_as_variables(weights, load)
    self.fixed_batch = fixed_batch
    self._split = None
    self._multiple = 1
    if devices is not None and len(devices) > 1:
      mesh = jax.sharding.Mesh(np.asarray(list(devices)), ("batch",))
      spec = jax.sharding.PartitionSpec
      self._split = jax.sharding.NamedSharding(mesh, spec("batch"))
      self.variables = jax.device_put(self.variables, jax.sharding.NamedSharding(mesh, spec()))
      self._multiple = len(devices)
    self.batch_size = -(-int(batch_size) // self._multiple) * self._multiple

  def place(self, batch: np.ndarray) -> Any:
    """The batch as the network's input: split over the devices, or unchanged."""
    return batch if self._split is None else jax.device_put(batch, self._split)

  def batches(self, count: int) -> Iterator[tuple[np.ndarray, int]]:
    """`(indices [size], valid)` covering `0..count-1`; indices past `valid` are padding."""
    size = self.batch_size if self.fixed_batch else min(self.batch_size, count)
    size = -(-size // self._multiple) * self._multiple
    for start in range(0, count, size):
      indices = np.arange(start, min(count, start + size))
      yield np.pad(indices, (0, size - len(indices)), mode="edge"), len(indices)
