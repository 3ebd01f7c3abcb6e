"""Sequence discriminator: shapes, GAN losses against hand-computed values, gradient isolation,
and a discriminator that learns to separate a toy real/fake set."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diff2lip_jax.models.discriminator import (
    SequenceDiscriminator, discriminator_loss_terms, discriminator_objective,
    generator_adversarial_loss, generator_objective, init_discriminator_params,
    lower_half_sequence)

SMALL = dict(base_features=8, num_downsamples=2, max_features=16)
RNG = np.random.default_rng(0)  # numpy data: eager jax.random ops compile slowly on CPU
REAL = np.array([2.0, -0.5], np.float32)
FAKE = np.array([0.3, -3.0], np.float32)


def _bce(logit, target):
  p = 1.0 / (1.0 + np.exp(-np.float64(logit)))
  return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def discriminator_loss(real_logits, fake_logits, kind):
  """The discriminator's objective on logits: real term + fake term."""
  real_term, fake_term = discriminator_loss_terms(real_logits, fake_logits, kind)
  return real_term + fake_term


def frames_like(*shape):
  return RNG.uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def params():
  """One parameter set for every test: the shapes do not depend on the frame size."""
  return init_discriminator_params(jax.random.PRNGKey(1), SequenceDiscriminator(**SMALL), 16, 32)


def test_output_shapes_and_dtypes(params):
  frames = frames_like(2, 5, 64, 128, 3)
  model = SequenceDiscriminator(**SMALL)
  logits = model.apply({"params": params}, frames)
  assert logits.shape == (2,) and logits.dtype == jnp.float32
  patches = SequenceDiscriminator(**SMALL, patch_logits=True).apply({"params": params}, frames)
  assert patches.shape == (2, 16, 32)
  np.testing.assert_allclose(patches.mean(axis=(1, 2)), logits, rtol=1e-5, atol=1e-6)
  assert params["stem"]["kernel"].shape == (3, 3, 15, 8)  # 5 frames x 3 colours stacked
  bf16 = SequenceDiscriminator(**SMALL, dtype=jnp.bfloat16).apply({"params": params}, frames)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, logits, atol=0.05)
  grouped = SequenceDiscriminator(**SMALL, num_groups=4)
  want = jax.eval_shape(grouped.init, jax.random.PRNGKey(0), frames)["params"]
  g_params = dict(params)
  for name in ("down0_norm", "conv0_norm", "down1_norm", "conv1_norm"):
    assert want[name]["scale"].shape == (16,)  # min(8 * 2**(i+1), 16)
    g_params[name] = {"scale": jnp.full(16, 2.0), "bias": jnp.zeros(16)}
  assert jax.tree_util.tree_structure(want) == jax.tree_util.tree_structure(g_params)
  g_logits = jax.jit(grouped.apply)({"params": g_params}, frames)
  assert g_logits.shape == (2,) and not np.allclose(g_logits, logits)


def test_frame_order_matters(params):
  """The window is judged as a sequence: shuffling its frames changes the logit."""
  frames = frames_like(1, 5, 32, 64, 3)
  model = SequenceDiscriminator(**SMALL)
  a = model.apply({"params": params}, frames)
  b = model.apply({"params": params}, frames[:, ::-1])
  assert abs(float(a[0] - b[0])) > 1e-6


def test_bad_inputs_rejected():
  model = SequenceDiscriminator(**SMALL)
  with pytest.raises(ValueError, match=r"\[B, 5, h, W, 3\]"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, 32, 64, 3)))
  with pytest.raises(ValueError, match="too small"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 5, 2, 64, 3)))
  with pytest.raises(ValueError, match="does not divide"):
    jax.eval_shape(SequenceDiscriminator(**SMALL, num_groups=3).init, jax.random.PRNGKey(0),
                   jnp.zeros((1, 5, 32, 64, 3)))


def test_lower_half_sequence():
  frames = np.arange(6 * 5 * 4 * 1, dtype=np.float32).reshape(6, 5, 4, 1)
  out = np.asarray(lower_half_sequence(jnp.asarray(frames), 3))
  assert out.shape == (2, 3, 3, 4, 1)  # odd height: rows 2..4, as Wav2Lip's x[:, :, H//2:]
  np.testing.assert_array_equal(out[1, 2], frames[5, 2:])
  np.testing.assert_array_equal(out[0, 1], frames[1, 2:])
  with pytest.raises(ValueError, match="nframes=4"):
    lower_half_sequence(jnp.asarray(frames), 4)
  with pytest.raises(ValueError, match=r"\[B\*F, H, W, C\]"):
    lower_half_sequence(jnp.zeros((5, 4, 4)), 5)


def test_hinge_losses_hand_computed():
  real_term, fake_term = discriminator_loss_terms(REAL, FAKE, "hinge")
  assert float(real_term) == pytest.approx((0.0 + 1.5) / 2)
  assert float(fake_term) == pytest.approx((1.3 + 0.0) / 2)
  assert float(discriminator_loss(REAL, FAKE, "hinge")) == pytest.approx(1.4)
  assert float(generator_adversarial_loss(FAKE, "hinge")) == pytest.approx(1.35)


def test_bce_losses_match_binary_cross_entropy_formula():
  want_d = (np.mean([_bce(r, 1) for r in REAL]) + np.mean([_bce(f, 0) for f in FAKE]))
  want_g = np.mean([_bce(f, 1) for f in FAKE])
  assert float(discriminator_loss(REAL, FAKE, "bce")) == pytest.approx(want_d, rel=1e-6)
  assert float(generator_adversarial_loss(FAKE, "bce")) == pytest.approx(want_g, rel=1e-6)
  # Stable where sigmoid saturates in float32 (a naive log(sigmoid) would give inf).
  big = jnp.array([200.0], jnp.float32)
  assert float(discriminator_loss(-big, big, "bce")) == pytest.approx(400.0)


def test_lsgan_losses_hand_computed():
  assert float(discriminator_loss(REAL, FAKE, "lsgan")) == pytest.approx(
      (1.0 + 2.25) / 2 + (0.09 + 9.0) / 2)
  assert float(generator_adversarial_loss(FAKE, "lsgan")) == pytest.approx((0.49 + 16.0) / 2)
  with pytest.raises(ValueError, match="kind must be one of"):
    discriminator_loss(REAL, FAKE, "wgan")


def test_losses_accept_patch_maps_and_bfloat16():
  real = jnp.asarray(REAL, jnp.bfloat16).reshape(2, 1, 1)
  fake = jnp.asarray(FAKE, jnp.bfloat16).reshape(2, 1, 1)
  loss = discriminator_loss(real, fake, "hinge")
  assert loss.dtype == jnp.float32 and loss.shape == ()
  assert float(loss) == pytest.approx(1.4, rel=1e-2)


@pytest.mark.parametrize("kind", ["hinge", "bce", "lsgan"])
def test_gradients_are_isolated(params, kind):
  model = SequenceDiscriminator(**SMALL)
  d_params = params
  g_params = jnp.asarray(2 * frames_like(2, 5, 16, 32, 3))
  real = frames_like(2, 5, 16, 32, 3)

  def d_step(d, g):
    return discriminator_objective(model, d, real, jnp.tanh(g), kind)[0]

  def g_step(d, g):
    return generator_objective(model, d, jnp.tanh(g), kind)

  grad_d, grad_g = jax.grad(d_step, argnums=(0, 1))(d_params, g_params)
  assert not np.any(np.asarray(grad_g))
  assert any(np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(grad_d))
  grad_d, grad_g = jax.grad(g_step, argnums=(0, 1))(d_params, g_params)
  assert all(not np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(grad_d))
  assert np.any(np.asarray(grad_g))


def test_adam_steps_separate_real_from_fake(params, kind="hinge"):
  """Real windows: a smooth moving edge; fake: the same with per-pixel noise."""
  ys = np.linspace(-1, 1, 16)[:, None]
  xs = np.linspace(-1, 1, 32)[None, :]
  t = np.arange(5)[:, None, None] * 0.1
  phase = RNG.uniform(0, 1, (8, 1, 1, 1))
  real = (np.tanh(3 * (ys + xs - t - phase))[..., None].repeat(3, -1) * 0.8).astype(np.float32)
  fake = np.clip(real + 0.3 * RNG.standard_normal(real.shape), -1, 1).astype(np.float32)
  model = SequenceDiscriminator(**SMALL)
  opt = optax.adam(2e-3)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    (loss, aux), grads = jax.value_and_grad(discriminator_objective, argnums=1, has_aux=True)(
        model, params, real, fake, kind)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, loss, aux

  losses = []
  for _ in range(30):
    params, state, loss, aux = step(params, state)
    losses.append(float(loss))
  print("hinge D loss:", losses[0], "->", losses[-1])
  assert losses[-1] < 0.5 * losses[0], losses
  assert float(aux["logits_real"]) > float(aux["logits_fake"])
