"""Reading per-timestep tables at a batch of timesteps, and the shape checks around it."""
from __future__ import annotations

import jax.numpy as jnp


def extract(table, t: jnp.ndarray, ndim: int) -> jnp.ndarray:
  """`table[t]` as float32, shaped `[N, 1, ..., 1]` (ndim axes) to broadcast over images.

  Indexing the float64 table before the cast matches the reference's
  `th.from_numpy(arr)[t].float()`.
  """
  values = jnp.asarray(table)[jnp.asarray(t)].astype(jnp.float32)
  return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def check_batch(x: jnp.ndarray, t: jnp.ndarray) -> None:
  """Raises unless `t` is `[N]` with N the batch size of `x`."""
  t_shape = jnp.shape(t)
  if len(t_shape) != 1 or t_shape[0] != x.shape[0]:
    raise ValueError(
        f"t must be a 1-D array with one timestep per batch element ({x.shape[0]}), "
        f"got shape {t_shape}")


def check_same_shape(reference: jnp.ndarray, **others: jnp.ndarray) -> None:
  """Raises unless every keyword array has `reference`'s shape."""
  for name, value in others.items():
    if jnp.shape(value) != reference.shape:
      raise ValueError(f"{name} has shape {jnp.shape(value)}, expected {reference.shape}")
