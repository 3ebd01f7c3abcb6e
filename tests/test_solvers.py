"""Multistep ODE solvers (DPM-Solver++(2M), UniPC) against closed-form answers for Gaussian data.

For data x0 ~ N(mu, s^2) per pixel the exact denoiser is
E[x0 | x_t] = mu + a s^2 (x_t - a mu) / (a^2 s^2 + sigma^2) (a = sqrt(ab), sigma^2 = 1 - ab),
and the probability-flow ODE moves a sample between noise levels keeping its standardised
value z = (x - a mu) / sqrt(a^2 s^2 + sigma^2). A fake "model" returning that exact eps or x0
makes every sampler's error a pure discretisation error.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from diff2lip_jax import diffusion as D

SHAPE = (2, 8, 8, 3)
_K = jax.random.split(jax.random.PRNGKey(0), 3)
MU = np.asarray(jax.random.uniform(_K[0], SHAPE[1:], minval=-0.5, maxval=0.5))
S = np.asarray(jax.random.uniform(_K[1], SHAPE[1:], minval=0.1, maxval=0.5))
X_T = jax.random.normal(_K[2], SHAPE)
# The model sees timestep_map[k] = 7 + 3k: a wrong mapping reads NaN from the model's table.
MAP_OFFSET, MAP_STRIDE = 7, 3


def _logsnr_uniform(steps: int, predict_xstart: bool, lam_max=4.6, lam_min=-5.0):
  """A `steps`-step process whose log-SNR (2 lambda) is uniform: a smooth schedule in lambda."""
  lam = np.linspace(lam_max, lam_min, steps)
  alphas_cumprod = 1 / (1 + np.exp(-2 * lam))
  betas = 1 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1])
  mean_type = D.ModelMeanType.START_X if predict_xstart else D.ModelMeanType.EPSILON
  timestep_map = MAP_OFFSET + MAP_STRIDE * np.arange(steps)
  return D.GaussianDiffusion.from_betas(
      betas, model_mean_type=mean_type, model_var_type=D.ModelVarType.LEARNED_RANGE,
      loss_type=D.LossType.MSE, timestep_map=timestep_map,
      original_num_steps=int(timestep_map[-1]) + 1)


def _gaussian_model(d, alphas_cumprod_by_model_t):
  """Exact eps / x0 prediction (+ 3 ignored variance channels) for a model timestep table."""
  table = jnp.asarray(alphas_cumprod_by_model_t, jnp.float32)

  def model_fn(x, model_t):
    ab = table[model_t][:, None, None, None]
    x0 = MU + jnp.sqrt(ab) * S ** 2 * (x - jnp.sqrt(ab) * MU) / (ab * S ** 2 + 1 - ab)
    if d.model_mean_type != D.ModelMeanType.START_X:
      x0 = (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)
    return jnp.concatenate([x0, jnp.full_like(x0, 0.3)], axis=-1)

  return model_fn


def _mapped_model(d):
  table = np.full(d.original_num_steps, np.nan)
  table[d.timestep_map] = d.alphas_cumprod
  return _gaussian_model(d, table)


def _exact(d):
  """ODE from x_T (at the last respaced step) to step 0, then the exact final denoising."""
  ab_T, ab_0 = d.alphas_cumprod[-1], d.alphas_cumprod[0]
  z = (X_T - np.sqrt(ab_T) * MU) / np.sqrt(ab_T * S ** 2 + 1 - ab_T)
  x_0 = np.sqrt(ab_0) * MU + np.sqrt(ab_0 * S ** 2 + 1 - ab_0) * z
  return MU + np.sqrt(ab_0) * S ** 2 * (x_0 - np.sqrt(ab_0) * MU) / (ab_0 * S ** 2 + 1 - ab_0)


def _errors(steps, predict_xstart, samplers=("ddim", "dpmpp_2m", "unipc")):
  d = _logsnr_uniform(steps, predict_xstart)
  model_fn, want = _mapped_model(d), _exact(d)
  return [float(jnp.abs(d.sample_loop(name, model_fn, X_T, clip_denoised=False) - want).max())
          for name in samplers]


@pytest.mark.parametrize("predict_xstart", [False, True])
def test_convergence_orders_on_gaussian_data(predict_xstart):
  (ddim_a, dpm_a, uni_a), (ddim_b, dpm_b, uni_b), (ddim_c, dpm_c, uni_c) = (
      _errors(n, predict_xstart) for n in (17, 33, 65))
  for ddim, dpm, uni in ((ddim_a, dpm_a, uni_a), (ddim_b, dpm_b, uni_b), (ddim_c, dpm_c, uni_c)):
    assert dpm < ddim / 5 and uni < dpm, (ddim, dpm, uni)
  # Halving every lambda step: DDIM is first order, DPM-Solver++(2M) second order, and
  # UniPC's corrector adds one order (measured ratios ~1.96, ~3.9, ~7.7).
  assert 1.8 < ddim_b / ddim_c < 2.2, (ddim_b, ddim_c)
  assert 3.4 < dpm_b / dpm_c < 4.6, (dpm_b, dpm_c)
  assert 6.0 < uni_b / uni_c < 9.0, (uni_b, uni_c)
  assert dpm_a > dpm_b > dpm_c and uni_a > uni_b > uni_c


def _respaced_errors(respacing):
  """Mean errors of DDIM, DPM-Solver++(2M), UniPC on the released linear schedule, respaced;
  the exact model reads the ORIGINAL alphas_cumprod at the timesteps it is fed."""
  config = ml_collections.ConfigDict(dict(
      diffusion_steps=1000, noise_schedule="linear", learn_sigma=True, timestep_respacing="",
      predict_xstart=False, rescale_timesteps=False, use_kl=False, rescale_learned_sigmas=False))
  original = np.cumprod(1 - D.get_named_beta_schedule("linear", 1000))
  d = D.create_diffusion(config, respacing)
  model_fn, want = _gaussian_model(d, original), _exact(d)
  return np.array([float(jnp.abs(d.sample_loop(name, model_fn, X_T, clip_denoised=False)
                                 - want).mean()) for name in ("ddim", "dpmpp_2m", "unipc")])


def test_respaced_linear_schedule_converges_to_the_ode_solution():
  errors = np.array([_respaced_errors(n) for n in ("20", "40", "80")])
  assert (errors[1:] < errors[:-1]).all(), errors
  ratios = errors[1] / errors[2]  # measured ~1.96, ~4.6, ~4.2
  assert 1.8 < ratios[0] < 2.2 and ratios[1] > 3.3 and ratios[2] > 3.3, ratios
  assert (errors[2, 1:] < errors[2, 0] / 4).all(), errors
  # Spaced evenly in log-SNR, 10 steps of the solvers beat 40 even steps of DDIM.
  logsnr = _respaced_errors("logsnr10")
  assert (logsnr[1:] < errors[1, 0] / 3).all() and (logsnr[1:] < logsnr[0] / 5).all(), logsnr


def test_coefficients_match_the_log_snr_formulas():
  d = D.create_diffusion(dict(diffusion_steps=1000, noise_schedule="cosine", learn_sigma=False,
                              timestep_respacing="12", predict_xstart=False,
                              rescale_timesteps=False, use_kl=False,
                              rescale_learned_sigmas=False))
  coef = D.multistep_coefficients(d, lower_order_final=False)
  ab = d.alphas_cumprod
  lam = 0.5 * np.log(ab / (1 - ab))
  h = lam[:-1] - lam[1:]  # h[k-1]: step k -> k-1
  k = np.arange(1, 12)
  np.testing.assert_allclose(coef["ratio"][k], np.sqrt((1 - ab[k - 1]) / (1 - ab[k])), rtol=1e-12)
  np.testing.assert_allclose(coef["phi"][k], np.sqrt(ab[k - 1]) * -np.expm1(-h), rtol=1e-10)
  # Final step to the clean image: x = x0 estimate; first/last steps are first order.
  assert coef["ratio"][0] == 0 and coef["phi"][0] == 1
  assert coef["c"][0] == 0 and coef["c"][11] == 0 and coef["w1"][11] == 0
  np.testing.assert_allclose(coef["c"][1:11], h[:10] / (2 * h[1:]), rtol=1e-12)
  # By default the last ODE step (into index 0) is first order too; nothing else changes.
  default = D.multistep_coefficients(d)
  assert default["c"][1] == 0 and default["w1"][1] == 0
  np.testing.assert_array_equal(default["c"][2:], coef["c"][2:])
  assert coef["wt"][11] == 0.5  # UniC-1 after the first (first-order) step
  # UniC-2 for step k=5: the UniPC linear system, solved directly.
  step, hk = 5, h[4]
  r1 = -h[5] / hk
  phis = [np.expm1(-hk) / -hk - 1]
  phis.append(phis[0] / -hk - 0.5)
  rho = np.linalg.solve([[1, 1], [r1, 1]], [phis[0] / np.expm1(-hk), 2 * phis[1] / np.expm1(-hk)])
  np.testing.assert_allclose([coef["wt"][step], coef["w1"][step]], [rho[1], rho[0] / r1],
                             rtol=1e-9)


def _toy(x, model_t):
  """A smooth non-linear stand-in model with learned-variance channels; x0 leaves [-1, 1]."""
  return jnp.concatenate([1.7 * jnp.sin(x) + 1e-3 * model_t[:, None, None, None],
                          jnp.tanh(x)], axis=-1)


@pytest.mark.parametrize("clip", [True, False])
def test_first_order_solver_is_ddim(clip):
  d_config = dict(diffusion_steps=1000, noise_schedule="linear", learn_sigma=True,
                  timestep_respacing="ddim10", predict_xstart=False, rescale_timesteps=False,
                  use_kl=False, rescale_learned_sigmas=False)
  d = D.create_diffusion(d_config)
  ddim = d.ddim_sample_loop(_toy, X_T, clip_denoised=clip)
  first = d.multistep_sample_loop(_toy, X_T, order=1, clip_denoised=clip)
  np.testing.assert_allclose(first, ddim, rtol=1e-4, atol=1e-4)
  second = d.sample_loop("dpmpp_2m", _toy, X_T, clip_denoised=clip)
  assert np.abs(np.asarray(second - ddim)).max() > 1e-3
  one_step = D.create_diffusion(dict(d_config, timestep_respacing="1"))
  np.testing.assert_allclose(one_step.sample_loop("unipc", _toy, X_T, clip_denoised=clip),
                             one_step.ddim_sample_loop(_toy, X_T, clip_denoised=clip),
                             rtol=1e-6, atol=1e-6)
  if clip:
    # The last step returns the clipped x0 estimate.
    assert np.abs(np.asarray(second)).max() <= 1.0 + 1e-6
  else:
    assert np.abs(np.asarray(second)).max() > 1.05


def test_jit_one_compile_per_shape_and_one_model_call_per_loop():
  d = D.create_diffusion(dict(diffusion_steps=1000, noise_schedule="linear", learn_sigma=True,
                              timestep_respacing="ddim5", predict_xstart=True,
                              rescale_timesteps=False, use_kl=False,
                              rescale_learned_sigmas=False))
  traces = []

  def model_fn(x, model_t):
    traces.append(x.shape)
    return _toy(x, model_t)

  run = jax.jit(lambda diff, noise: diff.sample_loop("unipc", model_fn, noise))
  a = run(d, X_T)
  b = run(d, X_T + 0.1)
  assert traces == [SHAPE] and not np.allclose(a, b)
  run(d, X_T[:1])
  assert traces == [SHAPE, (1,) + SHAPE[1:]]
  # Diffusion passed into jit (float32 jnp coefficients) vs closed over (float64 numpy).
  np.testing.assert_allclose(a, d.sample_loop("unipc", _toy, X_T), rtol=1e-5, atol=1e-5)
  jaxpr = str(jax.make_jaxpr(lambda n: d.sample_loop("dpmpp_2m", _toy, n))(X_T))
  assert ("while[" in jaxpr or "scan[" in jaxpr) and jaxpr.count(" sin ") == 1


def test_sampler_selection_errors():
  d = _logsnr_uniform(4, False)
  with pytest.raises(ValueError, match="unknown sampler 'heun'"):
    d.sample_loop("heun", _toy, X_T)
  with pytest.raises(ValueError, match="eta must be 0"):
    d.sample_loop("unipc", _toy, X_T, eta=0.5)
  with pytest.raises(ValueError, match="rng"):
    d.sample_loop("ddpm", _toy, X_T)
  with pytest.raises(ValueError, match="order must be 1 or 2"):
    d.multistep_sample_loop(_toy, X_T, order=3)
