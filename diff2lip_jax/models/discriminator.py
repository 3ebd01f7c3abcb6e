"""Sequential adversarial discriminator over 5-frame windows of lower-half faces, and GAN losses.

Wav2Lip's `Wav2Lip_disc_qual` judges each lower-half frame on its own (frames folded into the
batch, LeakyReLU conv stack without normalisation, one sigmoid per frame). Diff2Lip's sequential
adversarial loss judges the window as a whole, so here the frames are stacked on channels
(frame-major, channel `3*t + c`, as SyncNet's face input) and the conv stack sees temporal
consistency from its first layer. The output is a PatchGAN map averaged to one logit per window.
There is no BatchNorm (no mutable state; real and fake batches never mix statistics); optional
GroupNorm.

Layers: stem conv 3x3 -> LeakyReLU, then `num_downsamples` blocks of [conv 4x4 stride 2 (torch
padding 1) -> norm -> LeakyReLU, conv 3x3 -> norm -> LeakyReLU] with widths
`min(base_features * 2**(i+1), max_features)`, then a 3x3 conv to one channel.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

LOSS_KINDS = ("hinge", "bce", "lsgan")


def lower_half_sequence(frames: jax.Array, nframes: int) -> jax.Array:
  """`[B*F, H, W, C]` (batch-major: example b's frames are rows b*F .. b*F+F-1) ->
  `[B, F, H - H//2, W, C]`, rows H//2 onward (Wav2Lip's `x[:, :, H//2:]`)."""
  if frames.ndim != 4:
    raise ValueError(f"lower_half_sequence: frames must be [B*F, H, W, C], got "
                     f"{tuple(frames.shape)}")
  if nframes < 1 or frames.shape[0] % nframes:
    raise ValueError(f"lower_half_sequence: {frames.shape[0]} frames cannot be split into "
                     f"windows of nframes={nframes}")
  n, h, w, c = frames.shape
  return frames[:, h // 2:].reshape(n // nframes, nframes, h - h // 2, w, c)


class SequenceDiscriminator(nn.Module):
  """`apply({"params": p}, frames)`: frames `[B, F, h, W, 3]` in [-1, 1] -> logits `[B]` f32
  (or the patch map `[B, h', w']` when `patch_logits`)."""
  nframes: int = 5
  base_features: int = 64
  num_downsamples: int = 4
  max_features: int = 512
  num_groups: int = 0  # 0: no normalisation; otherwise GroupNorm groups per layer
  negative_slope: float = 0.2
  patch_logits: bool = False
  dtype: Any = jnp.float32

  def _act(self, x: jax.Array) -> jax.Array:
    return nn.leaky_relu(x, self.negative_slope)

  def _norm(self, x: jax.Array, name: str) -> jax.Array:
    if not self.num_groups:
      return x
    channels = x.shape[-1]
    if channels % self.num_groups:
      raise ValueError(f"SequenceDiscriminator: num_groups={self.num_groups} does not divide "
                       f"{channels} channels of layer {name}")
    return nn.GroupNorm(num_groups=self.num_groups, dtype=self.dtype, name=name)(x)

  @nn.compact
  def __call__(self, frames: jax.Array) -> jax.Array:
    if frames.ndim != 5 or frames.shape[1] != self.nframes or frames.shape[-1] != 3:
      raise ValueError(f"SequenceDiscriminator: frames must be [B, {self.nframes}, h, W, 3] "
                       f"(lower halves, NHWC, in [-1, 1]), got {tuple(frames.shape)}")
    b, t, h, w, c = frames.shape
    min_size = 2 ** self.num_downsamples
    if h < min_size or w < min_size:
      raise ValueError(f"SequenceDiscriminator: frames of {h}x{w} are too small for "
                       f"num_downsamples={self.num_downsamples} (need >= {min_size})")
    x = jnp.transpose(frames, (0, 2, 3, 1, 4)).reshape(b, h, w, t * c).astype(self.dtype)
    conv3 = dict(kernel_size=(3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype)
    x = self._act(nn.Conv(self.base_features, name="stem", **conv3)(x))
    for i in range(self.num_downsamples):
      features = min(self.base_features * 2 ** (i + 1), self.max_features)
      x = nn.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), dtype=self.dtype,
                  name=f"down{i}")(x)
      x = self._act(self._norm(x, f"down{i}_norm"))
      x = nn.Conv(features, name=f"conv{i}", **conv3)(x)
      x = self._act(self._norm(x, f"conv{i}_norm"))
    logits = nn.Conv(1, name="head", **conv3)(x)[..., 0].astype(jnp.float32)
    return logits if self.patch_logits else jnp.mean(logits, axis=(1, 2))


def init_discriminator_params(rng: jax.Array, model: SequenceDiscriminator, height: int,
                              width: int) -> dict:
  """Params for windows of `[nframes, height, width, 3]` lower halves (e.g. 64x128 at 128px)."""
  # jit: eager init compiles every initializer op separately (seconds on CPU).
  dummy = jnp.zeros((1, model.nframes, height, width, 3), jnp.float32)
  return jax.jit(model.init)(rng, dummy)["params"]


def _check_kind(kind: str) -> None:
  if kind not in LOSS_KINDS:
    raise ValueError(f"adversarial loss kind must be one of {LOSS_KINDS}, got {kind!r}")


def discriminator_loss_terms(real_logits: jax.Array, fake_logits: jax.Array,
                             kind: str = "hinge") -> tuple[jax.Array, jax.Array]:
  """(real term, fake term), each a float32 mean over all elements of its logits:

  hinge: mean(relu(1 - real)), mean(relu(1 + fake));
  bce:   mean(softplus(-real)) = BCE(sigmoid(real), 1), mean(softplus(fake)) = BCE(sigmoid(fake), 0)
         (Wav2Lip's disc_real_loss, disc_fake_loss);
  lsgan: mean((real - 1)^2), mean(fake^2).
  """
  _check_kind(kind)
  real = real_logits.astype(jnp.float32)
  fake = fake_logits.astype(jnp.float32)
  if kind == "hinge":
    return jnp.mean(nn.relu(1.0 - real)), jnp.mean(nn.relu(1.0 + fake))
  if kind == "bce":
    return jnp.mean(jax.nn.softplus(-real)), jnp.mean(jax.nn.softplus(fake))
  return jnp.mean(jnp.square(real - 1.0)), jnp.mean(jnp.square(fake))


def generator_adversarial_loss(fake_logits: jax.Array, kind: str = "hinge") -> jax.Array:
  """Generator objective on the discriminator's logits for generated windows (float32):

  hinge: -mean(fake); bce (non-saturating): mean(softplus(-fake)) = BCE(sigmoid(fake), 1);
  lsgan: mean((fake - 1)^2).
  """
  _check_kind(kind)
  fake = fake_logits.astype(jnp.float32)
  if kind == "hinge":
    return -jnp.mean(fake)
  if kind == "bce":
    return jnp.mean(jax.nn.softplus(-fake))
  return jnp.mean(jnp.square(fake - 1.0))


def discriminator_objective(model: SequenceDiscriminator, params: Any, real_frames: jax.Array,
                            fake_frames: jax.Array, kind: str = "hinge"
                            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Discriminator-step loss; no gradient reaches the generator through `fake_frames`.

  Args: real/fake windows `[B, F, h, W, 3]` in [-1, 1]. Returns `(loss, aux)` with aux
  `{"d_real": real term, "d_fake": fake term, "logits_real": mean, "logits_fake": mean}`.
  """
  real_logits = model.apply({"params": params}, jax.lax.stop_gradient(real_frames))
  fake_logits = model.apply({"params": params}, jax.lax.stop_gradient(fake_frames))
  real_term, fake_term = discriminator_loss_terms(real_logits, fake_logits, kind)
  aux = {"d_real": real_term, "d_fake": fake_term,
         "logits_real": jnp.mean(real_logits), "logits_fake": jnp.mean(fake_logits)}
  return real_term + fake_term, aux


def generator_objective(model: SequenceDiscriminator, params: Any, fake_frames: jax.Array,
                        kind: str = "hinge") -> jax.Array:
  """Generator-step adversarial loss; the discriminator params are constants here."""
  logits = model.apply({"params": jax.lax.stop_gradient(params)}, fake_frames)
  return generator_adversarial_loss(logits, kind)
