"""model.attention_impl: `jax.nn.dot_product_attention` gives the default path's output."""
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from diff2lip_jax.models import create_model
from diff2lip_jax.models.layers import AttentionBlock
from tests import reference as R


def _golden_inputs(golden):
  nhwc = lambda k: jnp.asarray(R.nchw_to_nhwc(golden[k]))
  return dict(cond_img=nhwc("cond_img"), mask=nhwc("mask"), ref_img=nhwc("ref_img"),
              indiv_mels=jnp.asarray(golden["indiv_mels"])), nhwc("x"), jnp.asarray(golden["t"])


@pytest.mark.parametrize("heads,head_channels", [(2, -1), (1, 32)])
def test_attention_block_impls_agree(heads, head_channels):
  # Same function, checked in float64: the attention adds up to ~11 to inputs of ~3 here, so
  # in float32 the two kernels' different summation orders differ by ~1e-5 absolute (about 12
  # ulp of the output), which hides nothing but is not a fixed bound on every CPU. A wrong
  # scale, head split or q/k/v order would differ by O(1). Float32 agreement of the whole
  # model is checked against the golden below.
  with jax.enable_x64(True):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 8, 8, 64)) * 3, jnp.float64)
    blocks = [AttentionBlock(64, heads, head_channels, dtype=jnp.float64, attention_impl=impl)
              for impl in ("default", "dot_product_attention")]
    params = flax.core.unfreeze(blocks[0].init(jax.random.PRNGKey(1), x))
    # The qkv kernel scaled up so the softmax is far from uniform.
    params["params"]["qkv"]["kernel"] = params["params"]["qkv"]["kernel"] * 3.0
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    out = [np.asarray(jax.jit(b.apply)(params, x)) for b in blocks]
    x = np.asarray(x)
  assert out[0].dtype == np.float64
  assert np.abs(out[0] - x).max() > 0.1          # the block does change its input
  np.testing.assert_allclose(out[1], out[0], atol=1e-9, rtol=1e-9)


def test_tfg_model_impls_agree_and_match_golden(golden_model):
  g = golden_model("tiny")
  flat = flax.traverse_util.flatten_dict(g.params)
  assert any("qkv" in key for key in flat), "the tiny golden model must have attention blocks"
  inputs, x, t = _golden_inputs(g.golden)
  outs = {}
  for impl in ("default", "dot_product_attention"):
    model = create_model(ml_collections.ConfigDict(dict(g.config.to_dict(), attention_impl=impl)))
    outs[impl] = np.asarray(jax.jit(lambda p, m=model: m.apply({"params": p}, x, t, **inputs))(
        g.params))
  np.testing.assert_allclose(outs["dot_product_attention"], outs["default"], atol=1e-5, rtol=0)
  # The same bound as the default path's golden test (tests/test_model.py).
  diff = np.abs(outs["dot_product_attention"] - R.nchw_to_nhwc(g.golden["out"]))
  assert diff.max() < 2e-4 and diff.mean() < 1e-5, (diff.max(), diff.mean())


def test_unknown_attention_impl_is_a_clear_error(golden_model):
  config = dict(golden_model("tiny").config.to_dict(), attention_impl="flash")
  with pytest.raises(ValueError, match="attention_impl must be one of"):
    create_model(config)
