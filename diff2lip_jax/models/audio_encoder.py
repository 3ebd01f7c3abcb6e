"""Diff2Lip's convolutional audio encoder over per-frame mel windows (``TFGAudioEncoder``)."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diff2lip_jax.models.layers import Downsample, GroupNorm32, ResBlock, conv, timestep_embedding

Dtype = Any


class AudioEncoder(nn.Module):
  """Encodes ``[N, 80, 16]`` mel windows (mel bins x mel steps) to ``[N, 8, 8, out_channels]``.

  A Conv1d over time maps the 80 mel bins to ``init_spatial_dim`` rows, the result is read
  as a one-channel ``[init_spatial_dim, 16]`` image and encoded by ResBlocks whose
  downsampling halves only the height while it exceeds the width (stride (2, 1)), then both
  (stride (2, 2)). Its ResBlocks see the embedding of a fixed timestep 0.

  ``resblock_updown=False`` downsamples with strided 3x3 convs (``op``); the reference
  crashes on that flag combination, so there is no checkpoint to match for it.
  """
  audio_dim: int = 80
  audio_frames: int = 16
  init_spatial_dim: int = 64
  model_channels: int = 32
  channel_mult: Sequence[int] = (1, 2, 3, 4)
  num_res_blocks: int = 2
  dropout: float = 0.0
  use_scale_shift_norm: bool = False
  resblock_updown: bool = True
  conv_resample: bool = True
  dtype: Dtype = jnp.float32
  remat: bool = False  # rematerialise ResBlocks (recompute activations in the backward pass)

  @property
  def out_channels(self) -> int:
    return self.model_channels * self.channel_mult[-1]

  @nn.compact
  def __call__(self, mels: jax.Array, train: bool = False) -> jax.Array:
    res_block = nn.remat(ResBlock, static_argnums=(3,)) if self.remat else ResBlock
    n = mels.shape[0]
    if mels.shape[1:] != (self.audio_dim, self.audio_frames):
      raise ValueError(f"indiv_mels must be [N, {self.audio_dim}, {self.audio_frames}], "
                       f"got {mels.shape}")
    emb = timestep_embedding(jnp.zeros((n,), jnp.int32), self.model_channels)
    emb = nn.Dense(self.model_channels, name="time_embed_0")(emb)
    emb = nn.Dense(self.model_channels, name="time_embed_2")(nn.silu(emb))

    # Conv1d over the 16 mel steps with the 80 bins as channels: [N, 16, 80] -> [N, 16, 64].
    h = jnp.swapaxes(mels, 1, 2).astype(self.dtype)
    h = conv(self.init_spatial_dim, 3, dtype=self.dtype, name="input_block_0", ndim=1)(h)
    h = nn.silu(GroupNorm32(name="input_block_1")(h))
    h = jnp.swapaxes(h, 1, 2)[..., None]  # [N, 64, 16, 1]: rows = conv channels

    ch = self.model_channels * self.channel_mult[0]
    h = conv(ch, 3, dtype=self.dtype, name="encoder_blocks_0_0")(h)
    index, ds = 1, 1
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        out_ch = self.model_channels * mult
        h = res_block(ch, out_ch, self.dropout, self.use_scale_shift_norm, dtype=self.dtype,
                      name=f"encoder_blocks_{index}_0")(h, emb, train)
        ch, index = out_ch, index + 1
      if level != len(self.channel_mult) - 1:
        stride = (2, 1) if self.init_spatial_dim // ds > self.audio_frames else (2, 2)
        if self.resblock_updown:
          h = res_block(ch, ch, self.dropout, self.use_scale_shift_norm, down=True,
                        down_stride=stride, dtype=self.dtype,
                        name=f"encoder_blocks_{index}_0")(h, emb, train)
        else:
          h = Downsample(ch, self.conv_resample, stride, dtype=self.dtype,
                         name=f"encoder_blocks_{index}_0")(h)
        index, ds = index + 1, ds * 2
    return res_block(ch, self.out_channels, self.dropout, self.use_scale_shift_norm,
                     dtype=self.dtype, name="middle_block_0")(h, emb, train)
