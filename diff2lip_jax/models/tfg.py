"""The Diff2Lip talking-face generation UNet (``TFGModel`` of the reference), NHWC."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from diff2lip_jax.models.audio_encoder import AudioEncoder
from diff2lip_jax.models.layers import (AttentionBlock, Downsample, GroupNorm32, ResBlock,
                                        Upsample, conv, timestep_embedding)

Dtype = Any


class TFGModel(nn.Module):
  """ADM UNet over ``[x_t masked, cond_img, ref_img]`` with audio conditioning.

  Call: ``(x_t [N,H,W,3], t [N], cond_img [N,H,W,3], mask [N,H,W,1],
  ref_img [N,H,W,3*nrefer], indiv_mels [N,80,16], train=False) -> [N,H,W,out_channels]``.
  ``t`` are the model's (original, un-respaced) timesteps. With ``audio_as_style`` the pooled
  audio features are added to the timestep embedding; otherwise the audio feature map is
  concatenated to the image features before the middle block.
  """
  model_channels: int
  out_channels: int
  num_res_blocks: int
  attention_ds: Sequence[int]
  channel_mult: Sequence[int]
  dropout: float = 0.0
  conv_resample: bool = True
  num_heads: int = 1
  num_head_channels: int = -1
  num_heads_upsample: int = -1
  use_scale_shift_norm: bool = False
  resblock_updown: bool = False
  use_ref: bool = True
  nrefer: int = 1
  use_audio: bool = True
  audio_as_style: bool = True
  audio_channels: int = 32
  audio_num_res_blocks: int = 2
  dtype: Dtype = jnp.float32
  remat: bool = False
  attention_impl: str = "default"   # layers.ATTENTION_IMPLS

  def _blocks(self):
    if self.remat:
      return (nn.remat(ResBlock, static_argnums=(3,)), nn.remat(AttentionBlock))
    return ResBlock, AttentionBlock

  @nn.compact
  def __call__(self, x_t: jax.Array, t: jax.Array, *, cond_img: jax.Array, mask: jax.Array,
               ref_img: jax.Array | None = None, indiv_mels: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    h = self._model_input(x_t, cond_img, mask, ref_img)
    emb, audio = self._embedding(t, indiv_mels, train)
    h, skips, chans = self._encoder(h.astype(self.dtype), emb, train)
    h = self._middle(h, emb, audio, chans[-1], train)
    h = self._decoder(h, emb, skips, chans, train)
    # The output head runs in float32, like the reference's unconverted `out` layers.
    h = nn.silu(GroupNorm32(name="out_0")(h.astype(jnp.float32)))
    return conv(self.out_channels, 3, dtype=jnp.float32, name="out_2")(h)

  # The helpers below run inside __call__'s compact scope, so the submodules they create keep
  # their explicit reference names (checkpoint conversion maps by these names).

  def _model_input(self, x_t: jax.Array, cond_img: jax.Array, mask: jax.Array,
                   ref_img: jax.Array | None) -> jax.Array:
    """``[N,H,W,6+3*nrefer]``: masked x_t over cond_img, cond_img, and the references."""
    parts = [x_t * mask + (1.0 - mask) * cond_img, cond_img]
    if self.use_ref:
      if ref_img is None or ref_img.shape[-1] != 3 * self.nrefer:
        raise ValueError(f"ref_img must be [N, H, W, {3 * self.nrefer}] (use_ref, nrefer="
                         f"{self.nrefer}), got {None if ref_img is None else ref_img.shape}")
      parts.append(ref_img)
    return jnp.concatenate(parts, axis=-1)

  def _embedding(self, t: jax.Array, indiv_mels: jax.Array | None,
                 train: bool) -> tuple[jax.Array, jax.Array | None]:
    """Timestep embedding ``[N, 4C]`` (plus pooled audio in style mode) and audio features."""
    time_dim, dt = 4 * self.model_channels, self.dtype
    emb = timestep_embedding(t, self.model_channels)
    emb = nn.Dense(time_dim, name="time_embed_0")(emb)
    emb = nn.Dense(time_dim, name="time_embed_2")(nn.silu(emb))
    if not self.use_audio:
      return emb, None
    if indiv_mels is None:
      raise ValueError("use_audio models need indiv_mels [N, 80, 16]")
    encoder = AudioEncoder(model_channels=self.audio_channels,
                           num_res_blocks=self.audio_num_res_blocks, dropout=self.dropout,
                           use_scale_shift_norm=self.use_scale_shift_norm,
                           resblock_updown=self.resblock_updown,
                           conv_resample=self.conv_resample, dtype=dt, remat=self.remat,
                           name="audio_encoder")
    audio = encoder(indiv_mels, train)
    if self.audio_as_style:
      a = nn.silu(GroupNorm32(name="audio_encoder_to_style_0")(audio))
      a = jnp.mean(a.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(dt)
      a = conv(time_dim, 1, dtype=dt, name="audio_encoder_to_style_3")(a)
      emb = emb + a.reshape(a.shape[0], time_dim).astype(emb.dtype)
    return emb, audio

  def _encoder(self, h: jax.Array, emb: jax.Array, train: bool
               ) -> tuple[jax.Array, list[jax.Array], list[int]]:
    """Input blocks; returns the features, the skip activations and their channel counts."""
    res_block, attn_block = self._blocks()
    dt = self.dtype
    ch = self.model_channels * self.channel_mult[0]
    h = conv(ch, 3, dtype=dt, name="input_blocks_0_0")(h)
    skips, chans = [h], [ch]
    index, ds = 1, 1
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        out_ch = self.model_channels * mult
        h = res_block(ch, out_ch, self.dropout, self.use_scale_shift_norm, dtype=dt,
                      name=f"input_blocks_{index}_0")(h, emb, train)
        ch = out_ch
        if ds in self.attention_ds:
          h = attn_block(ch, self.num_heads, self.num_head_channels, dtype=dt,
                         attention_impl=self.attention_impl,
                         name=f"input_blocks_{index}_1")(h)
        skips.append(h)
        chans.append(ch)
        index += 1
      if level != len(self.channel_mult) - 1:
        if self.resblock_updown:
          h = res_block(ch, ch, self.dropout, self.use_scale_shift_norm, down=True, dtype=dt,
                        name=f"input_blocks_{index}_0")(h, emb, train)
        else:
          h = Downsample(ch, self.conv_resample, dtype=dt, name=f"input_blocks_{index}_0")(h)
        skips.append(h)
        chans.append(ch)
        index, ds = index + 1, ds * 2
    return h, skips, chans

  def _middle(self, h: jax.Array, emb: jax.Array, audio: jax.Array | None, ch: int,
              train: bool) -> jax.Array:
    """Middle block, with the audio features concatenated in the non-style mode."""
    res_block, attn_block = self._blocks()
    dt, mid_in = self.dtype, ch
    if audio is not None and not self.audio_as_style:
      if audio.shape[1:3] != h.shape[1:3]:
        raise ValueError(f"audio features {audio.shape[1:3]} do not match the middle-block "
                         f"resolution {h.shape[1:3]}; concatenation needs them equal")
      h = jnp.concatenate([h, audio.astype(dt)], axis=-1)
      mid_in = ch + audio.shape[-1]
    h = res_block(mid_in, ch, self.dropout, self.use_scale_shift_norm, dtype=dt,
                  name="middle_block_0")(h, emb, train)
    h = attn_block(ch, self.num_heads, self.num_head_channels, dtype=dt,
                   attention_impl=self.attention_impl, name="middle_block_1")(h)
    return res_block(ch, ch, self.dropout, self.use_scale_shift_norm, dtype=dt,
                     name="middle_block_2")(h, emb, train)

  def _decoder(self, h: jax.Array, emb: jax.Array, skips: list[jax.Array], chans: list[int],
               train: bool) -> jax.Array:
    """Output blocks, consuming the encoder's skips (and channel counts) from the end."""
    res_block, attn_block = self._blocks()
    heads_up = self.num_heads if self.num_heads_upsample == -1 else self.num_heads_upsample
    dt, ch = self.dtype, chans[-1]
    ds = 2 ** (len(self.channel_mult) - 1)
    skips, chans = list(skips), list(chans)
    index = 0
    for level, mult in list(enumerate(self.channel_mult))[::-1]:
      for i in range(self.num_res_blocks + 1):
        skip_ch = chans.pop()
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        out_ch = self.model_channels * mult
        h = res_block(ch + skip_ch, out_ch, self.dropout, self.use_scale_shift_norm, dtype=dt,
                      name=f"output_blocks_{index}_0")(h, emb, train)
        ch, layer = out_ch, 1
        if ds in self.attention_ds:
          h = attn_block(ch, heads_up, self.num_head_channels, dtype=dt,
                         attention_impl=self.attention_impl,
                         name=f"output_blocks_{index}_1")(h)
          layer += 1
        if level and i == self.num_res_blocks:
          name = f"output_blocks_{index}_{layer}"
          if self.resblock_updown:
            h = res_block(ch, ch, self.dropout, self.use_scale_shift_norm, up=True, dtype=dt,
                          name=name)(h, emb, train)
          else:
            h = Upsample(ch, self.conv_resample, dtype=dt, name=name)(h)
          ds //= 2
        index += 1
    return h
