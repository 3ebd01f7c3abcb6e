"""Gaussian diffusion vs the reference goldens (diffusion_golden.npz) and analytic facts."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from diff2lip_jax import diffusion as D
from diff2lip_jax.models import create_model
from tests.reference import load_npz, nchw_to_nhwc

TOL = dict(rtol=1e-5, atol=1e-5)


def _config(**overrides) -> ml_collections.ConfigDict:
  base = dict(diffusion_steps=1000, noise_schedule="linear", learn_sigma=True,
              timestep_respacing="ddim25", predict_xstart=False, rescale_timesteps=False,
              use_kl=False, rescale_learned_sigmas=False)
  base.update(overrides)
  return ml_collections.ConfigDict(base)


@pytest.fixture(scope="module")
def golden():
  return load_npz("diffusion_golden.npz")


@pytest.fixture(scope="module")
def tiny():
  return load_npz("tfg_tiny_golden.npz")


@pytest.fixture(scope="module")
def full():
  return D.create_diffusion(_config(), timestep_respacing="")


@pytest.fixture(scope="module")
def ddim25():
  return D.create_diffusion(_config())


# ---- schedules and respacing ------------------------------------------------------------

@pytest.mark.parametrize("name", ["betas", "alphas_cumprod", "posterior_variance",
                                  "posterior_log_variance_clipped", "posterior_mean_coef1",
                                  "posterior_mean_coef2"])
def test_linear_schedule_tables(full, golden, name):
  assert getattr(full, name).dtype == np.float64
  np.testing.assert_allclose(getattr(full, name), golden[name], **TOL)


def test_cosine_and_linear_betas(golden):
  np.testing.assert_allclose(D.get_named_beta_schedule("cosine", 1000), golden["cosine_betas"], **TOL)
  np.testing.assert_allclose(D.get_named_beta_schedule("linear", 1000), golden["betas"], **TOL)
  assert D.get_named_beta_schedule("linear", 4000)[-1] == pytest.approx(0.02 / 4)


@pytest.mark.parametrize("spec,key", [("ddim25", "ddim25"), ("250", "respace_250"),
                                      ("50", "respace_50"), ("ddim50", "respace_ddim50"),
                                      ("10,10,10", "respace_10_10_10")])
def test_respacing_maps(golden, spec, key):
  expected = golden[f"{key}_timestep_map"]
  assert sorted(D.space_timesteps(1000, spec)) == expected.tolist()
  diffusion = D.create_diffusion(_config(timestep_respacing=spec))
  np.testing.assert_array_equal(diffusion.timestep_map, expected)
  assert diffusion.num_timesteps == len(expected) and diffusion.original_num_steps == 1000


def test_ddim25_betas_and_override(golden, ddim25):
  np.testing.assert_allclose(ddim25.betas, golden["ddim25_betas"], **TOL)
  # Respaced alphas_cumprod are the original ones at the kept steps.
  np.testing.assert_allclose(ddim25.alphas_cumprod,
                             golden["alphas_cumprod"][golden["ddim25_timestep_map"]], rtol=1e-12)
  assert D.create_diffusion(_config(timestep_respacing=""), "ddim25").num_timesteps == 25
  assert D.create_diffusion(_config(timestep_respacing=None)).num_timesteps == 1000
  assert sorted(D.space_timesteps(1000, [10, 10, 10])) == golden["respace_10_10_10_timestep_map"].tolist()


@pytest.mark.parametrize("spec,message", [("ddim37", "integer stride"), ("ddimx", "not an integer"),
                                          ("2000", "cannot divide"), ("10,abc", "not an integer"),
                                          ("", "not an integer"), ("-5", "negative")])
def test_bad_respacing_errors(spec, message):
  with pytest.raises(ValueError, match=message):
    D.space_timesteps(1000, spec)


def test_logsnr_respacing_is_even_in_log_snr():
  betas = D.get_named_beta_schedule("linear", 1000)
  lam = 0.5 * np.log(np.cumprod(1 - betas) / (1 - np.cumprod(1 - betas)))
  d = D.create_diffusion(_config(), "logsnr10")
  assert d.num_timesteps == 10 and d.timestep_map[0] == 0 and d.timestep_map[-1] == 999
  steps = -np.diff(lam[d.timestep_map])
  # Nearest timesteps to 10 evenly spaced lambdas: every step within 10 % of the mean step.
  np.testing.assert_allclose(steps, (lam[0] - lam[-1]) / 9, rtol=0.1)
  # The even-in-t "10" spends a third of the lambda range on its last step.
  even = -np.diff(lam[D.create_diffusion(_config(), "10").timestep_map])
  assert even[0] > (lam[0] - lam[-1]) / 3 and even.max() / even.min() > 5
  # The cosine schedule's clipped last betas make lambda drop by 3.5 in its final timestep,
  # which no spacing can split: there the steps are still distinct and cover both ends.
  cosine = D.create_diffusion(_config(noise_schedule="cosine"), "logsnr10").timestep_map
  assert len(set(cosine)) == 10 and cosine[0] == 0 and cosine[-1] == 999


def test_logsnr_respacing_keeps_distinct_steps_and_checks_counts():
  betas = D.get_named_beta_schedule("linear", 1000)
  for count in (1, 2, 250, 999, 1000):
    kept = D.logsnr_timesteps(betas, count)
    assert len(kept) == count and min(kept) == 0 and max(kept) <= 999
  assert D.logsnr_timesteps(betas, 2) == {0, 999}
  assert D.respacing_timesteps(betas, "ddim25") == D.space_timesteps(1000, "ddim25")
  with pytest.raises(ValueError, match="cannot take 1001 steps"):
    D.create_diffusion(_config(), "logsnr1001")
  with pytest.raises(ValueError, match="not an integer"):
    D.create_diffusion(_config(), "logsnrx")


def test_bad_schedule_and_config_errors():
  with pytest.raises(ValueError, match="linear, cosine"):
    D.get_named_beta_schedule("quadratic", 1000)
  bad = _config()
  del bad["use_kl"]
  with pytest.raises(ValueError, match="use_kl"):
    D.create_diffusion(bad)
  with pytest.raises(ValueError, match="integer stride"):
    D.create_diffusion(_config(), "ddim41")


def test_loss_and_model_types():
  assert D.create_diffusion(_config()).loss_type == D.LossType.MSE
  assert D.create_diffusion(_config(use_kl=True)).loss_type == D.LossType.RESCALED_KL
  assert D.create_diffusion(_config(rescale_learned_sigmas=True)).loss_type == D.LossType.RESCALED_MSE
  assert D.create_diffusion(_config()).model_var_type == D.ModelVarType.LEARNED_RANGE
  assert D.create_diffusion(_config(learn_sigma=False)).model_var_type == D.ModelVarType.FIXED_LARGE
  assert D.create_diffusion(_config(predict_xstart=True)).model_mean_type == D.ModelMeanType.START_X


def test_model_timesteps(ddim25):
  t = jnp.array([0, 7, 24])
  np.testing.assert_array_equal(ddim25.model_timesteps(t), [0, 280, 960])
  rescaled = D.create_diffusion(_config(diffusion_steps=4000, rescale_timesteps=True), "ddim25")
  assert rescaled.model_timesteps(t).dtype == jnp.float32
  np.testing.assert_allclose(rescaled.model_timesteps(t), np.asarray(rescaled.timestep_map)[[0, 7, 24]] / 4)


# ---- forward process --------------------------------------------------------------------

def test_q_sample_golden(full, golden, tiny):
  x_start = nchw_to_nhwc(tiny["img"])
  noise = nchw_to_nhwc(golden["q_noise"])
  out = full.q_sample(jnp.asarray(x_start), jnp.asarray(golden["q_t"]), jnp.asarray(noise))
  np.testing.assert_allclose(out, nchw_to_nhwc(golden["q_sample"]), **TOL)


def test_jit_with_diffusion_as_argument(ddim25):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
  out = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 6))
  t = jnp.array([3, 24])
  jitted = jax.jit(lambda d, o, x, t: d.ddim_step(o, x, t)[0])(ddim25, out, x, t)
  np.testing.assert_allclose(jitted, ddim25.ddim_step(out, x, t)[0], rtol=1e-6, atol=1e-6)
  leaves, _ = jax.tree_util.tree_flatten(ddim25)
  assert len(leaves) == len(D.TABLE_NAMES) + 1  # tables + timestep_map; enums are static


# ---- analytic checks --------------------------------------------------------------------

def test_posterior_mean_at_t0_is_x_start(full):
  x0, xt = (jax.random.normal(k, (3, 4, 4, 3)) for k in jax.random.split(jax.random.PRNGKey(2)))
  mean, var, _ = full.q_posterior_mean_variance(x0, xt, jnp.zeros(3, jnp.int32))
  np.testing.assert_allclose(mean, x0, rtol=1e-6, atol=1e-6)
  assert float(jnp.max(var)) == 0.0


def test_normal_kl_identical_is_zero():
  mean = jnp.linspace(-2, 2, 7)
  np.testing.assert_allclose(D.normal_kl(mean, jnp.log(0.3), mean, jnp.log(0.3)), 0.0, atol=1e-7)
  # KL(N(1,1) || N(0,1)) = 1/2.
  assert float(D.normal_kl(1.0, 0.0, 0.0, 0.0)) == pytest.approx(0.5)


def test_discretized_likelihood_sums_to_one():
  bins = jnp.linspace(-1.0, 1.0, 256)
  for mean, log_scale in [(0.1, np.log(0.3)), (-0.7, np.log(0.05))]:
    logp = D.discretized_gaussian_log_likelihood(
        bins, means=jnp.full_like(bins, mean), log_scales=jnp.full_like(bins, log_scale))
    assert float(jnp.sum(jnp.exp(logp))) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("index", [0, 7, 24])
def test_ddim_step_with_true_eps_follows_q(ddim25, index):
  """With the true eps, deterministic DDIM lands on sqrt(ab_prev) x0 + sqrt(1-ab_prev) eps."""
  k0, k1 = jax.random.split(jax.random.PRNGKey(3))
  x0 = jax.random.uniform(k0, (2, 8, 8, 3), minval=-0.9, maxval=0.9)
  eps = jax.random.normal(k1, x0.shape)
  t = jnp.full((2,), index, jnp.int32)
  xt = ddim25.q_sample(x0, t, eps)
  output = jnp.concatenate([eps, jnp.zeros_like(eps)], axis=-1)
  sample, pred_xstart = ddim25.ddim_step(output, xt, t)
  np.testing.assert_allclose(pred_xstart, x0, atol=2e-4)
  ab_prev = ddim25.alphas_cumprod_prev[index]
  expected = np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps
  np.testing.assert_allclose(sample, expected, atol=2e-4)
  if index == 0:
    np.testing.assert_allclose(sample, x0, atol=1e-5)


def test_hybrid_vb_stops_mean_gradient(full):
  ks = jax.random.split(jax.random.PRNGKey(4), 3)
  x0 = jax.random.uniform(ks[0], (2, 4, 4, 3), minval=-1, maxval=1)
  xt = full.q_sample(x0, jnp.array([5, 300]), jax.random.normal(ks[1], x0.shape))
  output = jax.random.normal(ks[2], (2, 4, 4, 6))
  t = jnp.array([5, 300])
  grad = jax.grad(lambda o: full.hybrid_vb_term(o, x0, xt, t).sum())(output)
  assert float(jnp.abs(grad[..., :3]).max()) == 0.0 and float(jnp.abs(grad[..., 3:]).max()) > 0
  rescaled = D.create_diffusion(_config(rescale_learned_sigmas=True), "250")
  t_small = jnp.array([1, 100])
  ratio = rescaled.hybrid_vb_term(output, x0, xt, t_small) / rescaled.vb_terms_bpd(output, x0, xt, t_small)[0]
  np.testing.assert_allclose(ratio, 0.25, rtol=1e-6)



def test_sample_loops_match_manual_steps():
  d = D.create_diffusion(_config(), "10")
  toy = lambda x, model_t: jnp.concatenate(
      [0.5 * x + 1e-3 * model_t[:, None, None, None], jnp.tanh(x)], axis=-1)
  x_T = jax.random.normal(jax.random.PRNGKey(9), (2, 4, 4, 3))
  x = x_T
  for index in reversed(range(d.num_timesteps)):
    t = jnp.full((2,), index, jnp.int32)
    x, _ = d.ddim_step(toy(x, d.model_timesteps(t)), x, t)
  np.testing.assert_allclose(d.ddim_sample_loop(toy, x_T), x, rtol=1e-5, atol=1e-5)
  rng = jax.random.PRNGKey(10)
  ddpm = jax.jit(lambda diff, n, r: diff.p_sample_loop(toy, n, r))
  first, again = ddpm(d, x_T, rng), ddpm(d, x_T, rng)
  np.testing.assert_array_equal(first, again)
  assert bool(jnp.all(jnp.isfinite(first))) and not np.allclose(first, x, atol=1e-3)
  with pytest.raises(ValueError, match="rng"):
    d.ddim_sample_loop(toy, x_T, eta=1.0)

# ---- formulas vs a float64 numpy transcription of the reference -------------------------

def _ref_pmv(d, output, x, t, clip, dtype=np.float64):
  """guided-diffusion p_mean_variance in numpy, from the reference formulas."""
  at = lambda table: np.asarray(table, np.float64)[t][:, None, None, None].astype(dtype)
  c = x.shape[-1]
  pred, v = (output[..., :c], output[..., c:]) if d.model_var_type.is_learned else (output, None)
  if d.model_var_type == D.ModelVarType.LEARNED_RANGE:
    frac = (v + 1) / 2
    log_var = frac * at(np.log(d.betas)) + (1 - frac) * at(d.posterior_log_variance_clipped)
  elif d.model_var_type == D.ModelVarType.LEARNED:
    log_var = v
  elif d.model_var_type == D.ModelVarType.FIXED_LARGE:
    log_var = at(np.log(np.append(d.posterior_variance[1], d.betas[1:]))) + 0 * x
  else:
    log_var = at(d.posterior_log_variance_clipped) + 0 * x
  if d.model_mean_type == D.ModelMeanType.EPSILON:
    x0 = at(np.sqrt(1 / d.alphas_cumprod)) * x - at(np.sqrt(1 / d.alphas_cumprod - 1)) * pred
  else:
    x0 = pred
  x0 = np.clip(x0, -1, 1) if clip else x0
  mean = at(d.posterior_mean_coef1) * x0 + at(d.posterior_mean_coef2) * x
  return mean, log_var, x0


def _ref_vb_bits(d, output, x0, xt, t, mask):
  """Reference _vb_terms_bpd in float32 numpy like torch: the decoder NLL subtracts two
  CDFs close to 1, so float64 would disagree with any float32 implementation."""
  f32 = np.float32
  at = lambda table: np.asarray(table, np.float64)[t][:, None, None, None].astype(f32)
  mean, log_var, _ = _ref_pmv(d, output, xt, t, clip=False, dtype=f32)
  true_mean = at(d.posterior_mean_coef1) * x0 + at(d.posterior_mean_coef2) * xt
  true_log_var = at(d.posterior_log_variance_clipped)
  kl = 0.5 * (-1 + log_var - true_log_var + np.exp(true_log_var - log_var)
              + (true_mean - mean) ** 2 * np.exp(-log_var))
  cdf = lambda z: f32(0.5) * (1 + np.tanh(f32(np.sqrt(2 / np.pi)) * (z + f32(0.044715) * z ** 3)))
  inv = np.exp(f32(-0.5) * log_var)
  plus, minus = cdf(inv * (x0 - mean + f32(1 / 255))), cdf(inv * (x0 - mean - f32(1 / 255)))
  logp = np.where(x0 < -0.999, np.log(np.maximum(plus, 1e-12)),
                  np.where(x0 > 0.999, np.log(np.maximum(1 - minus, 1e-12)),
                           np.log(np.maximum(plus - minus, 1e-12))))
  kl_bits = (kl * mask).mean(axis=(1, 2, 3)) / np.log(2)
  nll_bits = (-logp * mask).mean(axis=(1, 2, 3)) / np.log(2)
  return np.where(t == 0, nll_bits, kl_bits)


def _random_case(seed, channels_out, batch=4):
  ks = jax.random.split(jax.random.PRNGKey(seed), 3)
  x0 = np.round(np.asarray(jax.random.uniform(ks[0], (batch, 8, 8, 3), minval=-1, maxval=1)) * 127.5) / 127.5
  xt = np.asarray(jax.random.normal(ks[1], x0.shape))
  out = np.asarray(jax.random.uniform(ks[2], (batch, 8, 8, channels_out), minval=-1.2, maxval=1.2))
  mask = np.zeros((batch, 8, 8, 1), np.float32)
  mask[:, 4:] = 1
  return x0.astype(np.float32), xt, out, mask


@pytest.mark.parametrize("overrides", [dict(), dict(learn_sigma=False),
                                       dict(learn_sigma=False, sigma_small=True),
                                       dict(predict_xstart=True)])
@pytest.mark.parametrize("respacing", ["", "ddim25"])
def test_p_mean_variance_and_vb_match_transcription(overrides, respacing):
  d = D.create_diffusion(_config(**overrides), respacing)
  x0, xt, out, mask = _random_case(5, 6 if d.model_var_type.is_learned else 3)
  t = np.array([0, 1, d.num_timesteps // 2, d.num_timesteps - 1])
  for clip in (True, False):
    got = d.p_mean_variance(jnp.asarray(out), jnp.asarray(xt), jnp.asarray(t), clip_denoised=clip)
    mean, log_var, pred_x0 = _ref_pmv(d, out.astype(np.float64), xt.astype(np.float64), t, clip)
    np.testing.assert_allclose(got["pred_xstart"], pred_x0, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["log_variance"], log_var, rtol=1e-5, atol=1e-5)
    # FIXED_SMALL reports the unclipped posterior variance (0 at t=0) next to the clipped log.
    variance = (np.asarray(d.posterior_variance)[t][:, None, None, None] + 0 * log_var
                if d.model_var_type == D.ModelVarType.FIXED_SMALL else np.exp(log_var))
    np.testing.assert_allclose(got["variance"], variance, rtol=1e-5, atol=1e-7)
  xt_q = np.asarray(d.q_sample(jnp.asarray(x0), jnp.asarray(t), jnp.asarray(xt)))
  for m in (None, mask):
    vb, _ = d.vb_terms_bpd(jnp.asarray(out), jnp.asarray(x0), jnp.asarray(xt_q), jnp.asarray(t), mask=m)
    ref = _ref_vb_bits(d, out, x0, xt_q, t, np.float32(1) if m is None else m)
    np.testing.assert_allclose(vb, ref, rtol=2e-4, atol=1e-5)


def test_stochastic_steps_match_transcription(ddim25):
  x0, xt, out, _ = _random_case(6, 6)
  noise = np.asarray(jax.random.normal(jax.random.PRNGKey(7), xt.shape))
  t = np.array([0, 3, 12, 24])
  at = lambda table: np.asarray(table, np.float64)[t][:, None, None, None]
  mean, log_var, pred_x0 = _ref_pmv(ddim25, out.astype(np.float64), xt.astype(np.float64), t, True)
  nonzero = (t != 0)[:, None, None, None]
  sample, _ = ddim25.ddpm_step(jnp.asarray(out), jnp.asarray(xt), jnp.asarray(t), jnp.asarray(noise))
  np.testing.assert_allclose(sample, mean + nonzero * np.exp(0.5 * log_var) * noise, rtol=1e-5, atol=2e-5)
  eta = 0.7
  eps = (at(np.sqrt(1 / ddim25.alphas_cumprod)) * xt - pred_x0) / at(np.sqrt(1 / ddim25.alphas_cumprod - 1))
  ab, ab_prev = at(ddim25.alphas_cumprod), at(ddim25.alphas_cumprod_prev)
  sigma = eta * np.sqrt((1 - ab_prev) / (1 - ab)) * np.sqrt(1 - ab / ab_prev)
  expected = pred_x0 * np.sqrt(ab_prev) + np.sqrt(1 - ab_prev - sigma ** 2) * eps + nonzero * sigma * noise
  sample, _ = ddim25.ddim_step(jnp.asarray(out), jnp.asarray(xt), jnp.asarray(t), jnp.asarray(noise), eta=eta)
  np.testing.assert_allclose(sample, expected, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="noise"):
    ddim25.ddim_step(jnp.asarray(out), jnp.asarray(xt), jnp.asarray(t), eta=eta)
  with pytest.raises(ValueError, match="model output has shape"):
    ddim25.p_mean_variance(jnp.asarray(out[..., :3]), jnp.asarray(xt), jnp.asarray(t))


def test_training_losses_terms():
  d = D.create_diffusion(_config(), "")
  x0, noise, out, mask = _random_case(8, 6)
  t = jnp.array([0, 10, 500, 999])
  xt = d.q_sample(jnp.asarray(x0), t, jnp.asarray(noise))
  terms = d.training_losses(jnp.asarray(out), jnp.asarray(x0), xt, t, jnp.asarray(noise), mask=mask)
  np.testing.assert_allclose(terms["mse"], ((out[..., :3] - noise) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(terms["vb"], d.vb_terms_bpd(jnp.asarray(out), x0, xt, t, mask=mask)[0], rtol=1e-6)
  np.testing.assert_allclose(terms["loss"], terms["mse"] + terms["vb"], rtol=1e-6)
  kl = D.create_diffusion(_config(use_kl=True), "")
  kl_terms = kl.training_losses(jnp.asarray(out), jnp.asarray(x0), xt, t, jnp.asarray(noise))
  np.testing.assert_allclose(kl_terms["loss"], 1000 * d.vb_terms_bpd(jnp.asarray(out), x0, xt, t)[0], rtol=1e-6)
  steps = d.sample_timesteps(jax.random.PRNGKey(0), 4096)
  assert steps.shape == (4096,) and int(steps.min()) >= 0 and int(steps.max()) == 999


# ---- goldens that need the tiny TFG model -----------------------------------------------

MODEL_TOL = dict(rtol=0, atol=2e-3)  # README: a correct float32 port is well under 2e-3


@pytest.fixture(scope="module")
def tiny_model(tiny, golden_model):
  """`apply(x_t, model_t)` of the tiny TFG model with the golden's conditioning (NHWC)."""
  reference_model = golden_model("tiny")
  params = reference_model.params
  model = create_model(reference_model.config)
  cond = dict(cond_img=jnp.asarray(nchw_to_nhwc(tiny["cond_img"])),
              mask=jnp.asarray(nchw_to_nhwc(tiny["mask"])),
              ref_img=jnp.asarray(nchw_to_nhwc(tiny["ref_img"])),
              indiv_mels=jnp.asarray(tiny["indiv_mels"]))
  return jax.jit(lambda x, t: model.apply({"params": params}, x, t, **cond))


def _close(got, want_nchw, name, **tol):
  want = nchw_to_nhwc(want_nchw)
  diff = np.abs(np.asarray(got) - want)
  assert diff.mean() < 1e-4, f"{name}: mean |diff| {diff.mean():.2e}"
  np.testing.assert_allclose(got, want, **(tol or MODEL_TOL), err_msg=name)


@pytest.mark.parametrize("index", [0, 7, 24])
def test_p_mean_variance_golden(ddim25, tiny_model, golden, tiny, index):
  """pmv_t*: ddim25 diffusion at respaced index t; the model sees timestep_map[t]."""
  x = jnp.asarray(nchw_to_nhwc(tiny["x"]))
  t = jnp.full((x.shape[0],), index, jnp.int32)
  out = ddim25.p_mean_variance(tiny_model(x, ddim25.model_timesteps(t)), x, t, clip_denoised=True)
  for key in ("mean", "pred_xstart"):
    _close(out[key], golden[f"pmv_t{index}_{key}"], f"pmv_t{index}_{key}")
  # Variances are ~1e-4..1e-2: compare relatively.
  _close(out["variance"], golden[f"pmv_t{index}_variance"], "variance", rtol=1e-4, atol=1e-8)
  _close(out["log_variance"], golden[f"pmv_t{index}_log_variance"], "log_variance",
         rtol=1e-5, atol=1e-5)


def test_vb_terms_golden(full, tiny_model, golden, tiny):
  """vb_*: un-respaced 1000-step diffusion (q_t reaches 999), Diff2Lip mask, no clipping."""
  x_start = jnp.asarray(nchw_to_nhwc(tiny["img"]))
  t = jnp.asarray(golden["q_t"])
  x_t = full.q_sample(x_start, t, jnp.asarray(nchw_to_nhwc(golden["q_noise"])))
  output = tiny_model(x_t, full.model_timesteps(t))
  vb, pred_xstart = full.vb_terms_bpd(output, x_start, x_t, t,
                                      mask=jnp.asarray(nchw_to_nhwc(tiny["mask"])))
  _close(pred_xstart, golden["vb_pred_xstart"], "vb_pred_xstart")
  np.testing.assert_allclose(vb, golden["vb_output"], rtol=1e-4, atol=1e-6)


def test_ddim25_sample_golden(ddim25, tiny_model, golden):
  """Full deterministic DDIM (eta 0, clip_denoised) from the golden initial noise."""
  sample = ddim25.ddim_sample_loop(tiny_model, jnp.asarray(nchw_to_nhwc(golden["ddim_init_noise"])))
  _close(sample, golden["ddim25_sample"], "ddim25_sample")
