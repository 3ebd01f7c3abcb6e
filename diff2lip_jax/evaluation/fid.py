"""FID as pytorch-fid (mseitzer/pytorch-fid) computes it, on face crops or any images.

  features   uint8 RGB `[N, H, W, 3]` -> `x / 255` -> bilinear resize to 299x299
             (`F.interpolate(..., align_corners=False)`, no antialiasing) -> `2x - 1` ->
             FID Inception-v3 (`models.inception_fid`) -> pool3 `[N, 2048]` (or the spatial
             mean of an earlier block for `dims` 64 / 192 / 768, as pytorch-fid's `--dims`);
  statistics `mu = mean(features)`, `sigma = np.cov(features, rowvar=False)` in float64;
  distance   `|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr(sqrtm(s1 s2))` in float64 with
             `scipy.linalg.sqrtm`; if the product's root is not finite, `eps` (1e-6) is added
             to both diagonals and the root taken again; an imaginary part is dropped when its
             diagonal is within 1e-3 of zero, otherwise it is an error.
Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (user-supplied, converted by
`porting.inception_fid`).
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from data_pipelines import crops as crops_lib
from diff2lip_jax.evaluation import batching
from diff2lip_jax.models.inception_fid import BLOCK_DIMS, INPUT_SIZE, PRECISION, FIDInceptionV3
from diff2lip_jax.porting.inception_fid import load_inception_variables

DEFAULT_DIMS = 2048
BATCH_SIZE = 50            # pytorch-fid's default (results do not depend on it)
SQRTM_EPS = 1e-6
IMAGINARY_ATOL = 1e-3


@functools.partial(jax.jit, static_argnames=("last_block",))
def _features(variables: Any, images: jax.Array, last_block: int) -> tuple[jax.Array, ...]:
  """Spatially averaged outputs of blocks 0..last_block, each `[N, BLOCK_DIMS[i]]`."""
  _, height, width, _ = images.shape
  rows = jnp.asarray(crops_lib.resize_matrix(height, INPUT_SIZE, "bilinear"), jnp.float32)
  cols = jnp.asarray(crops_lib.resize_matrix(width, INPUT_SIZE, "bilinear"), jnp.float32)
  x = images.astype(jnp.float32) / 255.0
  x = jnp.einsum("yh,nhwc,xw->nyxc", rows, x, cols, precision=PRECISION)
  outputs = FIDInceptionV3(last_block=last_block).apply(variables, 2 * x - 1)
  return tuple(jnp.mean(out, axis=(1, 2)) for out in outputs)


def _check_images(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"images must be uint8 RGB [N, H, W, 3], got {images.dtype} {images.shape} "
                     "(grayscale: repeat the channel 3 times, as pytorch-fid's RGB conversion)")
  if len(images) == 0 or min(images.shape[1:3]) < 1:
    raise ValueError(f"no images to compute features of (shape {images.shape})")
  return images


class InceptionFeatures(batching.BatchedNetwork):
  """The FID Inception with converted weights; features of uint8 images in batches
  (jitted once per batch shape and last block for the whole process, see `batching`)."""

  def __init__(self, weights: str | os.PathLike | Mapping[str, Any],
               batch_size: int = BATCH_SIZE, **placement: Any):
    """weights: `pt_inception-2015-12-05-6726825d.pth` or converted variables;
    placement: `devices`, `fixed_batch` (see `batching.BatchedNetwork`)."""
    super().__init__(weights, load_inception_variables, batch_size, **placement)

  def all_blocks(self, images_uint8: np.ndarray, last_block: int = 3) -> dict[int, np.ndarray]:
    """`{dims: [N, dims] float32}` for the blocks 0..last_block of one forward pass."""
    if last_block not in range(len(BLOCK_DIMS)):
      raise ValueError(f"last_block must be 0..{len(BLOCK_DIMS) - 1}, got {last_block}")
    images = _check_images(images_uint8)
    out: list[list[np.ndarray]] = [[] for _ in range(last_block + 1)]
    for indices, valid in self.batches(len(images)):
      for block, features in enumerate(_features(self.variables, self.place(images[indices]),
                                                    last_block)):
        out[block].append(np.asarray(features)[:valid])
    return {BLOCK_DIMS[b]: np.concatenate(f).astype(np.float32) for b, f in enumerate(out)}

  def __call__(self, images_uint8: np.ndarray, dims: int = DEFAULT_DIMS) -> np.ndarray:
    """`[N, H, W, 3]` uint8 RGB -> `[N, dims]` float32."""
    if dims not in BLOCK_DIMS:
      raise ValueError(f"dims must be one of {BLOCK_DIMS} (pytorch-fid's blocks), got {dims}")
    return self.all_blocks(images_uint8, BLOCK_DIMS.index(dims))[dims]


def inception_features(images_uint8: np.ndarray,
                       weights: str | os.PathLike | Mapping[str, Any] | None = None, *,
                       extractor: InceptionFeatures | None = None,
                       dims: int = DEFAULT_DIMS) -> np.ndarray:
  """pytorch-fid activations of `[N, H, W, 3]` uint8 RGB images -> `[N, dims]` float32.

  Pass `weights` (file or converted variables) or a reusable `extractor`.
  """
  if extractor is None:
    if weights is None:
      raise ValueError("inception_features needs the FID Inception weights: pass weights="
                       "path/to/pt_inception-2015-12-05-6726825d.pth or extractor=...")
    extractor = InceptionFeatures(weights)
  return extractor(images_uint8, dims)


def activation_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`(mu [D], sigma [D, D])` float64 of `[N, D]` features (N >= 2)."""
  act = np.asarray(features, np.float64)
  if act.ndim != 2 or len(act) < 2:
    raise ValueError(f"features must be [N, D] with N >= 2 samples, got {act.shape}")
  return np.mean(act, axis=0), np.cov(act, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
  with warnings.catch_warnings():
    # Old SciPy prints/warns about singular input; the finiteness check below handles it.
    warnings.simplefilter("ignore")
    return scipy.linalg.sqrtm(matrix)


def _trace_sqrt_product_eigh(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
  # tr(sqrtm(s1 s2)) = sum of sqrt(eigenvalues of s1^1/2 s2 s1^1/2), a symmetric PSD matrix.
  w1, v1 = np.linalg.eigh(sigma1)
  root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
  inner = root1 @ sigma2 @ root1
  return float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None))))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = SQRTM_EPS, method: str = "sqrtm") -> float:
  """Fréchet distance of two Gaussians in float64.

  method: "sqrtm" is pytorch-fid's `calculate_frechet_distance` (scipy.linalg.sqrtm of the
    product, eps fallback, imaginary-part check): the published procedure. "eigh" computes
    the same trace from symmetric eigendecompositions, for symmetric positive semi-definite
    covariances: equal up to rounding and much faster at 2048 dims (sqrtm takes minutes with
    SciPy >= 1.16 on a few cores), but not the published code path.
  """
  if method not in ("sqrtm", "eigh"):
    raise ValueError(f"method must be 'sqrtm' or 'eigh', got {method!r}")
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or mu1.ndim != 1:
    raise ValueError(f"mean vectors must be [D] of equal length, got {mu1.shape}, {mu2.shape}")
  if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
    raise ValueError(f"covariances must both be [{mu1.size}, {mu1.size}], got {sigma1.shape}, "
                     f"{sigma2.shape}")
  diff = mu1 - mu2
  if method == "eigh":
    tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2)
  else:
    tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def _trace_sqrt_product_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
  covmean = _sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    warnings.warn(f"FID: singular covariance product; adding {eps} to the diagonals")
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_ATOL):
      raise ValueError(f"FID: sqrtm(sigma1 @ sigma2) has an imaginary component of "
                       f"{np.max(np.abs(covmean.imag)):.3g}; the covariances are not valid "
                       "(not positive semi-definite?)")
    covmean = covmean.real
  return float(np.trace(covmean))


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray,
                      method: str = "sqrtm") -> float:
  """FID between two sets of `[N, D]` Inception features (`method` as `frechet_distance`)."""
  return frechet_distance(*activation_statistics(features_a), *activation_statistics(features_b),
                          method=method)


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """`(mu, sigma)` from a pytorch-fid `--save-stats` `.npz` (no pickles are loaded)."""
  with np.load(path, allow_pickle=False) as data:
    missing = [k for k in ("mu", "sigma") if k not in data.files]
    if missing:
      raise ValueError(f"{os.fspath(path)}: FID statistics need arrays 'mu' and 'sigma'; "
                       f"missing {missing} (found {data.files})")
    return np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
