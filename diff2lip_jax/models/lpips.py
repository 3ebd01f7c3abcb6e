"""LPIPS perceptual distance (Zhang et al. 2018, `lpips` v0.1) in Flax Linen (NHWC).

distance(x, y) = sum_l mean_hw( w_l . (n(f_l(x)) - n(f_l(y)))^2 ), where f_l are ReLU feature
taps of an ImageNet backbone applied to the scaled input (x - shift) / scale, n() normalises
each spatial position's channel vector to unit length (eps 1e-10 added to the norm) and w_l are
the learned non-negative 1x1 "lin" weights.

Backbones (torchvision `features` layer indices, taps after the ReLUs):
  * "vgg":  VGG16, taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (indices 3, 8, 15, 22, 29);
  * "alex": AlexNet, taps relu1..relu5 (indices 1, 4, 7, 9, 11). Diff2Lip's guided-diffusion
    tree wraps `lpips_pytorch.LPIPS(net_type="alex")`, so "alex" is the one matching the paper code.

Parameter names mirror torchvision's: `features_{i}/{kernel,bias}` for the conv at
`features.{i}`, `lin{k}/kernel` ([1, 1, C_k, 1]) for LPIPS' `lin{k}.model.1.weight`.
Weights come from user files via `lpips_convert.load_lpips_params`.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


class Layer(NamedTuple):
  """One entry of torchvision's `features` Sequential."""
  kind: str  # "conv" | "relu" | "pool"
  features: int = 0
  kernel: int = 0
  stride: int = 1
  padding: int = 0


class Backbone(NamedTuple):
  layers: tuple[Layer, ...]
  taps: tuple[int, ...]  # indices in `layers` whose outputs are compared
  channels: tuple[int, ...]  # channel count at each tap


def _vgg16() -> Backbone:
  layers: list[Layer] = []
  for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
    if v == "M":
      layers.append(Layer("pool", kernel=2, stride=2))
    else:
      layers += [Layer("conv", int(v), 3, 1, 1), Layer("relu")]
  return Backbone(tuple(layers), (3, 8, 15, 22, 29), (64, 128, 256, 512, 512))


def _alexnet() -> Backbone:
  layers = (
      Layer("conv", 64, 11, 4, 2), Layer("relu"), Layer("pool", kernel=3, stride=2),
      Layer("conv", 192, 5, 1, 2), Layer("relu"), Layer("pool", kernel=3, stride=2),
      Layer("conv", 384, 3, 1, 1), Layer("relu"),
      Layer("conv", 256, 3, 1, 1), Layer("relu"),
      Layer("conv", 256, 3, 1, 1), Layer("relu"),
  )
  return Backbone(layers, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256))


BACKBONES: dict[str, Backbone] = {"vgg": _vgg16(), "alex": _alexnet()}


def conv_indices(net: str) -> tuple[int, ...]:
  """torchvision `features` indices of the backbone's convolutions (up to the last tap)."""
  backbone = _backbone(net)
  return tuple(i for i, layer in enumerate(backbone.layers[: backbone.taps[-1] + 1])
               if layer.kind == "conv")


def _backbone(net: str) -> Backbone:
  if net not in BACKBONES:
    raise ValueError(f"LPIPS net must be one of {sorted(BACKBONES)}, got {net!r}")
  return BACKBONES[net]


def normalize_channels(x: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """`lpips.normalize_tensor` on NHWC: x / (||x||_C + eps), with a finite gradient at x == 0.

  Post-ReLU features are often exactly zero at a position; d sqrt(s)/ds is infinite at s = 0,
  so the square root is taken of a safe value there (the forward value is unchanged).
  """
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  positive = sq > 0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
  return x / (norm + eps)


class LPIPS(nn.Module):
  """LPIPS distance. `apply({"params": p}, x, y)`: x, y `[N, H, W, 3]` in [-1, 1] -> `[N]` f32.

  `dtype` is the backbone's compute dtype; normalisation, differences and the lin layers run
  in float32. Parameters are float32.
  """
  net: str = "vgg"
  dtype: Any = jnp.float32

  def setup(self):
    backbone = _backbone(self.net)
    self.convs = {
        index: nn.Conv(layer.features, (layer.kernel, layer.kernel),
                       strides=(layer.stride, layer.stride),
                       padding=((layer.padding,) * 2,) * 2, dtype=self.dtype,
                       name=f"features_{index}")
        for index, layer in enumerate(backbone.layers[: backbone.taps[-1] + 1])
        if layer.kind == "conv"}
    self.lins = [nn.Conv(1, (1, 1), use_bias=False, dtype=jnp.float32, name=f"lin{k}")
                 for k in range(len(backbone.taps))]

  def _features(self, x: jax.Array, backbone: Backbone) -> list[jax.Array]:
    """Backbone activations at the taps for `[N, H, W, 3]` images in [-1, 1]."""
    shift = jnp.asarray(SHIFT, jnp.float32)
    scale = jnp.asarray(SCALE, jnp.float32)
    h = ((x.astype(jnp.float32) - shift) / scale).astype(self.dtype)
    taps = []
    for index, layer in enumerate(backbone.layers[: backbone.taps[-1] + 1]):
      if layer.kind == "conv":
        h = self.convs[index](h)
      elif layer.kind == "relu":
        h = nn.relu(h)
      else:  # torch MaxPool2d default: no padding, floor mode
        h = nn.max_pool(h, (layer.kernel, layer.kernel), (layer.stride, layer.stride), "VALID")
      if index in backbone.taps:
        taps.append(h)
    return taps

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    backbone = _backbone(self.net)
    if x.ndim != 4 or x.shape[-1] != 3 or x.shape != y.shape:
      raise ValueError("LPIPS: inputs must be two [N, H, W, 3] (NHWC, values in [-1, 1]) arrays "
                       f"of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    n = x.shape[0]
    # x and y run through the backbone separately, not as one concatenated batch, because a
    # batched conv may round different rows differently (distance(x, x) would not be 0).
    feats_x, feats_y = self._features(x, backbone), self._features(y, backbone)
    total = jnp.zeros((n,), jnp.float32)
    for k, (fx, fy) in enumerate(zip(feats_x, feats_y)):
      diff = jnp.square(normalize_channels(fx.astype(jnp.float32))
                        - normalize_channels(fy.astype(jnp.float32)))
      total = total + jnp.mean(self.lins[k](diff), axis=(1, 2, 3))
    return total


def init_lpips_params(rng: jax.Array, net: str = "vgg", image_size: int = 64) -> dict:
  """Randomly initialised parameters (tests and shape checks; real use loads weights)."""
  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  return jax.jit(LPIPS(net=net).init)(rng, x, x)["params"]


def infer_net(params: Mapping[str, Any]) -> str:
  """The backbone ("vgg" | "alex") a parameter tree was built for."""
  names = set(params)
  for net in BACKBONES:
    if {f"features_{i}" for i in conv_indices(net)} == {k for k in names
                                                          if k.startswith("features_")}:
      return net
  raise ValueError("LPIPS parameters match no known backbone (expected the conv layers of one "
                   f"of {sorted(BACKBONES)}); got modules {sorted(names)}")


def lpips_distance(params: Mapping[str, Any], x: jax.Array, y: jax.Array,
                   net: str | None = None, dtype: Any = jnp.float32) -> jax.Array:
  """Per-example LPIPS distances `[N]` for NHWC images in [-1, 1] (net inferred if None)."""
  return LPIPS(net=net or infer_net(params), dtype=dtype).apply({"params": params}, x, y)


def lpips_loss(params: Mapping[str, Any], x: jax.Array, y: jax.Array,
               net: str | None = None, dtype: Any = jnp.float32) -> jax.Array:
  """Mean LPIPS distance over the batch (float32 scalar). `params` are treated as constants:
  gradients reach x and y only."""
  params = jax.lax.stop_gradient(params)
  return jnp.mean(lpips_distance(params, x, y, net, dtype))
