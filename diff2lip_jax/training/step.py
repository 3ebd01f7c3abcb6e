"""One Diff2Lip training step: ``train_step(state, batch, frozen) -> (state, metrics)``.

Pure and jittable. ``batch`` is the input pipeline's dict (``image``, ``ref_img``
``[B,F,S,S,3]``, ``indiv_mels [B,F,80,16]``, ``mel [B,80,16]``); ``frozen`` holds the
variables of networks that are not trained here (``syncnet``, ``lpips``; None when off).
A non-finite loss or gradient leaves params, optimizer state and EMA unchanged and is
counted in the state.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from diff2lip_jax.diffusion import GaussianDiffusion
from diff2lip_jax.diffusion.sampling import lower_half_mask, masked_condition
from diff2lip_jax.training import objective
from diff2lip_jax.training.state import (TrainState, learning_rate_schedule, make_disc_optimizer,
                                         make_optimizer, update_ema)


def _select(keep_new: jax.Array, new: Any, old: Any) -> Any:
  return jax.tree_util.tree_map(lambda n, o: jnp.where(keep_new, n, o), new, old)


def _to_model_range(images: jax.Array) -> jax.Array:
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 127.5 - 1.0
  return images.astype(jnp.float32)


def flatten_batch(batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Window batch -> per-frame model inputs: ``x0, ref [B*F,S,S,3]``, ``mels [B*F,80,16]``."""
  image = _to_model_range(batch["image"])
  b, f = image.shape[:2]
  return {"x0": image.reshape((b * f,) + image.shape[2:]),
          "ref": _to_model_range(batch["ref_img"]).reshape((b * f,) + image.shape[2:]),
          "mels": batch["indiv_mels"].reshape((b * f,) + batch["indiv_mels"].shape[2:]),
          "sync_mel": batch["mel"], "windows": b, "nframes": f}


def training_timesteps(diffusion: GaussianDiffusion, key: jax.Array, windows: int,
                       nframes: int, per_frame: bool) -> jax.Array:
  """``[windows * nframes]`` int timesteps, uniform over the diffusion's steps.

  By default one timestep per window: the frames of a window are judged together by the
  sync expert and the discriminator, so they should be equally noisy. ``per_frame`` draws
  one per frame (lower-variance gradients when neither term is on).
  """
  if per_frame:
    return diffusion.sample_timesteps(key, windows * nframes)
  return jnp.repeat(diffusion.sample_timesteps(key, windows), nframes)


def make_train_step(model: nn.Module, diffusion: GaussianDiffusion,
                    config: ml_collections.ConfigDict, *,
                    syncnet_apply: Callable[..., Any] | None = None,
                    lpips_apply: Callable[..., Any] | None = None,
                    discriminator: nn.Module | None = None):
  """Builds the pure step for ``model`` under ``config.loss`` weights.

  The sync, LPIPS and adversarial terms are computed only when their weight is non-zero
  and their network is given (the trainer turns a weight off, with a warning, when the
  network's weights are not available).
  """
  weights = config.loss
  tx = make_optimizer(config)
  disc_tx = make_disc_optimizer(config)
  lr_schedule = learning_rate_schedule(config)
  hide = float(config.model.get("face_hide_percentage", 0.5))
  use_sync = bool(weights.sync) and syncnet_apply is not None
  use_lpips = bool(weights.lpips) and lpips_apply is not None
  use_adv = bool(weights.adversarial) and discriminator is not None
  if use_adv:
    from diff2lip_jax.models import discriminator as disc_lib
  timesteps = str(config.train.get("timesteps", "per_window"))
  if timesteps not in ("per_window", "per_frame"):
    raise ValueError(f"train.timesteps={timesteps!r}: use 'per_window' or 'per_frame'")
  if timesteps == "per_frame" and (use_sync or use_adv):
    raise ValueError("train.timesteps='per_frame' needs loss.sync and loss.adversarial off: "
                     "the expert and the discriminator judge a window's frames together")
  per_frame_timesteps = timesteps == "per_frame"

  def train_step(state: TrainState, batch: dict[str, jax.Array], frozen: dict[str, Any]
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    inputs = flatten_batch(batch)
    x0, nframes = inputs["x0"], inputs["nframes"]
    n, size = x0.shape[0], x0.shape[1]
    rng, k_t, k_noise, k_cond, k_drop = jax.random.split(state.rng, 5)
    t = training_timesteps(diffusion, k_t, inputs["windows"], nframes, per_frame_timesteps)
    noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
    mask = lower_half_mask(n, size, hide)
    x_t = diffusion.q_sample(x0, t, noise)
    # Fresh noise in cond_img: reusing `noise` would let the model read ε off its input.
    cond_img = masked_condition(x0, mask, jax.random.normal(k_cond, x0.shape, jnp.float32))

    def loss_fn(params):
      output = model.apply({"params": params}, x_t, diffusion.model_timesteps(t),
                           cond_img=cond_img, mask=mask, ref_img=inputs["ref"],
                           indiv_mels=inputs["mels"], train=True, rngs={"dropout": k_drop})
      terms = objective.diffusion_terms(diffusion, output, x0, x_t, t, noise, mask)
      pred_xstart = terms.pop("pred_xstart")
      shown = objective.composite(pred_xstart, x0, mask)
      terms["l1"] = objective.masked_l1(pred_xstart, x0, mask)
      if use_sync:
        terms["sync"] = objective.sync_loss(syncnet_apply, frozen["syncnet"], shown,
                                            inputs["sync_mel"], nframes)
      if use_lpips:
        terms["lpips"] = jnp.mean(lpips_apply(frozen["lpips"], shown, x0))
      if use_adv:
        fake = disc_lib.lower_half_sequence(shown, nframes)
        logits = discriminator.apply({"params": state.disc_params}, fake)
        terms["adversarial"] = disc_lib.generator_adversarial_loss(
            logits, config.discriminator.loss)
      return objective.weighted_total(terms, weights), (terms, shown)

    (loss, (terms, shown)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    params = _select(finite, new_params, state.params)
    opt_state = _select(finite, new_opt, state.opt_state)
    ema = _select(finite, update_ema(state.ema, params, config, state.step), state.ema)

    disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
    metrics = dict(terms)
    if use_adv:
      real_seq = disc_lib.lower_half_sequence(x0, nframes)
      fake_seq = jax.lax.stop_gradient(disc_lib.lower_half_sequence(shown, nframes))

      def disc_loss_fn(dp):
        real = discriminator.apply({"params": dp}, real_seq)
        fake = discriminator.apply({"params": dp}, fake_seq)
        return disc_lib.discriminator_loss(real, fake, config.discriminator.loss)

      disc_loss, disc_grads = jax.value_and_grad(disc_loss_fn)(disc_params)
      disc_ok = finite & jnp.isfinite(disc_loss) & jnp.isfinite(optax.global_norm(disc_grads))
      disc_updates, new_disc_opt = disc_tx.update(disc_grads, disc_opt_state, disc_params)
      disc_params = _select(disc_ok, optax.apply_updates(disc_params, disc_updates), disc_params)
      disc_opt_state = _select(disc_ok, new_disc_opt, disc_opt_state)
      metrics["disc_loss"] = disc_loss

    streak = jnp.where(finite, 0, state.nonfinite_streak + 1)
    new_state = state.replace(
        step=state.step + 1, params=params, opt_state=opt_state, ema=ema, rng=rng,
        disc_params=disc_params, disc_opt_state=disc_opt_state,
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        nonfinite_streak=streak)
    metrics.update(loss=loss, grad_norm=grad_norm, lr=lr_schedule(state.step),
                   finite=finite.astype(jnp.float32), nonfinite_steps=new_state.nonfinite_steps,
                   nonfinite_streak=streak)
    return new_state, metrics

  return train_step
