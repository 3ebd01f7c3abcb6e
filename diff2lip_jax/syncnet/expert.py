"""SyncNet expert weights: the PyTorch-style initialisation a training run starts from.

An expert is the ``SyncNetColor`` variables ``{"params", "batch_stats"}``. Exporting and
loading experts is :mod:`diff2lip_jax.checkpoints` (``export_expert``, ``load_syncnet_expert``,
re-exported here for older code).
"""
from __future__ import annotations

import jax
import numpy as np

from diff2lip_jax.checkpoints import export_expert, load_syncnet_expert  # noqa: F401
from diff2lip_jax.models.syncnet import init_syncnet_variables


def torch_default_init(seed: int) -> dict:
  """SyncNet variables initialised as PyTorch does by default (how Wav2Lip's expert started).

  Conv kernels and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``kaiming_uniform_(a=sqrt(5))``),
  BatchNorm scale 1, offset 0, running mean 0, variance 1. Drawn with NumPy from ``seed``: XLA's
  compile of Flax's random initialisers takes ~10 s on CPU, this takes a fraction of a second.
  """
  shapes = jax.eval_shape(init_syncnet_variables, jax.random.PRNGKey(0))
  rng = np.random.default_rng(seed)

  def conv(layer: dict) -> dict:
    kernel = layer["kernel"].shape
    bound = 1.0 / np.sqrt(np.prod(kernel[:-1]))  # fan_in = kh * kw * in
    return {"kernel": rng.uniform(-bound, bound, kernel).astype(np.float32),
            "bias": rng.uniform(-bound, bound, layer["bias"].shape).astype(np.float32)}

  params, stats = {}, {}
  for name in sorted(shapes["params"]):  # a fixed draw order
    layer = shapes["params"][name]
    features = layer["bn"]["scale"].shape
    params[name] = {"conv": conv(layer["conv"]),
                    "bn": {"scale": np.ones(features, np.float32),
                           "bias": np.zeros(features, np.float32)}}
    stats[name] = {"bn": {"mean": np.zeros(features, np.float32),
                          "var": np.ones(features, np.float32)}}
  return {"params": params, "batch_stats": stats}
