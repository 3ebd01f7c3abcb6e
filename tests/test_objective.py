"""Each term of the Diff2Lip objective against hand-computed values; the step learns."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diff2lip_jax.diffusion import create_diffusion
from diff2lip_jax.training import objective
from diff2lip_jax.training import step as step_lib
from diff2lip_jax.training.step import make_train_step
from tests.training_utils import model_and_state, random_batch, tiny_config


def _mask(n=1, size=4):
  mask = np.zeros((n, size, size, 1), np.float32)
  mask[:, size // 2:] = 1.0
  return mask


def test_masked_mse_and_l1_count_only_the_masked_region():
  pred = np.zeros((1, 4, 4, 3), np.float32)
  target = np.zeros_like(pred)
  target[:, 2:] = 2.0          # masked rows: error 2
  target[:, :2] = 100.0        # unmasked rows: must not count
  mask = _mask()
  assert float(objective.masked_mse(pred, target, mask)) == 4.0
  assert float(objective.masked_l1(pred, target, mask)) == 2.0
  target[0, 3, 0, 0] = 5.0     # one of 24 masked values: error 5 instead of 2
  np.testing.assert_allclose(float(objective.masked_mse(pred, target, mask)),
                             (23 * 4 + 25) / 24, rtol=1e-6)


def test_mouth_weighted_mask_weights_the_region_only_inside_the_mask():
  mask = _mask(2, size=10)                       # rows 5-9 generated
  weighted = np.asarray(objective.mouth_weighted_mask(mask, 3.0, "0.3,0.8,0.2,0.6"))
  expected = mask.copy()
  expected[:, 3:8, 2:6] *= 4.0                   # rows 3-7, cols 2-5; only 5-7 are masked
  np.testing.assert_array_equal(weighted, expected)
  assert objective.mouth_weighted_mask(mask, 0.0, "bad") is mask
  # As the mask of masked_mean: a weighted mean, an error in the region counts 4 times.
  pred, target = np.zeros((2, 10, 10, 3), np.float32), np.zeros((2, 10, 10, 3), np.float32)
  target[:, 6, 3] = 1.0                          # one pixel inside the region
  target[:, 9, 9] = 1.0                          # one outside it (still masked)
  total = float(np.sum(expected))
  np.testing.assert_allclose(float(objective.masked_l1(pred, target, weighted)),
                             2 * 3 * (4.0 + 1.0) / (3 * total), rtol=1e-6)
  for bad in ("0.5,0.4,0,1", "0,1,0", "a,b,c,d", "0,1.5,0,1"):
    with pytest.raises(ValueError, match="mouth_region"):
      objective.mouth_weighted_mask(mask, 1.0, bad)


def test_composite_and_weighted_total():
  gen, orig, mask = np.full((1, 4, 4, 3), 1.0), np.full((1, 4, 4, 3), -1.0), _mask()
  shown = np.asarray(objective.composite(gen, orig, mask))
  assert (shown[:, 2:] == 1).all() and (shown[:, :2] == -1).all()
  terms = {"mse": jnp.array(2.0), "vb": jnp.array(3.0), "sync": jnp.array(10.0),
           "per_frame": jnp.ones(3)}
  total = objective.weighted_total(terms, {"mse": 1.0, "vb": 0.5, "sync": 0.0})
  assert float(total) == 3.5


def test_diffusion_terms_match_a_hand_computation():
  config = tiny_config()
  config.diffusion.predict_xstart = False   # ε-prediction, as the released model
  diffusion = create_diffusion(config.diffusion, timestep_respacing="")
  rng = np.random.default_rng(0)
  x0 = rng.uniform(-1, 1, (2, 4, 4, 3)).astype(np.float32)
  noise = rng.standard_normal(x0.shape).astype(np.float32)
  t = np.array([10, 500])
  x_t = np.asarray(diffusion.q_sample(x0, t, noise))
  eps_pred = noise + 0.5  # error 0.5 everywhere
  output = np.concatenate([eps_pred, np.zeros_like(eps_pred)], -1)
  terms = objective.diffusion_terms(diffusion, output, x0, x_t, t, noise, _mask(2))
  np.testing.assert_allclose(float(terms["mse"]), 0.25, rtol=1e-6)
  # x̂0 = (x_t - sqrt(1-ab) eps) / sqrt(ab), clipped.
  ab = diffusion.alphas_cumprod[t].reshape(-1, 1, 1, 1)
  want = np.clip((x_t - np.sqrt(1 - ab) * eps_pred) / np.sqrt(ab), -1, 1)
  np.testing.assert_allclose(np.asarray(terms["pred_xstart"]), want, rtol=1e-4, atol=1e-5)
  vb_direct = diffusion.hybrid_vb_term(output, x0, x_t, t, mask=_mask(2))
  np.testing.assert_allclose(float(terms["vb"]), float(jnp.mean(vb_direct)), rtol=1e-6)
  # x0-prediction (the synthetic default): the target is x0 itself.
  config.diffusion.predict_xstart = True
  x0_diffusion = create_diffusion(config.diffusion, timestep_respacing="")
  output = np.concatenate([x0 - 0.25, np.zeros_like(x0)], -1)
  terms = objective.diffusion_terms(x0_diffusion, output, x0, x_t, t, noise, _mask(2))
  np.testing.assert_allclose(float(terms["mse"]), 0.0625, rtol=1e-6)


def test_sync_loss_is_bce_of_the_cosine_similarity():
  emb_a = jnp.array([[1.0, 0.0], [0.6, 0.8]])
  emb_v = jnp.array([[1.0, 0.0], [1.0, 0.0]])   # cosines 1.0 and 0.6

  def fake_syncnet(variables, mel, face):
    assert mel.shape == (2, 80, 16, 1) and face.shape == (2, 48, 96, 15)
    return emb_a, emb_v

  frames = jnp.zeros((10, 32, 32, 3))
  loss = objective.sync_loss(fake_syncnet, None, frames, jnp.zeros((2, 80, 16)), nframes=5)
  # Clamped log at -100 as torch's BCELoss: -(log(1) + log(0.6)) / 2.
  np.testing.assert_allclose(float(loss), -np.log(0.6) / 2, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_step():
  """One compiled step shared by the tests below (compiling dominates their cost)."""
  config = tiny_config()
  config.optimizer.lr = 1e-3
  model, diffusion, state = model_and_state(config)
  return config, state, jax.jit(make_train_step(model, diffusion, config))


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(tiny_step):
  config, state, step = tiny_step
  batch = random_batch(config, windows=2)
  # Same noise and timesteps every step: only the parameters change.
  rng = state.rng
  losses = []
  for _ in range(8):
    state, metrics = step(state.replace(rng=rng), batch, {})
    losses.append(float(metrics["mse"]))
  assert losses[-1] < 0.7 * losses[0], losses


def test_nonfinite_batch_skips_the_update_and_counts_it(tiny_step):
  config, state, step = tiny_step
  batch = random_batch(config, windows=2)
  batch["image"][0, 0, 0, 0, 0] = np.nan
  new, metrics = step(state, batch, {})
  assert float(metrics["finite"]) == 0.0
  assert int(new.nonfinite_steps) == 1 and int(new.nonfinite_streak) == 1
  jax.tree_util.tree_map(np.testing.assert_array_equal, new.params, state.params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, new.ema, state.ema)
  good, metrics = step(new, random_batch(config, windows=2), {})
  assert float(metrics["finite"]) == 1.0 and int(good.nonfinite_streak) == 0
  assert int(good.nonfinite_steps) == 1


def test_adversarial_term_trains_the_discriminator_in_the_same_step():
  from diff2lip_jax.models.discriminator import init_discriminator_params
  from diff2lip_jax.training.loop import make_discriminator
  config = tiny_config()
  config.loss.adversarial = 0.1
  config.discriminator.width, config.discriminator.depth = 32, 2
  disc = make_discriminator(config)
  disc_params = init_discriminator_params(jax.random.PRNGKey(3), disc, 16, 32)
  model, diffusion, _ = model_and_state(config)
  from diff2lip_jax.models import init_params
  from diff2lip_jax.training.state import create_train_state
  state = create_train_state(jax.random.PRNGKey(1), init_params(model, config.model,
                                                                jax.random.PRNGKey(0)),
                             config, disc_params)
  step = jax.jit(functools.partial(make_train_step(model, diffusion, config, discriminator=disc)))
  new, metrics = step(state, random_batch(config, windows=2), {})
  assert "adversarial" in metrics and "disc_loss" in metrics
  changed = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()),
                                   new.disc_params, state.disc_params)
  assert max(jax.tree_util.tree_leaves(changed)) > 0


def test_training_timesteps_per_window_and_per_frame():
  diffusion = create_diffusion(tiny_config().diffusion, timestep_respacing="")
  key = jax.random.PRNGKey(3)
  per_window = np.asarray(step_lib.training_timesteps(diffusion, key, 4, 5, False))
  assert per_window.shape == (20,)
  assert (per_window.reshape(4, 5) == per_window.reshape(4, 5)[:, :1]).all()
  per_frame = np.asarray(step_lib.training_timesteps(diffusion, key, 4, 5, True))
  assert per_frame.shape == (20,) and per_frame.min() >= 0 and per_frame.max() < 1000
  assert len(np.unique(per_frame)) > 10  # 20 draws from 1000 values


def test_per_frame_timesteps_refuse_the_window_terms():
  config = tiny_config(timesteps="per_frame")
  config.loss.adversarial = 0.01
  model, diffusion, _ = model_and_state(tiny_config())
  from diff2lip_jax.models.discriminator import SequenceDiscriminator
  with pytest.raises(ValueError, match="per_frame"):
    step_lib.make_train_step(model, diffusion, config,
                             discriminator=SequenceDiscriminator(nframes=5))
