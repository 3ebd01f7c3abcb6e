"""The FID Inception-v3 (TensorFlow's 2015-12-05 graph as ported by pytorch-fid) in Flax (NHWC).

torchvision's Inception3 layers with pytorch-fid's FID patches: the 3x3 average pools of
the A, C and E blocks exclude padding from the mean (`count_include_pad=False`), and the last
E block (`Mixed_7c`) max-pools instead. Every conv is bias-free, followed by BatchNorm
(eps 1e-3, running statistics) and ReLU. Input `[N, 299, 299, 3]` RGB in [-1, 1] (see
`evaluation.fid` for the resize and scaling of uint8 images).

`__call__` returns the four pytorch-fid output blocks: 0 after the first max pool
(64 channels), 1 after the second (192), 2 before the aux classifier (768), 3 the global
average pool `[N, 1, 1, 2048]` ("pool3"). Module names mirror torchvision's
(`Mixed_5b/branch1x1/conv/kernel` is `Mixed_5b.branch1x1.conv.weight`). Convolutions use
full float32 precision (`PRECISION`), so GPUs/TPUs do not drift from the published values
through TF32/bf16 passes.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_EPS = 1e-3
INPUT_SIZE = 299
BLOCK_DIMS = (64, 192, 768, 2048)
PRECISION = jax.lax.Precision.HIGHEST


class BasicConv(nn.Module):
  """torchvision `BasicConv2d`: conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU."""
  features: int
  kernel: tuple[int, int] = (1, 1)
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel, strides=(self.stride, self.stride),
                padding=tuple((p, p) for p in self.padding), use_bias=False,
                precision=PRECISION, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
  # TensorFlow's average pool: padded zeros are not counted.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3(x: jax.Array, stride: int, padding: int = 0) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(stride, stride),
                     padding=((padding, padding), (padding, padding)))


def _chain(x: jax.Array, convs: Sequence[BasicConv]) -> jax.Array:
  for conv in convs:
    x = conv(x)
  return x


class InceptionA(nn.Module):
  """Mixed_5b/5c/5d (`FIDInceptionA`)."""
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv(64, name="branch1x1")(x)
    b5 = _chain(x, [BasicConv(48, name="branch5x5_1"),
                    BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")])
    b3 = _chain(x, [BasicConv(64, name="branch3x3dbl_1"),
                    BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2"),
                    BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")])
    bp = BasicConv(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (grid reduction 35 -> 17)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv(384, (3, 3), stride=2, name="branch3x3")(x)
    bd = _chain(x, [BasicConv(64, name="branch3x3dbl_1"),
                    BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2"),
                    BasicConv(96, (3, 3), stride=2, name="branch3x3dbl_3")])
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..6e (`FIDInceptionC`), factorised 7x7 convolutions."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7, row, col = self.channels_7x7, ((1, 7), (0, 3)), ((7, 1), (3, 0))
    b1 = BasicConv(192, name="branch1x1")(x)
    b7 = _chain(x, [BasicConv(c7, name="branch7x7_1"),
                    BasicConv(c7, row[0], padding=row[1], name="branch7x7_2"),
                    BasicConv(192, col[0], padding=col[1], name="branch7x7_3")])
    bd = _chain(x, [BasicConv(c7, name="branch7x7dbl_1"),
                    BasicConv(c7, col[0], padding=col[1], name="branch7x7dbl_2"),
                    BasicConv(c7, row[0], padding=row[1], name="branch7x7dbl_3"),
                    BasicConv(c7, col[0], padding=col[1], name="branch7x7dbl_4"),
                    BasicConv(192, row[0], padding=row[1], name="branch7x7dbl_5")])
    bp = BasicConv(192, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (grid reduction 17 -> 8)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = _chain(x, [BasicConv(192, name="branch3x3_1"),
                    BasicConv(320, (3, 3), stride=2, name="branch3x3_2")])
    b7 = _chain(x, [BasicConv(192, name="branch7x7x3_1"),
                    BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2"),
                    BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3"),
                    BasicConv(192, (3, 3), stride=2, name="branch7x7x3_4")])
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (`FIDInceptionE_1`, average pool) and Mixed_7c (`FIDInceptionE_2`, max pool)."""
  max_pool: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv(320, name="branch1x1")(x)
    b3 = BasicConv(384, name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], -1)
    bd = _chain(x, [BasicConv(448, name="branch3x3dbl_1"),
                    BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")])
    bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], -1)
    pooled = _max_pool_3x3(x, 1, 1) if self.max_pool else _avg_pool_3x3(x)
    bp = BasicConv(192, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid `InceptionV3` (FID weights) up to `last_block`; see the module docstring."""
  last_block: int = 3

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    """x `[N, H, W, 3]` in [-1, 1] (pytorch-fid feeds 299x299) -> block outputs 0..last_block."""
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"FIDInceptionV3 input must be [N, H, W, 3], got {x.shape}")
    if not 0 <= self.last_block <= 3:
      raise ValueError(f"last_block must be 0..3, got {self.last_block}")
    outputs = []
    x = BasicConv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    outputs.append(x := _max_pool_3x3(x, 2))
    if self.last_block >= 1:
      x = BasicConv(80, name="Conv2d_3b_1x1")(x)
      x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
      outputs.append(x := _max_pool_3x3(x, 2))
    if self.last_block >= 2:
      for name, pool in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
        x = InceptionA(pool, name=name)(x)
      x = InceptionB(name="Mixed_6a")(x)
      for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = InceptionC(c7, name=name)(x)
      outputs.append(x)
    if self.last_block >= 3:
      x = InceptionD(name="Mixed_7a")(x)
      x = InceptionE(name="Mixed_7b")(x)
      x = InceptionE(max_pool=True, name="Mixed_7c")(x)
      outputs.append(jnp.mean(x, axis=(1, 2), keepdims=True))
    return outputs


def init_inception_variables(rng: jax.Array, model: FIDInceptionV3 | None = None,
                             image_size: int = 75) -> dict:
  """Random `{"params", "batch_stats"}` (shapes do not depend on `image_size` >= 75)."""
  model = model or FIDInceptionV3()
  return model.init(rng, jnp.zeros((1, image_size, image_size, 3)))
