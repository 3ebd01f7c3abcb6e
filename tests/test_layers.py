"""The CPU-speed variants of the UNet layers against their plain definitions."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diff2lip_jax.models import layers


def _naive_group_norm(x, scale, bias, groups=32, eps=1e-5):
  """GroupNorm as the reference writes it: statistics over (spatial, channels in group)."""
  x = np.asarray(x, np.float64)
  n, c = x.shape[0], x.shape[-1]
  g = x.reshape(n, -1, groups, c // groups)
  mean = g.mean(axis=(1, 3), keepdims=True)
  var = g.var(axis=(1, 3), keepdims=True)
  return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


@pytest.mark.parametrize("shape", [(2, 8, 8, 64), (3, 5, 7, 96), (2, 16, 256)])
def test_group_norm_matches_definition(shape):
  rng = np.random.default_rng(0)
  # An offset mean (3.0) is where a one-pass E[x^2]-E[x]^2 variance would lose precision.
  x = rng.normal(3.0, 0.5, shape).astype(np.float32)
  scale = rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32)
  bias = rng.normal(size=shape[-1]).astype(np.float32)
  out = layers.GroupNorm32().apply({"params": {"scale": scale, "bias": bias}}, jnp.asarray(x))
  np.testing.assert_allclose(out, _naive_group_norm(x, scale, bias), atol=2e-5)


def test_group_norm_rejects_indivisible_channels():
  with pytest.raises(ValueError, match="not divisible"):
    layers.GroupNorm32().init(jax.random.PRNGKey(0), jnp.ones((1, 4, 4, 40)))


@pytest.mark.parametrize("ndim", [1, 2])
def test_pointwise_conv_equals_nn_conv(ndim):
  x = jax.random.normal(jax.random.PRNGKey(1), (2,) + (6,) * ndim + (24,))
  pointwise = layers.conv(16, 1, ndim=ndim)
  assert isinstance(pointwise, layers.PointwiseConv)
  params = pointwise.init(jax.random.PRNGKey(2), x)["params"]
  reference = nn.Conv(16, (1,) * ndim, padding="SAME")
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, reference.init(jax.random.PRNGKey(0), x)["params"])
  params = {"kernel": params["kernel"], "bias": jax.random.normal(jax.random.PRNGKey(3), (16,))}
  np.testing.assert_allclose(pointwise.apply({"params": params}, x),
                             reference.apply({"params": params}, x), atol=1e-5)


def test_attention_core_per_frame_equals_batched():
  q, k, v = (jax.random.normal(key, (3, 20, 2, 8))
             for key in jax.random.split(jax.random.PRNGKey(0), 3))
  batched = layers._attention_one(q, k, v)  # what accelerators run
  np.testing.assert_allclose(layers.attention_core(q, k, v), batched, atol=1e-6)
  logits = np.einsum("nthc,nshc->nhts", q, k) / np.sqrt(8)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  np.testing.assert_allclose(batched, np.einsum("nhts,nshc->nthc", weights, v), atol=1e-5)
