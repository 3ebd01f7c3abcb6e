"""LPIPS: parity with a plain-PyTorch transcription of `lpips.LPIPS` (v0.1), converter layouts
and errors, metric properties. No pretrained weights exist here: weights are seeded random."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diff2lip_jax.porting import lpips as lpips_convert
from diff2lip_jax.models.lpips import (LPIPS, infer_net, lpips_distance, lpips_loss,
                                       normalize_channels)
from diff2lip_jax.porting.torch_io import StateDictMismatchError

try:
  import torch
except ImportError:
  torch = None

LPIPS_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


def make_state_dict(net: str, seed: int = 0) -> dict[str, np.ndarray]:
  """Canonical-name state dict with He-scaled convs (activations stay O(1)) and non-negative
  lin weights (as the released LPIPS lins, which are clamped at 0)."""
  rng = np.random.default_rng(seed)
  state = {}
  for name, shape in lpips_convert.expected_torch_shapes(net).items():
    if name.startswith("lin"):
      state[name] = np.abs(rng.standard_normal(shape)).astype(np.float32) * 0.1
    elif name.endswith("weight"):
      fan_in = int(np.prod(shape[1:]))
      state[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    else:
      state[name] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
  return state


def images(seed: int, n: int = 2, size: int = 64) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def vgg_params():
  return lpips_convert.params_from_torch(make_state_dict("vgg"), "vgg")


@pytest.fixture(scope="module")
def vgg_fn():
  return jax.jit(LPIPS(net="vgg").apply)


# ---------------------------------------------------------------- PyTorch transcription
def _torch_backbone(net: str):
  """torchvision `vgg16().features` / `alexnet().features`, written out layer by layer."""
  nn = torch.nn
  if net == "vgg":
    layers, cin = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"):
      if v == "M":
        layers.append(nn.MaxPool2d(2, 2))
      else:
        layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
        cin = v
    return nn.Sequential(*layers), (4, 9, 16, 23, 30)  # slice ends of lpips' vgg16
  layers = [nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2)]
  return nn.Sequential(*layers), (2, 5, 8, 10, 12)  # slice ends of lpips' alexnet


def _torch_lpips(net: str):
  nn = torch.nn

  class NetLinLayer(nn.Module):
    def __init__(self, chn_in):
      super().__init__()
      self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(chn_in, 1, 1, 1, 0, bias=False))

  class TorchLPIPS(nn.Module):
    def __init__(self):
      super().__init__()
      self.features, self.slice_ends = _torch_backbone(net)
      for k, c in enumerate(LPIPS_CHANNELS[net]):
        setattr(self, f"lin{k}", NetLinLayer(c))
      self.register_buffer("shift", torch.tensor([-.030, -.088, -.188])[None, :, None, None])
      self.register_buffer("scale", torch.tensor([.458, .448, .450])[None, :, None, None])

    def feats(self, x):
      h, start, outs = (x - self.shift) / self.scale, 0, []
      for end in self.slice_ends:
        h = self.features[start:end](h)
        outs.append(h)
        start = end
      return outs

    def forward(self, in0, in1):
      val = 0
      for k, (f0, f1) in enumerate(zip(self.feats(in0), self.feats(in1))):
        f0 = f0 / (torch.sqrt(torch.sum(f0 ** 2, dim=1, keepdim=True)) + 1e-10)
        f1 = f1 / (torch.sqrt(torch.sum(f1 ** 2, dim=1, keepdim=True)) + 1e-10)
        val = val + getattr(self, f"lin{k}").model((f0 - f1) ** 2).mean([2, 3], keepdim=True)
      return val

  return TorchLPIPS().eval()


@pytest.mark.skipif(torch is None, reason="needs torch for the reference transcription")
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_matches_torch_transcription_from_two_files(tmp_path, net):
  state = make_state_dict(net, seed=1)
  model = _torch_lpips(net)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}
                        | {"shift": model.shift, "scale": model.scale}, strict=True)
  backbone = {k: torch.from_numpy(v) for k, v in state.items() if k.startswith("features.")}
  backbone["classifier.0.weight"] = torch.zeros(4, 3)  # torchvision's head: ignored
  lins = {k: torch.from_numpy(v) for k, v in state.items() if k.startswith("lin")}
  torch.save(backbone, tmp_path / "backbone.pth")
  torch.save(lins, tmp_path / f"{net}.pth")
  params = lpips_convert.load_lpips_params(tmp_path / "backbone.pth", tmp_path / f"{net}.pth",
                                           net=net)
  x, y = images(2), images(3)
  y[1] = x[1] + 0.05 * images(4)[1]  # one near pair, one far pair
  with torch.no_grad():
    want = model(torch.from_numpy(x).permute(0, 3, 1, 2),
                 torch.from_numpy(y).permute(0, 3, 1, 2)).numpy().reshape(-1)
  got = np.asarray(jax.jit(LPIPS(net=net).apply)({"params": params}, x, y))
  assert got.shape == (2,) and got.dtype == np.float32
  assert want[0] > 10 * want[1] > 0  # the check is not degenerate
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(lpips_distance(params, x, y), got, atol=1e-6)
  np.testing.assert_allclose(lpips_loss(params, x, y), got.mean(), rtol=1e-5)


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_combined_layouts_give_same_params(net):
  state = make_state_dict(net)
  slice_of = {}
  ends = (4, 9, 16, 23, 30) if net == "vgg" else (2, 5, 8, 10, 12)
  for name in state:
    if name.startswith("features."):
      i = int(name.split(".")[1])
      slice_of[name] = 1 + sum(i >= e for e in ends)
  richzhang = {(f"net.slice{slice_of[k]}.{k[len('features.'):]}" if k in slice_of else k): v
               for k, v in state.items()}
  richzhang["scaling_layer.shift"] = np.array([-.030, -.088, -.188], np.float32).reshape(1, 3, 1, 1)
  richzhang["scaling_layer.scale"] = np.array([.458, .448, .450], np.float32).reshape(1, 3, 1, 1)
  lpips_pytorch = {("net.layers." + k[len("features."):] if k in slice_of
                    else re.sub(r"^lin(\d)\.model\.1", r"lin.\1.1", k)): v
                   for k, v in state.items()}
  lpips_pytorch["net.mean"] = richzhang["scaling_layer.shift"]
  lpips_pytorch["net.std"] = richzhang["scaling_layer.scale"]
  dataparallel = {"module." + k: v for k, v in state.items()}
  # lpips_pytorch's get_state_dict() renames the lin file to "{k}.1.weight"
  renamed_lins = {re.sub(r"^lin(\d)\.model\.1", r"\1.1", k): v for k, v in state.items()}
  assert "0.1.weight" in renamed_lins
  want = lpips_convert.params_from_torch(state, net)
  assert want["features_0"]["kernel"].shape[:2] == ((3, 3) if net == "vgg" else (11, 11))
  for layout in (richzhang, lpips_pytorch, dataparallel, renamed_lins):
    got = lpips_convert.params_from_torch(layout, net)
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
  assert infer_net(want) == net


def test_mismatch_error_lists_every_problem():
  state = make_state_dict("vgg")
  del state["features.28.bias"]
  state["features.31.weight"] = np.zeros((1,), np.float32)
  state["lin2.model.1.weight"] = np.zeros((1, 128, 1, 1), np.float32)
  with pytest.raises(StateDictMismatchError) as err:
    lpips_convert.params_from_torch(state, "vgg", source="my_weights.pth")
  text = str(err.value)
  assert "my_weights.pth" in text
  assert re.search(r"missing \(1\): features\.28\.bias", text)
  assert re.search(r"unexpected \(1\): features\.31\.weight", text)
  assert "lin2.model.1.weight: file (1, 128, 1, 1) vs model (1, 256, 1, 1)" in text


def test_wrong_backbone_and_bad_buffers_are_reported(tmp_path):
  with pytest.raises(StateDictMismatchError, match="missing"):
    lpips_convert.params_from_torch(make_state_dict("alex"), "vgg")
  state = make_state_dict("vgg") | {"scaling_layer.shift": np.zeros(3, np.float32)}
  with pytest.raises(ValueError, match="scaling_layer.shift.*LPIPS v0.1 constant"):
    lpips_convert.params_from_torch(state, "vgg")
  aliased = make_state_dict("vgg") | {"net.layers.0.bias": np.zeros(64, np.float32)}
  with pytest.raises(ValueError, match="same tensor"):
    lpips_convert.params_from_torch(aliased, "vgg")
  with pytest.raises(ValueError, match="net must be one of"):
    lpips_convert.params_from_torch(make_state_dict("vgg"), "squeeze")
  with pytest.raises(FileNotFoundError):
    lpips_convert.load_lpips_params(tmp_path / "absent.pth", None)


@pytest.mark.skipif(torch is None, reason="needs torch to write .pth fixtures")
def test_overlapping_files_rejected(tmp_path):
  state = {k: torch.from_numpy(v) for k, v in make_state_dict("vgg").items()}
  torch.save(state, tmp_path / "combined.pth")
  torch.save({k: v for k, v in state.items() if k.startswith("lin")}, tmp_path / "vgg.pth")
  with pytest.raises(ValueError, match="both define"):
    lpips_convert.load_lpips_params(tmp_path / "combined.pth", tmp_path / "vgg.pth")
  params = lpips_convert.load_lpips_params(tmp_path / "combined.pth")  # one combined file
  assert infer_net(params) == "vgg"


def test_metric_properties(vgg_params, vgg_fn):
  x, y = images(5, n=3), images(6, n=3)
  variables = {"params": vgg_params}
  # Under jit XLA may fuse the two (identical) backbone passes differently: ~1e-16, not 0.
  np.testing.assert_allclose(vgg_fn(variables, x, x), np.zeros(3, np.float32), atol=1e-10)
  np.testing.assert_array_equal(LPIPS().apply(variables, x, x), np.zeros(3, np.float32))
  d_xy, d_yx = vgg_fn(variables, x, y), vgg_fn(variables, y, x)
  np.testing.assert_allclose(d_xy, d_yx, rtol=1e-5)
  assert np.all(np.asarray(d_xy) > 0)
  closer = vgg_fn(variables, x, np.clip(x + 0.02 * y, -1, 1))
  assert np.all(np.asarray(closer) < np.asarray(d_xy))


def test_gradients_reach_images_only():
  params = lpips_convert.params_from_torch(make_state_dict("alex"), "alex")
  x, y = images(7, n=1), images(8, n=1)
  g_params, g_x = jax.jit(jax.grad(lpips_loss, argnums=(0, 1)))(params, x, y)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(g_params))
  assert np.all(np.isfinite(g_x)) and np.any(g_x != 0)
  zero = jnp.zeros((1, 2, 2, 4)).at[0, 0, 0].set(jnp.array([1.0, 2.0, 0.0, 2.0]))
  value, grad = jax.value_and_grad(lambda f: jnp.sum(normalize_channels(f) ** 2))(zero)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(value, 1.0, rtol=1e-6)  # one unit vector, three zero positions


def test_bfloat16_compute_close_to_float32(vgg_params):
  x, y = images(9), images(10)
  f32 = LPIPS(net="vgg").apply({"params": vgg_params}, x, y)
  bf16 = jax.jit(LPIPS(net="vgg", dtype=jnp.bfloat16).apply)({"params": vgg_params}, x, y)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, rtol=0.05)


def test_bad_inputs_rejected(vgg_params):
  x = images(11)
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    LPIPS().apply({"params": vgg_params}, x, x[:, :32])
  with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
    LPIPS().apply({"params": vgg_params}, x[..., :1], x[..., :1])
  with pytest.raises(ValueError, match="net must be one of"):
    LPIPS(net="squeeze").init(jax.random.PRNGKey(0), x, x)
  with pytest.raises(ValueError, match="no known backbone"):
    infer_net({"features_0": {}, "lin0": {}})
