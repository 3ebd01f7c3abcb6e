"""The jitted reverse process (`diff2lip_jax.sampling`) against the DDIM-25 golden trajectory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import released
from diff2lip_jax.diffusion import sampling
from diff2lip_jax.models import create_model
from tests import reference as R


def _tiny(golden_model):
  g = golden_model("tiny")
  cond = {k: jnp.asarray(R.nchw_to_nhwc(g.golden[k])) for k in ("cond_img", "mask", "ref_img")}
  cond["indiv_mels"] = jnp.asarray(g.golden["indiv_mels"])
  return create_model(g.config), g.params, cond


def _diffusion_config(respacing="ddim25"):
  config = released.diffusion_config()
  config.timestep_respacing = respacing
  return config


def test_sample_inside_jit_matches_ddim25_golden(golden_model):
  model, params, cond = _tiny(golden_model)
  golden = R.load_npz("diffusion_golden.npz")
  noise = jnp.asarray(R.nchw_to_nhwc(golden["ddim_init_noise"]))

  @jax.jit
  def run(p, n):
    return sampling.sample(model, p, _diffusion_config(), noise=n, rng=None, **cond)

  out = np.asarray(run(params, noise))
  want = R.nchw_to_nhwc(golden["ddim25_sample"])
  diff = np.abs(out - want)
  assert diff.max() < 2e-3 and diff.mean() < 1e-4, (diff.max(), diff.mean())


def test_reverse_process_is_one_loop_not_unrolled(golden_model):
  model, params, cond = _tiny(golden_model)
  noise = jnp.zeros((5, 64, 64, 3))
  jaxpr = str(jax.make_jaxpr(lambda p: sampling.sample(
      model, p, _diffusion_config(), noise=noise, rng=None, **cond))(params))
  assert "while[" in jaxpr or "scan[" in jaxpr  # fori_loop with static bounds lowers to scan
  one_forward = str(jax.make_jaxpr(lambda p: model.apply(
      {"params": p}, noise, jnp.zeros((5,), jnp.int32), **cond))(params))
  # The model body appears once, whatever the number of steps (25 here).
  assert jaxpr.count("conv_general_dilated") == one_forward.count("conv_general_dilated")


def test_make_sampler_ddpm_is_seeded_and_clipped(golden_model):
  model, params, cond = _tiny(golden_model)
  cond = {k: v[:2] for k, v in cond.items()}
  run = sampling.make_sampler(model, _diffusion_config("4"), use_ddim=False)
  noise = jax.random.normal(jax.random.PRNGKey(0), (2, 64, 64, 3))
  a = run(params, noise, cond["cond_img"], cond["mask"], cond["ref_img"], cond["indiv_mels"],
          jax.random.PRNGKey(1))
  b = run(params, noise, cond["cond_img"], cond["mask"], cond["ref_img"], cond["indiv_mels"],
          jax.random.PRNGKey(1))
  c = run(params, noise, cond["cond_img"], cond["mask"], cond["ref_img"], cond["indiv_mels"],
          jax.random.PRNGKey(2))
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a - c)).max() > 1e-3
  # The last step adds no noise, so the clipped x0 estimate is the sample: within [-1, 1].
  assert np.abs(np.asarray(a)).max() <= 1.0 + 1e-6


def test_ddpm_without_rng_is_a_clear_error(golden_model):
  model, params, cond = _tiny(golden_model)
  with pytest.raises(ValueError, match="rng"):
    sampling.sample(model, params, _diffusion_config("4"), noise=jnp.zeros((5, 64, 64, 3)),
                    use_ddim=False, **cond)


def test_masked_condition_and_mask_follow_the_reference():
  mask = sampling.lower_half_mask(2, 8)
  assert mask.shape == (2, 8, 8, 1)
  np.testing.assert_array_equal(np.asarray(mask[0, :, 0, 0]), [0, 0, 0, 0, 1, 1, 1, 1])
  img, noise = jnp.ones((2, 8, 8, 3)), -jnp.ones((2, 8, 8, 3))
  cond = np.asarray(sampling.masked_condition(img, mask, noise))
  assert (cond[:, :4] == 1).all() and (cond[:, 4:] == -1).all()


def test_ode_solver_on_the_tiny_model_is_one_jitted_loop(golden_model):
  """DPM-Solver++(2M) through make_sampler: one model body in the loop, clipped finite output."""
  model, params, cond = _tiny(golden_model)
  cond = {k: v[:1] for k, v in cond.items()}
  noise = jax.random.normal(jax.random.PRNGKey(3), (1, 64, 64, 3))

  def jaxpr(sampler):
    return str(jax.make_jaxpr(lambda p: sampling.sample(
        model, p, _diffusion_config("ddim5"), noise=noise, sampler=sampler, **cond))(params))

  solver_jaxpr = jaxpr("dpmpp_2m")
  one_forward = str(jax.make_jaxpr(lambda p: model.apply(
      {"params": p}, noise, jnp.zeros((1,), jnp.int32), **cond))(params))
  assert solver_jaxpr.count("conv_general_dilated") == one_forward.count("conv_general_dilated")
  assert solver_jaxpr != jaxpr("ddim")  # the sampler choice reaches the loop
  run = sampling.make_sampler(model, _diffusion_config("ddim5"), sampler="dpmpp_2m")
  out = np.asarray(run(params, noise, cond["cond_img"], cond["mask"], cond["ref_img"],
                       cond["indiv_mels"], None))
  assert out.shape == (1, 64, 64, 3)
  assert np.isfinite(out).all() and np.abs(out).max() <= 1.0 + 1e-6


def test_sampler_argument_is_checked_before_compiling(golden_model):
  model, _, _ = _tiny(golden_model)
  with pytest.raises(ValueError, match="unknown sampler 'dpm'"):
    sampling.make_sampler(model, _diffusion_config(), sampler="dpm")
  with pytest.raises(ValueError, match="pass only one"):
    sampling.make_sampler(model, _diffusion_config(), use_ddim=False, sampler="unipc")
  with pytest.raises(ValueError, match="eta must be 0"):
    sampling.make_sampler(model, _diffusion_config(), sampler="dpmpp_2m", eta=1.0)
  assert sampling.resolve_sampler(None, use_ddim=False) == "ddpm"
  assert sampling.resolve_sampler("unipc", use_ddim=True) == "unipc"
