"""One Diff2Lip training step: ``train_step(state, batch, frozen) -> (state, metrics)``.

Pure and jittable. ``batch`` is the input pipeline's dict (``image``, ``ref_img``
``[B,F,S,S,3]``, ``indiv_mels [B,F,80,16]``, ``mel [B,80,16]``); ``frozen`` holds the
variables of networks that are not trained here (``syncnet``, ``lpips``; None when off).
A non-finite loss or gradient leaves params, optimizer state and EMA unchanged and is
counted in the state.
"""
from __future__ import annotations

from typing import Any, Callable, TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from diff2lip_jax.diffusion import GaussianDiffusion
from diff2lip_jax.diffusion.sampling import lower_half_mask, masked_condition
from diff2lip_jax.models import discriminator as disc_lib
from diff2lip_jax.training import objective
from diff2lip_jax.training.state import (TrainState, learning_rate_schedule, make_disc_optimizer,
                                         make_optimizer, update_ema)

if TYPE_CHECKING:  # type hints only: the train step runs without ml_collections
  import ml_collections


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


def timestep_mode(config: ml_collections.ConfigDict, window_terms: bool) -> bool:
  """``train.timesteps`` as ``per_frame`` (True) or ``per_window``; ``window_terms``: the sync
  or adversarial term is on (they judge a window's frames together)."""
  timesteps = str(config.train.get("timesteps", "per_window"))
  if timesteps not in ("per_window", "per_frame"):
    raise ValueError(f"train.timesteps={timesteps!r}: use 'per_window' or 'per_frame'")
  if timesteps == "per_frame" and window_terms:
    raise ValueError("train.timesteps='per_frame' needs loss.sync and loss.adversarial off: "
                     "the expert and the discriminator judge a window's frames together")
  return timesteps == "per_frame"


def noisy_inputs(diffusion: GaussianDiffusion, rng: jax.Array, inputs: dict[str, Any],
                 hide: float, per_frame: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Draws the step's randomness: ``(next_rng, {t, noise, mask, x_t, cond_img, dropout_key})``.

  ``x_t [N,S,S,3]`` is ``x0`` noised to timestep ``t [N]``; ``cond_img`` is ``x0`` with the
  masked region replaced by fresh noise (reusing ``noise`` would let the model read ε off
  its input); ``mask [N,S,S,1]`` is 1 on the lower ``hide`` fraction of each crop.
  """
  x0 = inputs["x0"]
  n, size = x0.shape[0], x0.shape[1]
  rng, k_t, k_noise, k_cond, k_drop = jax.random.split(rng, 5)
  t = training_timesteps(diffusion, k_t, inputs["windows"], inputs["nframes"], per_frame)
  noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
  mask = lower_half_mask(n, size, hide)
  x_t = diffusion.q_sample(x0, t, noise)
  cond_img = masked_condition(x0, mask, jax.random.normal(k_cond, x0.shape, jnp.float32))
  return rng, {"t": t, "noise": noise, "mask": mask, "x_t": x_t, "cond_img": cond_img,
               "dropout_key": k_drop}


def make_loss_fn(model: nn.Module, diffusion: GaussianDiffusion,
                 config: ml_collections.ConfigDict, *,
                 syncnet_apply: Callable[..., Any] | None = None,
                 lpips_apply: Callable[..., Any] | None = None,
                 discriminator: nn.Module | None = None):
  """``loss_fn(params, disc_params, inputs, noisy, frozen) -> (loss, (terms, shown))``.

  The weighted sum of the terms of ``config.loss``; the sync, LPIPS and adversarial terms
  only for the networks given. The MSE and L1 terms count the pixels of ``loss.mouth_region``
  ``1 + loss.mouth_weight`` times (:func:`objective.mouth_weighted_mask`). ``shown [N,S,S,3]``
  is the composited x̂0 (generated inside the mask, ground truth outside), which those terms
  judge.
  """
  weights, kind = config.loss, config.discriminator.loss
  mouth_weight = float(weights.get("mouth_weight", 0.0))
  mouth_region = str(weights.get("mouth_region", "0.62,0.9,0.32,0.68"))

  def loss_fn(params, disc_params, inputs, noisy, frozen):
    x0, mask, nframes = inputs["x0"], noisy["mask"], inputs["nframes"]
    output = model.apply({"params": params}, noisy["x_t"], diffusion.model_timesteps(noisy["t"]),
                         cond_img=noisy["cond_img"], mask=mask, ref_img=inputs["ref"],
                         indiv_mels=inputs["mels"], train=True,
                         rngs={"dropout": noisy["dropout_key"]})
    loss_mask = objective.mouth_weighted_mask(mask, mouth_weight, mouth_region)
    terms = objective.diffusion_terms(diffusion, output, x0, noisy["x_t"], noisy["t"],
                                      noisy["noise"], mask, loss_mask=loss_mask)
    pred_xstart = terms.pop("pred_xstart")
    shown = objective.composite(pred_xstart, x0, mask)
    terms["l1"] = objective.masked_l1(pred_xstart, x0, loss_mask)
    if syncnet_apply is not None:
      terms["sync"] = objective.sync_loss(syncnet_apply, frozen["syncnet"], shown,
                                          inputs["sync_mel"], nframes)
    if lpips_apply is not None:
      terms["lpips"] = jnp.mean(lpips_apply(frozen["lpips"], shown, x0))
    if discriminator is not None:
      terms["adversarial"] = disc_lib.generator_objective(
          discriminator, disc_params, disc_lib.lower_half_sequence(shown, nframes), kind)
    return objective.weighted_total(terms, weights), (terms, shown)

  return loss_fn


def update_generator(state: TrainState, grads: Any, loss: jax.Array,
                     tx: optax.GradientTransformation, config: ml_collections.ConfigDict
                     ) -> tuple[jax.Array, jax.Array, dict[str, Any]]:
  """``(finite, grad_norm, {params, opt_state, ema})``: the optimizer and EMA update, or the
  old values when the loss or the gradient is not finite."""
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updates, new_opt = tx.update(grads, state.opt_state, state.params)
  new_params = optax.apply_updates(state.params, updates)
  params = _select(finite, new_params, state.params)
  opt_state = _select(finite, new_opt, state.opt_state)
  ema = _select(finite, update_ema(state.ema, params, config, state.step), state.ema)
  return finite, grad_norm, {"params": params, "opt_state": opt_state, "ema": ema}


def update_discriminator(discriminator: nn.Module, disc_tx: optax.GradientTransformation,
                         state: TrainState, x0: jax.Array, shown: jax.Array, nframes: int,
                         kind: str, finite: jax.Array
                         ) -> tuple[dict[str, Any], dict[str, jax.Array]]:
  """One discriminator step on real ``x0`` vs generated ``shown`` windows (``[N,S,S,3]``).

  Returns ``({disc_params, disc_opt_state}, metrics)``; skipped (old values) when the
  generator step or this one is not finite.
  """
  real = disc_lib.lower_half_sequence(x0, nframes)
  fake = disc_lib.lower_half_sequence(shown, nframes)
  (disc_loss, aux), grads = jax.value_and_grad(disc_lib.discriminator_objective, argnums=1,
                                               has_aux=True)(
      discriminator, state.disc_params, real, fake, kind)
  ok = finite & jnp.isfinite(disc_loss) & jnp.isfinite(optax.global_norm(grads))
  updates, new_opt = disc_tx.update(grads, state.disc_opt_state, state.disc_params)
  params = _select(ok, optax.apply_updates(state.disc_params, updates), state.disc_params)
  opt_state = _select(ok, new_opt, state.disc_opt_state)
  return ({"disc_params": params, "disc_opt_state": opt_state},
          {"disc_loss": disc_loss, "disc_real": aux["d_real"], "disc_fake": aux["d_fake"]})


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
  tx, disc_tx = make_optimizer(config), make_disc_optimizer(config)
  lr_schedule = learning_rate_schedule(config)
  hide = float(config.model.get("face_hide_percentage", 0.5))
  syncnet_apply = syncnet_apply if weights.sync else None
  lpips_apply = lpips_apply if weights.lpips else None
  discriminator = discriminator if weights.adversarial else None
  per_frame = timestep_mode(config, syncnet_apply is not None or discriminator is not None)
  loss_fn = make_loss_fn(model, diffusion, config, syncnet_apply=syncnet_apply,
                         lpips_apply=lpips_apply, discriminator=discriminator)

  def train_step(state: TrainState, batch: dict[str, jax.Array], frozen: dict[str, Any]
                 ) -> tuple[TrainState, dict[str, jax.Array]]:
    inputs = flatten_batch(batch)
    rng, noisy = noisy_inputs(diffusion, state.rng, inputs, hide, per_frame)
    (loss, (terms, shown)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, state.disc_params, inputs, noisy, frozen)
    finite, grad_norm, updated = update_generator(state, grads, loss, tx, config)
    metrics = dict(terms)
    if discriminator is not None:
      disc_updated, disc_metrics = update_discriminator(
          discriminator, disc_tx, state, inputs["x0"], shown, inputs["nframes"],
          config.discriminator.loss, finite)
      updated.update(disc_updated)
      metrics.update(disc_metrics)
    streak = jnp.where(finite, 0, state.nonfinite_streak + 1)
    new_state = state.replace(
        step=state.step + 1, rng=rng, **updated,
        nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        nonfinite_streak=streak)
    metrics.update(loss=loss, grad_norm=grad_norm, lr=lr_schedule(state.step),
                   finite=finite.astype(jnp.float32), nonfinite_steps=new_state.nonfinite_steps,
                   nonfinite_streak=streak)
    return new_state, metrics

  return train_step
