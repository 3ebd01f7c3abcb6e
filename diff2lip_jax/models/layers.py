"""Building blocks of the guided-diffusion ADM UNet, in Flax Linen and NHWC.

Module and parameter names mirror the PyTorch originals (``in_layers_2`` for
``in_layers.2``) so that :mod:`diff2lip_jax.convert` can map checkpoints by rule.
Parameters are float32; ``dtype`` is the compute dtype. GroupNorm and the attention
softmax always run in float32, as in the reference.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def timestep_embedding(timesteps: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding ``[cos(t f), sin(t f)]`` (cos first, as the reference).

  Args:
    timesteps: ``[N]`` int or float timesteps.
    dim: embedding width.
  Returns:
    ``[N, dim]`` float32.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = timesteps.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


class GroupNorm32(nn.Module):
  """GroupNorm (32 groups, eps 1e-5) computed in float32, cast back to the input dtype."""
  num_groups: int = 32
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    if channels % self.num_groups:
      raise ValueError(f"GroupNorm: {channels} channels are not divisible into "
                       f"{self.num_groups} groups")
    scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    x32 = x.astype(jnp.float32)
    grouped = x32.reshape(x.shape[:-1] + (self.num_groups, channels // self.num_groups))
    axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
    mean = jnp.mean(grouped, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(grouped - mean), axis=axes, keepdims=True)
    normed = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
    return (normed * scale + bias).astype(x.dtype)


def conv(features: int, kernel: int | Sequence[int] = 3, *, strides: int | Sequence[int] = 1,
         dtype: Dtype = jnp.float32, name: str | None = None, ndim: int = 2) -> nn.Conv:
  """A 'same'-padded convolution with PyTorch's default padding ``kernel // 2``."""
  if isinstance(kernel, int):
    kernel = (kernel,) * ndim
  if isinstance(strides, int):
    strides = (strides,) * ndim
  padding = tuple((k // 2, k // 2) for k in kernel)
  return nn.Conv(features, tuple(kernel), strides=tuple(strides), padding=padding, dtype=dtype,
                 param_dtype=jnp.float32, name=name)


def avg_pool(x: jax.Array, stride: Sequence[int]) -> jax.Array:
  """Non-overlapping average pool over H and W of ``[N, H, W, C]``."""
  sh, sw = stride
  n, h, w, c = x.shape
  return x.reshape(n, h // sh, sh, w // sw, sw, c).mean(axis=(2, 4))


def upsample_nearest(x: jax.Array) -> jax.Array:
  """2x nearest-neighbour upsampling of ``[N, H, W, C]``."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Downsample(nn.Module):
  """Stride-``stride`` downsampling: a 3x3 conv (``op``) or an average pool."""
  channels: int
  use_conv: bool
  stride: tuple[int, int] = (2, 2)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.use_conv:
      return conv(self.channels, 3, strides=self.stride, dtype=self.dtype, name="op")(x)
    return avg_pool(x, self.stride)


class Upsample(nn.Module):
  """2x nearest upsampling, optionally followed by a 3x3 conv (``conv``)."""
  channels: int
  use_conv: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = upsample_nearest(x)
    if self.use_conv:
      x = conv(self.channels, 3, dtype=self.dtype, name="conv")(x)
    return x


class ResBlock(nn.Module):
  """ADM residual block conditioned on an embedding.

  ``__call__(x [N, H, W, C], emb [N, E], train) -> [N, H', W', out_channels]``; with
  ``up``/``down`` the resampling sits between in_layers' norm+SiLU and its conv.
  """
  channels: int
  out_channels: int | None = None
  dropout: float = 0.0
  use_scale_shift_norm: bool = False
  up: bool = False
  down: bool = False
  down_stride: tuple[int, int] = (2, 2)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
    out_ch = self.out_channels or self.channels
    h = nn.silu(GroupNorm32(name="in_layers_0")(x))
    if self.up:
      h, x = upsample_nearest(h), upsample_nearest(x)
    elif self.down:
      h, x = avg_pool(h, self.down_stride), avg_pool(x, self.down_stride)
    h = conv(out_ch, 3, dtype=self.dtype, name="in_layers_2")(h)

    emb_out = nn.Dense(2 * out_ch if self.use_scale_shift_norm else out_ch, dtype=self.dtype,
                       param_dtype=jnp.float32, name="emb_layers_1")(nn.silu(emb))
    emb_out = emb_out.astype(h.dtype)[:, None, None, :]
    if self.use_scale_shift_norm:
      scale, shift = jnp.split(emb_out, 2, axis=-1)
      h = GroupNorm32(name="out_layers_0")(h) * (1 + scale) + shift
    else:
      h = GroupNorm32(name="out_layers_0")(h + emb_out)
    h = nn.silu(h)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = conv(out_ch, 3, dtype=self.dtype, name="out_layers_3")(h)

    if out_ch != self.channels:
      x = conv(out_ch, 1, dtype=self.dtype, name="skip_connection")(x)
    return x + h


class AttentionBlock(nn.Module):
  """Spatial self-attention with the 'legacy' head split (heads before q/k/v).

  ``num_head_channels != -1`` overrides ``num_heads``. ``[N, H, W, C] -> [N, H, W, C]``.
  """
  channels: int
  num_heads: int = 1
  num_head_channels: int = -1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, hgt, wid, c = x.shape
    if self.num_head_channels == -1:
      heads = self.num_heads
    else:
      if c % self.num_head_channels:
        raise ValueError(f"attention: {c} channels not divisible by num_head_channels="
                         f"{self.num_head_channels}")
      heads = c // self.num_head_channels
    if c % heads:
      raise ValueError(f"attention: {c} channels not divisible by {heads} heads")
    ch = c // heads
    tokens = x.reshape(n, hgt * wid, c)
    qkv = nn.Dense(3 * c, dtype=self.dtype, param_dtype=jnp.float32, name="qkv")(
        GroupNorm32(name="norm")(tokens))
    # Legacy layout: channel index = head * 3ch + {q,k,v} * ch + c.
    q, k, v = jnp.split(qkv.reshape(n, hgt * wid, heads, 3 * ch), 3, axis=-1)
    scale = 1.0 / math.sqrt(math.sqrt(ch))
    logits = jnp.einsum("nthc,nshc->nhts", q * scale, k * scale)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    attended = jnp.einsum("nhts,nshc->nthc", weights, v).reshape(n, hgt * wid, c)
    out = nn.Dense(c, dtype=self.dtype, param_dtype=jnp.float32, name="proj_out")(attended)
    return (tokens + out).reshape(n, hgt, wid, c)
