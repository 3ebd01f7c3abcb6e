"""The original SyncNet of joonson/syncnet_python (`SyncNetModel.S`, weights `syncnet_v2.model`)
in Flax Linen (NHWC), the network behind the published LSE-D / LSE-C numbers.

Audio stream: one MFCC window `[N, 13, 20, 1]` (13 cepstra x 20 MFCC frames = 0.2 s, see
`data_pipelines.mfcc`) -> CNN -> 512 -> MLP -> 1024.
Lip stream: five consecutive 224x224 colour crops in cv2 order (**BGR**), raw 0..255 values
(no normalisation), `[N, 5, 224, 224, 3]` -> CNN -> 512 -> MLP -> 1024. The original's first
layer is a Conv3d whose 5-frame time kernel covers the whole clip and all later layers have
a time kernel of 1, so the time axis is folded into channels (`3*t + c`) and every layer runs
as a 2-D layer with the same numbers.

Module names mirror the torch module path (`netcnnaud/0` is `netcnnaud.0`, the Conv2d;
`netcnnaud/1` its BatchNorm), so `porting.syncnet_v2` converts by name. BatchNorm always uses
the running statistics (the original is only ever used in eval mode); eps 1e-5.
Embeddings are NOT normalised (syncnet_python compares raw 1024-d vectors).
Convolutions and dense layers use full float32 precision (`PRECISION`): GPUs and TPUs would
otherwise use TF32/bf16 passes and the scores would drift from the published procedure's.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class Pool(NamedTuple):
  """Max pooling after a layer's ReLU (torch MaxPool: floor mode, -inf padding)."""
  window: tuple[int, int]
  stride: tuple[int, int]
  padding: tuple[int, int] = (0, 0)


class Layer(NamedTuple):
  """Conv -> BatchNorm -> ReLU [-> max pool]; `index` is the conv's position in the torch
  `nn.Sequential` (its BatchNorm is `index + 1`)."""
  index: int
  features: int
  kernel: tuple[int, int]
  stride: tuple[int, int] = (1, 1)
  padding: tuple[int, int] = (0, 0)
  pool: Pool | None = None


# SyncNetModel.S.netcnnaud. Its first MaxPool2d(1, 1) is the identity and is omitted.
AUDIO_LAYERS: tuple[Layer, ...] = (
    Layer(0, 64, (3, 3), padding=(1, 1)),
    Layer(4, 192, (3, 3), padding=(1, 1), pool=Pool((3, 3), (1, 2))),
    Layer(8, 384, (3, 3), padding=(1, 1)),
    Layer(11, 256, (3, 3), padding=(1, 1)),
    Layer(14, 256, (3, 3), padding=(1, 1), pool=Pool((3, 3), (2, 2))),
    Layer(18, 512, (5, 4)),
)
# SyncNetModel.S.netcnnlip with the time axis folded into channels (see the module docstring).
LIP_LAYERS: tuple[Layer, ...] = (
    Layer(0, 96, (7, 7), stride=(2, 2), pool=Pool((3, 3), (2, 2))),
    Layer(4, 256, (5, 5), stride=(2, 2), padding=(1, 1), pool=Pool((3, 3), (2, 2), (1, 1))),
    Layer(8, 256, (3, 3), padding=(1, 1)),
    Layer(11, 256, (3, 3), padding=(1, 1)),
    Layer(14, 256, (3, 3), padding=(1, 1), pool=Pool((3, 3), (2, 2))),
    Layer(18, 512, (6, 6)),
)
MFCC_WINDOW_SHAPE = (13, 20, 1)   # cepstra, MFCC frames (4 per video frame, 5 frames), channel
CLIP_FRAMES = 5
CROP_SIZE = 224
LIP_CLIP_SHAPE = (CLIP_FRAMES, CROP_SIZE, CROP_SIZE, 3)
EMBEDDING_DIM = 1024
BN_EPS = 1e-5
PRECISION = jax.lax.Precision.HIGHEST


class ConvStack(nn.Module):
  """One `nn.Sequential` CNN of the original (conv, BatchNorm, ReLU, optional max pool)."""
  layers: tuple[Layer, ...]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for layer in self.layers:
      pad = tuple((p, p) for p in layer.padding)
      x = nn.Conv(layer.features, layer.kernel, strides=layer.stride, padding=pad,
                  precision=PRECISION, name=str(layer.index))(x)
      x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name=str(layer.index + 1))(x)
      x = nn.relu(x)
      if layer.pool is not None:
        pad = tuple((p, p) for p in layer.pool.padding)
        x = nn.max_pool(x, layer.pool.window, strides=layer.pool.stride, padding=pad)
    return x


class Head(nn.Module):
  """`netfcaud` / `netfclip`: Linear 512 -> BatchNorm1d -> ReLU -> Linear to the embedding."""
  features: int = EMBEDDING_DIM

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(512, precision=PRECISION, name="0")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="1")(x))
    return nn.Dense(self.features, precision=PRECISION, name="3")(x)


def _check(x: jax.Array, expected: tuple[int, ...], what: str) -> None:
  if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
    raise ValueError(f"SyncNetV2: {what} must be [N, {', '.join(map(str, expected))}], "
                     f"got {tuple(x.shape)}")


class SyncNetV2(nn.Module):
  """syncnet_python's SyncNet. `__call__` returns `(audio_embedding, lip_embedding)`."""
  embedding_dim: int = EMBEDDING_DIM

  def setup(self):
    self.netcnnaud = ConvStack(AUDIO_LAYERS)
    self.netfcaud = Head(self.embedding_dim)
    self.netcnnlip = ConvStack(LIP_LAYERS)
    self.netfclip = Head(self.embedding_dim)

  def embed_audio(self, mfcc: jax.Array) -> jax.Array:
    """mfcc `[N, 13, 20, 1]` (float32 MFCC window) -> `[N, 1024]` float32 (`forward_aud`)."""
    _check(mfcc, MFCC_WINDOW_SHAPE, "the MFCC window")
    x = self.netcnnaud(mfcc.astype(jnp.float32))
    return self.netfcaud(x.reshape(x.shape[0], -1))

  def embed_lips(self, clips: jax.Array) -> jax.Array:
    """clips `[N, 5, 224, 224, 3]` BGR, 0..255 -> `[N, 1024]` float32 (`forward_lip`)."""
    _check(clips, LIP_CLIP_SHAPE, "the lip clip")
    n, t, h, w, c = clips.shape
    x = jnp.transpose(clips.astype(jnp.float32), (0, 2, 3, 1, 4)).reshape(n, h, w, t * c)
    x = self.netcnnlip(x)
    return self.netfclip(x.reshape(n, -1))

  def __call__(self, mfcc: jax.Array, clips: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.embed_audio(mfcc), self.embed_lips(clips)


def init_syncnet_v2_variables(rng: jax.Array, model: SyncNetV2 | None = None) -> dict:
  """Random `{"params", "batch_stats"}` (for shapes and tests; real use converts weights)."""
  model = model or SyncNetV2()
  return model.init(rng, jnp.zeros((1,) + MFCC_WINDOW_SHAPE), jnp.zeros((1,) + LIP_CLIP_SHAPE))
