"""S3FD face detector network (face-alignment's `net_s3fd.py` as vendored by Wav2Lip/Diff2Lip).

Flax Linen, NHWC. Input: `[N, H, W, 3]` float, BGR minus the mean (104, 117, 123) (see
`detector.preprocess`). Output: 12 maps, `(cls, reg)` for 6 scales with strides 4, 8, ..., 128;
`cls` has 2 channels (background, face) as logits, `reg` 4 channels (dx, dy, dw, dh).
Module names equal the torch attribute names (`conv1_1`, `fc7_mbox_conf`, ...).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# (name, out channels, kernel, stride, padding) of the trunk; "pool" = 2x2 max-pool (floor).
TRUNK = (
    ("conv1_1", 64, 3, 1, 1), ("conv1_2", 64, 3, 1, 1), "pool",
    ("conv2_1", 128, 3, 1, 1), ("conv2_2", 128, 3, 1, 1), "pool",
    ("conv3_1", 256, 3, 1, 1), ("conv3_2", 256, 3, 1, 1), ("conv3_3", 256, 3, 1, 1), "pool",
    ("conv4_1", 512, 3, 1, 1), ("conv4_2", 512, 3, 1, 1), ("conv4_3", 512, 3, 1, 1), "pool",
    ("conv5_1", 512, 3, 1, 1), ("conv5_2", 512, 3, 1, 1), ("conv5_3", 512, 3, 1, 1), "pool",
    # fc6 pads by 3 with a 3x3 kernel, so its map is 4 px larger than pool5's (as the reference).
    ("fc6", 1024, 3, 1, 3), ("fc7", 1024, 1, 1, 0),
    ("conv6_1", 256, 1, 1, 0), ("conv6_2", 512, 3, 2, 1),
    ("conv7_1", 128, 1, 1, 0), ("conv7_2", 256, 3, 2, 1),
)
# Feature maps feeding the heads (in stride order) and the L2Norm scale of the normalised ones.
HEAD_SOURCES = ("conv3_3", "conv4_3", "conv5_3", "fc7", "conv6_2", "conv7_2")
HEAD_PREFIX = {"conv3_3": "conv3_3_norm", "conv4_3": "conv4_3_norm", "conv5_3": "conv5_3_norm",
               "fc7": "fc7", "conv6_2": "conv6_2", "conv7_2": "conv7_2"}
L2NORM_INIT_SCALE = {"conv3_3": 10.0, "conv4_3": 8.0, "conv5_3": 5.0}
STRIDES = (4, 8, 16, 32, 64, 128)
BGR_MEAN = (104.0, 117.0, 123.0)


class L2Norm(nn.Module):
  """Per-pixel L2 normalisation over channels times a learned per-channel scale."""
  init_scale: float
  eps: float = 1e-10

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.initializers.constant(self.init_scale), (x.shape[-1],),
                       jnp.float32)
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True)) + self.eps
    return (x32 / norm * scale).astype(x.dtype)


def _conv(name: str, features: int, kernel: int, stride: int, padding: int, dtype: Any):
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), dtype=dtype, name=name)


class S3FD(nn.Module):
  """S3FD: VGG16 trunk, extra layers and 6 (cls, reg) heads."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
    """x `[N, H, W, 3]` -> (cls1, reg1, ..., cls6, reg6), each `[N, h_i, w_i, 2 | 4]` float32."""
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"S3FD input must be [N, H, W, 3] (NHWC, BGR minus mean), got {x.shape}")
    features = {}
    h = x.astype(self.dtype)
    for layer in TRUNK:
      if layer == "pool":
        h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
        continue
      name, out, kernel, stride, pad = layer
      h = nn.relu(_conv(name, out, kernel, stride, pad, self.dtype)(h))
      features[name] = h
    outputs = []
    for source in HEAD_SOURCES:
      feat = features[source]
      prefix = HEAD_PREFIX[source]
      if source in L2NORM_INIT_SCALE:
        feat = L2Norm(L2NORM_INIT_SCALE[source], name=prefix)(feat)
      cls_channels = 4 if source == "conv3_3" else 2
      cls = _conv(f"{prefix}_mbox_conf", cls_channels, 3, 1, 1, self.dtype)(feat)
      reg = _conv(f"{prefix}_mbox_loc", 4, 3, 1, 1, self.dtype)(feat)
      if source == "conv3_3":
        # "max-out background label": 3 background logits reduced to their maximum.
        cls = jnp.concatenate([jnp.max(cls[..., :3], axis=-1, keepdims=True), cls[..., 3:]], -1)
      outputs += [cls.astype(jnp.float32), reg.astype(jnp.float32)]
    return tuple(outputs)


def init_s3fd_params(rng: jax.Array, model: S3FD | None = None) -> dict:
  """Random parameters `{"params": ...}` (shape inference uses a 64x64 image)."""
  return (model or S3FD()).init(rng, jnp.zeros((1, 64, 64, 3)))
