"""FID statistics accumulated video by video: sums and outer products in float64.

pytorch-fid keeps every activation and calls `np.mean` / `np.cov`; over a 5k-video test list
that is millions of 2048-d rows. `FeatureMoments` keeps `n`, `sum x [D]` and `sum x x^T
[D, D]` instead (float64), which gives the same `mu` and `sigma = (S - n mu mu^T) / (n - 1)`
(np.cov's unbiased estimate) up to float64 rounding, merges across processes by addition and
saves to a small `.npz` (no pickles).
"""
from __future__ import annotations

import os
import pathlib
from typing import Mapping, Sequence

import numpy as np


class FeatureMoments:
  """Running `count`, `total [D]` and `outer [D, D]` (float64) of `[N, D]` feature rows."""

  def __init__(self, dims: int):
    if dims < 1:
      raise ValueError(f"dims must be positive, got {dims}")
    self.count = 0
    self.total = np.zeros(dims, np.float64)
    self.outer = np.zeros((dims, dims), np.float64)

  @property
  def dims(self) -> int:
    return len(self.total)

  def add(self, features: np.ndarray) -> None:
    """Adds `[N, D]` rows (any float dtype; accumulated in float64)."""
    rows = np.asarray(features, np.float64)
    if rows.ndim != 2 or rows.shape[1] != self.dims:
      raise ValueError(f"features must be [N, {self.dims}], got {rows.shape}")
    self.count += len(rows)
    self.total += rows.sum(axis=0)
    self.outer += rows.T @ rows

  def merge(self, other: "FeatureMoments") -> None:
    """Adds another accumulator (e.g. another process's shard)."""
    if other.dims != self.dims:
      raise ValueError(f"cannot merge {other.dims}-d FID statistics into {self.dims}-d ones "
                       "(runs with different --fid_dims)")
    self.count += other.count
    self.total += other.total
    self.outer += other.outer

  def statistics(self) -> tuple[np.ndarray, np.ndarray]:
    """`(mu [D], sigma [D, D])` float64, as `fid.activation_statistics` of all rows."""
    if self.count < 2:
      raise ValueError(f"FID needs at least 2 frames, got {self.count}")
    mu = self.total / self.count
    sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
    return mu, (sigma + sigma.T) / 2   # exactly symmetric, as np.cov's result


def save_moments(path: str | os.PathLike, moments: Mapping[str, FeatureMoments],
                 keys: Sequence[str], meta: str = "") -> None:
  """Writes `{name: FeatureMoments}` and the item keys they include; complete or not at all
  (temp file, fsync, rename)."""
  path = pathlib.Path(path)
  arrays = {"keys": np.asarray(list(keys), dtype=str), "meta": np.asarray(meta)}
  for name, m in moments.items():
    arrays.update({f"{name}.count": np.asarray(m.count, np.int64), f"{name}.total": m.total,
                   f"{name}.outer": m.outer})
  temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
  with open(temp, "wb") as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())
  os.replace(temp, path)


def load_moments(path: str | os.PathLike) -> tuple[dict[str, FeatureMoments], list[str], str]:
  """`(moments by name, item keys, meta)` written by `save_moments`."""
  with np.load(path, allow_pickle=False) as data:
    names = sorted({k.rsplit(".", 1)[0] for k in data.files if k.endswith(".total")})
    if "keys" not in data.files or not names:
      raise ValueError(f"{os.fspath(path)} is not an evaluation FID statistics file "
                       f"(arrays: {data.files})")
    moments = {}
    for name in names:
      m = FeatureMoments(len(data[f"{name}.total"]))
      m.count = int(data[f"{name}.count"])
      m.total = np.asarray(data[f"{name}.total"], np.float64)
      m.outer = np.asarray(data[f"{name}.outer"], np.float64)
      moments[name] = m
    return moments, [str(k) for k in data["keys"]], str(data["meta"])
