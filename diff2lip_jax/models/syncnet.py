"""Wav2Lip's expert lip-sync discriminator `SyncNet_color`, in Flax Linen (NHWC).

Face stream: 5 consecutive frames, lower half only, stacked on channels (frame-major:
channel `3*t + c`), `[N, 48, 96, 15]` with values in [0, 1]. Wav2Lip feeds cv2 frames, so the
released `lipsync_expert.pth` expects BGR channel order (see `syncnet_face_input`).
Audio stream: one mel window `[N, 80, 16, 1]` (80 mel bins x 16 mel steps = 0.2 s).
Both encoders end in a 1x1 map of 512 channels, flattened and L2-normalised.

Parameter names: `face_encoder_{i}/conv/{kernel,bias}`, `face_encoder_{i}/bn/{scale,bias}` and
batch stats `face_encoder_{i}/bn/{mean,var}` (same for `audio_encoder_{i}`), mirroring the
torch names `face_encoder.{i}.conv_block.{0,1}.*` (see `syncnet_convert`).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConvSpec(NamedTuple):
  features: int
  kernel: int | tuple[int, int]
  stride: int | tuple[int, int]
  padding: int
  residual: bool = False


# Wav2Lip models/syncnet.py, layer by layer.
FACE_ENCODER: tuple[ConvSpec, ...] = (
    ConvSpec(32, 7, 1, 3),
    ConvSpec(64, 5, (1, 2), 1), ConvSpec(64, 3, 1, 1, True), ConvSpec(64, 3, 1, 1, True),
    ConvSpec(128, 3, 2, 1), ConvSpec(128, 3, 1, 1, True), ConvSpec(128, 3, 1, 1, True),
    ConvSpec(128, 3, 1, 1, True),
    ConvSpec(256, 3, 2, 1), ConvSpec(256, 3, 1, 1, True), ConvSpec(256, 3, 1, 1, True),
    ConvSpec(512, 3, 2, 1), ConvSpec(512, 3, 1, 1, True), ConvSpec(512, 3, 1, 1, True),
    ConvSpec(512, 3, 2, 1), ConvSpec(512, 3, 1, 0), ConvSpec(512, 1, 1, 0),
)
AUDIO_ENCODER: tuple[ConvSpec, ...] = (
    ConvSpec(32, 3, 1, 1), ConvSpec(32, 3, 1, 1, True), ConvSpec(32, 3, 1, 1, True),
    ConvSpec(64, 3, (3, 1), 1), ConvSpec(64, 3, 1, 1, True), ConvSpec(64, 3, 1, 1, True),
    ConvSpec(128, 3, 3, 1), ConvSpec(128, 3, 1, 1, True), ConvSpec(128, 3, 1, 1, True),
    ConvSpec(256, 3, (3, 2), 1), ConvSpec(256, 3, 1, 1, True), ConvSpec(256, 3, 1, 1, True),
    ConvSpec(512, 3, 1, 0), ConvSpec(512, 1, 1, 0),
)
FACE_SHAPE = (48, 96, 15)
MEL_SHAPE = (80, 16, 1)
SYNCNET_T = 5
SYNCNET_IMAGE_SIZE = 96


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class ConvBNReLU(nn.Module):
  """Wav2Lip `Conv2d`: conv (with bias) -> BatchNorm -> (+ input if residual) -> ReLU."""
  spec: ConvSpec
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    p = self.spec.padding
    y = nn.Conv(self.spec.features, _pair(self.spec.kernel), strides=_pair(self.spec.stride),
                padding=((p, p), (p, p)), dtype=self.dtype, name="conv")(x)
    # torch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (= flax momentum 0.9).
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="bn")(y)
    if self.spec.residual:
      y = y + x
    return nn.relu(y)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """torch `F.normalize(x, dim=-1)`: x / max(||x||, eps)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


class SyncNetColor(nn.Module):
  """Wav2Lip `SyncNet_color`. BatchNorm uses running statistics unless `train=True`."""
  dtype: Any = jnp.float32

  def setup(self):
    self.face_layers = [ConvBNReLU(s, self.dtype, name=f"face_encoder_{i}")
                        for i, s in enumerate(FACE_ENCODER)]
    self.audio_layers = [ConvBNReLU(s, self.dtype, name=f"audio_encoder_{i}")
                         for i, s in enumerate(AUDIO_ENCODER)]

  @staticmethod
  def _run(layers, x: jax.Array, what: str, expected: tuple[int, ...],
           train: bool) -> jax.Array:
    if x.ndim != 4 or tuple(x.shape[1:]) != expected:
      raise ValueError(f"SyncNetColor: {what} input must be [N, {', '.join(map(str, expected))}]"
                       f" (NHWC), got {tuple(x.shape)}")
    for layer in layers:
      x = layer(x, train)
    return l2_normalize(x.reshape(x.shape[0], -1).astype(jnp.float32))

  def encode_face(self, face: jax.Array, train: bool = False) -> jax.Array:
    """face `[N, 48, 96, 15]` in [0, 1] -> L2-normalised `[N, 512]` float32."""
    return self._run(self.face_layers, face, "face", FACE_SHAPE, train)

  def encode_audio(self, mel: jax.Array, train: bool = False) -> jax.Array:
    """mel `[N, 80, 16, 1]` -> L2-normalised `[N, 512]` float32."""
    return self._run(self.audio_layers, mel, "mel", MEL_SHAPE, train)

  def __call__(self, mel: jax.Array, face: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Returns `(audio_embedding, face_embedding)`, each `[N, 512]` (torch argument order)."""
    return self.encode_audio(mel, train), self.encode_face(face, train)


def init_syncnet_variables(rng: jax.Array, model: SyncNetColor | None = None) -> dict:
  """Random `{"params", "batch_stats"}` for a batch of one (tests, training from scratch)."""
  model = model or SyncNetColor()
  return model.init(rng, jnp.zeros((1,) + MEL_SHAPE), jnp.zeros((1,) + FACE_SHAPE))


def syncnet_face_input(frames: jax.Array, channel_order: str = "rgb") -> jax.Array:
  """Builds SyncNet's face input from a window of frames.

  Args:
    frames: `[N, 5, H, W, 3]` face crops in [0, 1] (Wav2Lip's `window / 255.`). Crops that are
      not 96x96 are bilinearly resized to 96x96 (Wav2Lip trains at 96).
    channel_order: order of the last axis of `frames`, "rgb" or "bgr". The released expert was
      trained on cv2 (BGR) images, so RGB input is flipped to BGR.
  Returns:
    `[N, 48, 96, 15]`: lower half of each frame, frames stacked on channels (3*t + c).
  """
  if frames.ndim != 5 or frames.shape[1] != SYNCNET_T or frames.shape[-1] != 3:
    raise ValueError(f"syncnet_face_input: frames must be [N, {SYNCNET_T}, H, W, 3], "
                     f"got {tuple(frames.shape)}")
  if channel_order not in ("rgb", "bgr"):
    raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
  if channel_order == "rgb":
    frames = frames[..., ::-1]
  n, t, h, w, c = frames.shape
  size = SYNCNET_IMAGE_SIZE
  if (h, w) != (size, size):
    frames = jax.image.resize(frames, (n, t, size, size, c), "linear", antialias=False)
  lower = frames[:, :, size // 2:]
  return jnp.transpose(lower, (0, 2, 3, 1, 4)).reshape(n, size // 2, size, t * c)


def _clamped_log(x: jax.Array) -> jax.Array:
  """max(log(x), -100) with finite gradients at x == 0 (where torch's clamp also applies)."""
  positive = x > 0
  return jnp.where(positive, jnp.maximum(jnp.log(jnp.where(positive, x, 1.0)), -100.0), -100.0)


def cosine_loss(audio_emb: jax.Array, face_emb: jax.Array, target: jax.Array | float,
                rescale_cosine: bool = False) -> jax.Array:
  """Wav2Lip `cosine_loss`: `BCELoss(cosine_similarity(a, v), y)`, mean over the batch.

  Args:
    audio_emb, face_emb: `[N, D]`.
    target: `[N]` or scalar, 1 for in-sync pairs and 0 for off-sync pairs.
    rescale_cosine: use `(cos + 1) / 2` as the probability. Off by default: Wav2Lip feeds the
      raw cosine, which is in [0, 1] because the embeddings are non-negative (post-ReLU).
  Returns:
    scalar float32. As torch's BCELoss, each log term is clamped at -100.
  """
  a = audio_emb.astype(jnp.float32)
  v = face_emb.astype(jnp.float32)
  eps = 1e-8  # torch cosine_similarity's eps, applied to each norm
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), eps)
  v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), eps)
  prob = jnp.sum(a * v, axis=-1)
  if rescale_cosine:
    prob = (prob + 1.0) / 2.0
  prob = jnp.clip(prob, 0.0, 1.0)  # torch would raise outside [0, 1]
  y = jnp.broadcast_to(jnp.asarray(target, jnp.float32), prob.shape)
  log_p = _clamped_log(prob)
  log_not_p = _clamped_log(1.0 - prob)
  return -jnp.mean(y * log_p + (1.0 - y) * log_not_p)


def cosine_sync_loss(audio_emb: jax.Array, face_emb: jax.Array,
                     rescale_cosine: bool = False) -> jax.Array:
  """Generator-side expert sync loss (Wav2Lip `get_sync_loss`): BCE(cos_sim, 1)."""
  return cosine_loss(audio_emb, face_emb, 1.0, rescale_cosine)
