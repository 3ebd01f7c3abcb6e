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
    # Statistics per channel first, then per group: reducing the flat [N, L, C] layout over L
    # is ~3x faster on CPU than reducing the [N, L, G, C/G] view over (L, C/G), and the apply
    # becomes one fused per-channel multiply-add. Two passes (mean, then centred variance)
    # keep the reference's numerics.
    flat = x32.reshape(x.shape[0], -1, channels)
    per_group = channels // self.num_groups

    def group_mean(per_channel: jax.Array) -> jax.Array:  # [N, C] -> [N, C], averaged by group
      grouped = per_channel.reshape(-1, self.num_groups, per_group).mean(axis=-1)
      return jnp.repeat(grouped, per_group, axis=-1)

    mean = group_mean(jnp.mean(flat, axis=1))
    var = group_mean(jnp.mean(jnp.square(flat - mean[:, None]), axis=1))
    mul = jax.lax.rsqrt(var + self.epsilon) * scale
    add = bias - mean * mul
    out = flat * mul[:, None] + add[:, None]
    return out.reshape(x.shape).astype(x.dtype)


class PointwiseConv(nn.Module):
  """A 1x1 convolution computed as one matrix product over the channel axis.

  Parameters have nn.Conv's names and shapes (``kernel [1, ..., 1, C_in, C_out]``, ``bias``),
  so checkpoints and the converter do not see the difference. XLA's CPU convolution runs
  1x1 kernels at a fraction of its matmul speed (46 vs ~260 GFLOP/s for the released
  model's 128x128 skip connections, benchmarks/bench_model.py); a dot is as fast on GPU/TPU.
  """
  features: int
  ndim: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (1,) * self.ndim + (in_features, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = jnp.dot(x.astype(self.dtype), kernel.reshape(in_features, self.features).astype(self.dtype))
    return y + bias.astype(self.dtype)


def conv(features: int, kernel: int | Sequence[int] = 3, *, strides: int | Sequence[int] = 1,
         dtype: Dtype = jnp.float32, name: str | None = None,
         ndim: int = 2) -> nn.Conv | PointwiseConv:
  """A 'same'-padded convolution with PyTorch's default padding ``kernel // 2``."""
  if isinstance(kernel, int):
    kernel = (kernel,) * ndim
  if isinstance(strides, int):
    strides = (strides,) * ndim
  if all(k == 1 for k in kernel) and all(s == 1 for s in strides):
    return PointwiseConv(features, ndim=len(kernel), dtype=dtype, name=name)
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


def _attention_one(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  scale = 1.0 / math.sqrt(math.sqrt(q.shape[-1]))  # split between q and k, as the reference
  logits = jnp.einsum("...thc,...shc->...hts", q * scale, k * scale)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.einsum("...hts,...shc->...thc", weights, v)


def attention_core(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(C)) v per head: ``[N, T, heads, C]`` x3 -> ``[N, T, heads, C]``.

  On CPU the batch is processed one element at a time: the ``[heads, T, T]`` logits of one
  frame stay in cache, which makes the 32x32 attention of the released model 2-3x faster
  than one batched ``[N, heads, T, T]`` product (benchmarks/bench_model.py). Accelerators
  get the batched form.
  """
  if jax.default_backend() == "cpu" and q.shape[0] > 1:
    return jax.lax.map(lambda qkv: _attention_one(*qkv), (q, k, v))
  return _attention_one(q, k, v)


# How AttentionBlock computes softmax(q k^T / sqrt(C)) v: "default" is `attention_core`;
# "dot_product_attention" is `jax.nn.dot_product_attention` (cuDNN's fused kernel on GPU).
ATTENTION_IMPLS = ("default", "dot_product_attention")


def fused_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """``attention_core`` through ``jax.nn.dot_product_attention``: ``[N, T, heads, C]`` x3 -> same.

  On GPU with bfloat16/float16 inputs it asks for cuDNN's fused flash attention; cuDNN has
  no float32 kernel, so float32 (and every other backend) uses JAX's XLA implementation,
  which also computes the logits and the softmax in float32.
  """
  cudnn = jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
  return jax.nn.dot_product_attention(q, k, v, implementation="cudnn" if cudnn else None)


class AttentionBlock(nn.Module):
  """Spatial self-attention with the 'legacy' head split (heads before q/k/v).

  ``num_head_channels != -1`` overrides ``num_heads``. ``[N, H, W, C] -> [N, H, W, C]``.
  ``attention_impl`` (one of ``ATTENTION_IMPLS``) picks the kernel; both use the same
  parameters and agree to float32 rounding.
  """
  channels: int
  num_heads: int = 1
  num_head_channels: int = -1
  dtype: Dtype = jnp.float32
  attention_impl: str = "default"

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
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, "
                       f"got {self.attention_impl!r}")
    core = fused_attention if self.attention_impl == "dot_product_attention" else attention_core
    attended = core(q, k, v).reshape(n, hgt * wid, c)
    out = nn.Dense(c, dtype=self.dtype, param_dtype=jnp.float32, name="proj_out")(attended)
    return (tokens + out).reshape(n, hgt, wid, c)
