"""FID parity with pytorch-fid: network features, statistics, Fréchet distance, converter.

Goldens: tests/goldens/fid_golden.npz and manifest_inception_fid.json (see the README there):
pytorch-fid's `get_activations` / `calculate_activation_statistics` on two PNG face crops for
each `--dims`, every Inception block type alone on unit-scale inputs, and
`calculate_frechet_distance` on stored activations, with deterministic weights.
"""
import zlib

import jax
import numpy as np
import pytest
import scipy.linalg

from diff2lip_jax.evaluation import fid
from diff2lip_jax.models import inception_fid as inception
from diff2lip_jax.porting import inception_fid as convert
from diff2lip_jax.porting.torch_io import StateDictMismatchError
from tests.metric_goldens import load_golden, manifest_state_dict, max_rel_diff

FLOAT32_RTOL = 1e-5
BLOCKS = {"Mixed_5b": (inception.InceptionA(32), 192), "Mixed_6a": (inception.InceptionB(), 288),
          "Mixed_6e": (inception.InceptionC(192), 768), "Mixed_7a": (inception.InceptionD(), 768),
          "Mixed_7b": (inception.InceptionE(), 1280),
          "Mixed_7c": (inception.InceptionE(max_pool=True), 2048)}


GOLDEN = load_golden("fid_golden.npz")   # small: loaded at import


@pytest.fixture(scope="module")
def state_dict():
  return manifest_state_dict("manifest_inception_fid.json")


@pytest.fixture(scope="module")
def extractor(state_dict):
  """The features extractor; its converted variables are `extractor.variables`."""
  return fid.InceptionFeatures(convert.params_from_torch(state_dict))


@pytest.mark.parametrize("name", list(BLOCKS))
def test_each_block_matches_pytorch_fid(extractor, name):
  module, channels = BLOCKS[name]
  rng = np.random.default_rng(zlib.crc32(f"input.{name}".encode()))
  x = rng.standard_normal((1, 3, 3, channels)).astype(np.float32)
  block_vars = {c: extractor.variables[c][name] for c in ("params", "batch_stats")}
  y = jax.jit(module.apply)(block_vars, x)
  assert max_rel_diff(y, GOLDEN[f"block_{name}"]) < FLOAT32_RTOL


def test_features_match_get_activations_for_every_dims(extractor):
  features = extractor.all_blocks(GOLDEN["images"])
  assert sorted(features) == [64, 192, 768, 2048]
  for dims, value in features.items():
    assert value.shape == (2, dims)
    assert max_rel_diff(value, GOLDEN[f"features_{dims}"]) < FLOAT32_RTOL, dims
  pool3 = fid.inception_features(GOLDEN["images"], extractor=extractor)
  np.testing.assert_array_equal(pool3, features[2048])
  # The early blocks see the resize and scaling: the two images differ there.
  assert max_rel_diff(features[64][0], features[64][1]) > 0.01


def test_small_dims_and_statistics_match(extractor):
  features = fid.inception_features(GOLDEN["images"], extractor=extractor, dims=64)
  assert max_rel_diff(features, GOLDEN["features_64"]) < FLOAT32_RTOL
  mu, sigma = fid.activation_statistics(features)
  assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (64, 64)
  assert max_rel_diff(mu, GOLDEN["mu_64"]) < FLOAT32_RTOL
  assert max_rel_diff(sigma, GOLDEN["sigma_64"]) < 1e-4   # of differences of the two images


@pytest.mark.parametrize("pair", ["ab", "cd"])
def test_frechet_distance_matches(pair):
  a, b = (GOLDEN[f"act_{k}"] for k in pair)
  value = fid.fid_from_features(a, b)
  np.testing.assert_allclose(value, GOLDEN[f"fid_{pair}"], rtol=1e-9)
  # The eigendecomposition route gives the same trace (rank-deficient "cd" included).
  np.testing.assert_allclose(fid.fid_from_features(a, b, method="eigh"), GOLDEN[f"fid_{pair}"],
                             rtol=1e-7)


def test_frechet_distance_analytic():
  rng = np.random.default_rng(0)
  sigma = np.cov(rng.standard_normal((50, 6)), rowvar=False)
  mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
  # Equal covariances: only the squared mean difference remains (pytorch-fid's own test).
  np.testing.assert_allclose(fid.frechet_distance(mu1, sigma, mu2, sigma),
                             np.sum((mu1 - mu2) ** 2), rtol=1e-9, atol=1e-9)
  # Diagonal covariances: sum((sqrt(a) - sqrt(b))^2).
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  for method in ("sqrtm", "eigh"):
    np.testing.assert_allclose(fid.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3),
                                                    np.diag(b), method=method), 2.0, rtol=1e-12)


def test_singular_product_falls_back_to_eps(monkeypatch):
  calls = []
  real = scipy.linalg.sqrtm

  def flaky_sqrtm(matrix, *args, **kwargs):
    calls.append(np.array(matrix))
    return np.full_like(matrix, np.nan) if len(calls) == 1 else real(matrix)
  monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
  sigma = np.diag([1.0, 0.0])
  with pytest.warns(UserWarning, match="adding 1e-06"):
    value = fid.frechet_distance(np.zeros(2), sigma, np.zeros(2), sigma)
  np.testing.assert_allclose(calls[1], (sigma + 1e-6 * np.eye(2)) @ (sigma + 1e-6 * np.eye(2)))
  np.testing.assert_allclose(value, 0.0, atol=1e-5)


def test_invalid_covariances_are_refused():
  with pytest.raises(ValueError, match="imaginary component"):
    fid.frechet_distance(np.zeros(2), np.diag([1.0, -4.0]), np.zeros(2), np.eye(2))
  with pytest.raises(ValueError, match="covariances"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))
  with pytest.raises(ValueError, match="N >= 2"):
    fid.activation_statistics(np.zeros((1, 8)))
  with pytest.raises(ValueError, match="method"):
    fid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


def test_bad_images_and_dims(extractor):
  with pytest.raises(ValueError, match="uint8 RGB"):
    extractor(np.zeros((2, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="dims must be one of"):
    extractor(np.zeros((2, 32, 32, 3), np.uint8), dims=1000)
  with pytest.raises(ValueError, match="pt_inception"):
    fid.inception_features(np.zeros((2, 32, 32, 3), np.uint8))


def test_statistics_file_round_trip(tmp_path):
  path = tmp_path / "stats.npz"
  np.savez(path, mu=np.ones(3), sigma=np.eye(3))
  mu, sigma = fid.load_statistics(path)
  np.testing.assert_array_equal(sigma, np.eye(3))
  np.savez(path, mu=np.ones(3))
  with pytest.raises(ValueError, match="sigma"):
    fid.load_statistics(path)


def test_converter_errors(state_dict):
  broken = {k: v for k, v in state_dict.items() if k != "Mixed_6e.branch1x1.conv.weight"}
  broken["Mixed_5b.branch_pool.bn.running_var"] = np.ones(3, np.float32)
  broken["Mixed_8a.conv.weight"] = np.ones(3, np.float32)
  with pytest.raises(StateDictMismatchError) as err:
    convert.params_from_torch(broken)
  for part in ("missing (1): Mixed_6e.branch1x1.conv.weight",
               "unexpected (1): Mixed_8a.conv.weight",
               "Mixed_5b.branch_pool.bn.running_var: file (3,) vs model (32,)"):
    assert part in str(err.value)
  with pytest.raises(ValueError, match="ImageNet"):
    convert.params_from_torch({**state_dict, "AuxLogits.fc.weight": np.zeros((2, 2))})


def test_converter_ignores_the_classifier(state_dict):
  without_fc = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
  assert len(without_fc) < len(state_dict)
  variables = convert.params_from_torch(without_fc)
  kernel = variables["params"]["Mixed_7c"]["branch3x3_2a"]["conv"]["kernel"]
  weight = state_dict["Mixed_7c.branch3x3_2a.conv.weight"]    # [384, 384, 1, 3]
  assert kernel.shape == (1, 3, 384, 384)
  np.testing.assert_array_equal(kernel[0, 2, 5, 7], weight[7, 5, 0, 2])
