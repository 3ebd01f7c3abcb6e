"""Device mesh and shardings: a ``data`` axis, and an optional ``fsdp`` axis for parameters.

The global batch is split over both axes (every device gets ``B / num_devices`` windows).
With ``fsdp > 1`` each parameter (and its optimizer moments and EMA copies) is split along
its largest dimension that the fsdp size divides, when it is big enough to be worth it;
XLA gathers it for the forward pass and reduce-scatters its gradient.
"""
from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXES = ("data", "fsdp")


def create_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
  """``Mesh([data, fsdp], ("data", "fsdp"))`` over all (or the given) devices.

  ``config.mesh.fsdp`` is the fsdp size (1 = pure data parallelism); ``config.mesh.data``
  may be -1 (= all remaining devices).
  """
  devices = list(devices if devices is not None else jax.devices())
  fsdp = int(config.mesh.fsdp)
  data = int(config.mesh.data)
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} must divide the number of devices ({len(devices)})")
  if data == -1:
    data = len(devices) // fsdp
  if data * fsdp != len(devices):
    raise ValueError(f"mesh data x fsdp = {data} x {fsdp} != {len(devices)} devices")
  return Mesh(np.asarray(devices).reshape(data, fsdp), ("data", "fsdp"))


def param_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
  """Shard the largest dimension divisible by ``fsdp_size``; replicate small or odd arrays."""
  if fsdp_size <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, min_size: int = 2**14) -> Any:
  """NamedShardings for every leaf of a (possibly abstract) state pytree, by shape."""
  fsdp_size = mesh.shape["fsdp"]
  return jax.tree_util.tree_map(
      lambda leaf: NamedSharding(mesh, param_spec(tuple(leaf.shape), fsdp_size, min_size)),
      abstract_state)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (window) axis over all devices, the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh,
                 keys: tuple[str, ...] = ("image", "ref_img", "indiv_mels", "mel")
                 ) -> dict[str, jax.Array]:
  """Assembles each host's slice of the batch into global arrays sharded over the mesh."""
  out = {}
  for key in keys:
    value = np.asarray(local_batch[key])
    out[key] = jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim), value)
  return out


def check_batch_divisible(global_batch_size: int, mesh: Mesh) -> None:
  if global_batch_size % mesh.size:
    raise ValueError(f"train.batch_size={global_batch_size} windows must be divisible by the "
                     f"{mesh.size} devices of the mesh {dict(mesh.shape)}")
