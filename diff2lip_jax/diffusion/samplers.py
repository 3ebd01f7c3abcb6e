"""Reverse steps (DDPM ancestral, DDIM) and full sampling loops.

Mixed into `GaussianDiffusion`; every method also works as a plain function taking the
diffusion first (`GaussianDiffusion.ddim_step(diffusion, ...)`). Images are NHWC.
A "model_fn" here is `model_fn(x_t [N,H,W,C], model_t [N]) -> raw output [N,H,W,2C|C]`
where `model_t = diffusion.model_timesteps(t)`; conditioning is closed over by the caller.
"""
from __future__ import annotations

import numbers
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from diff2lip_jax.diffusion.indexing import extract

ModelFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def _nonzero_mask(t: jnp.ndarray, ndim: int) -> jnp.ndarray:
  """1.0 where t != 0 (no noise is added on the last step), shaped `[N, 1, ..., 1]`."""
  return (jnp.asarray(t) != 0).astype(jnp.float32).reshape((-1,) + (1,) * (ndim - 1))


class SamplingMixin:
  """Samplers of guided-diffusion, taking raw model outputs."""

  def ddpm_step(self, model_output: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray,
                noise: jnp.ndarray, clip_denoised: bool = True, denoised_fn=None):
    """One ancestral step x_t -> x_{t-1} (reference `p_sample`).

    Args:
      model_output: raw output `[N, H, W, 2C]` (or C) at respaced index `t [N]`.
      x_t, noise: `[N, H, W, C]`; noise is standard normal (unused where t == 0).
    Returns:
      `(sample, pred_xstart)`, both `[N, H, W, C]`.
    """
    out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised,
                               denoised_fn=denoised_fn)
    if jnp.shape(noise) != x_t.shape:
      raise ValueError(f"noise has shape {jnp.shape(noise)}, expected {x_t.shape}")
    sample = (out["mean"] + _nonzero_mask(t, x_t.ndim)
              * jnp.exp(0.5 * out["log_variance"]) * noise)
    return sample, out["pred_xstart"]

  def ddim_step(self, model_output: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray,
                noise: Optional[jnp.ndarray] = None, eta: float = 0.0,
                clip_denoised: bool = True, denoised_fn=None):
    """One DDIM step x_t -> x_{t-1} (reference `ddim_sample`, Song et al. eq. 12).

    Args:
      model_output: raw output `[N, H, W, 2C]` (or C) at respaced index `t [N]`.
      x_t: `[N, H, W, C]`.
      noise: standard normal `[N, H, W, C]`; required unless `eta` is the number 0.
      eta: 0 is the deterministic DDIM path, 1 matches DDPM's variance.
    Returns:
      `(sample, pred_xstart)`, both `[N, H, W, C]`.
    """
    out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised,
                               denoised_fn=denoised_fn)
    pred_xstart = out["pred_xstart"]
    # Re-derived even for eps models, so x_0 clipping feeds back into the step.
    eps = self.predict_eps_from_xstart(x_t, t, pred_xstart)
    alpha_bar = extract(self.alphas_cumprod, t, x_t.ndim)
    alpha_bar_prev = extract(self.alphas_cumprod_prev, t, x_t.ndim)
    sigma = (eta * jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
             * jnp.sqrt(1 - alpha_bar / alpha_bar_prev))
    mean_pred = (pred_xstart * jnp.sqrt(alpha_bar_prev)
                 + jnp.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps)
    if noise is None:
      if isinstance(eta, numbers.Number) and eta == 0:
        return mean_pred, pred_xstart
      raise ValueError("ddim_step with eta != 0 needs `noise` (standard normal, x_t's shape)")
    if jnp.shape(noise) != x_t.shape:
      raise ValueError(f"noise has shape {jnp.shape(noise)}, expected {x_t.shape}")
    return mean_pred + _nonzero_mask(t, x_t.ndim) * sigma * noise, pred_xstart

  def ddim_reverse_step(self, model_output: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray,
                        clip_denoised: bool = True, denoised_fn=None):
    """Deterministic DDIM inversion x_t -> x_{t+1} (reference `ddim_reverse_sample`).

    Returns `(sample, pred_xstart)`, both `[N, H, W, C]`.
    """
    out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised,
                               denoised_fn=denoised_fn)
    eps = self.predict_eps_from_xstart(x_t, t, out["pred_xstart"])
    alpha_bar_next = extract(self.alphas_cumprod_next, t, x_t.ndim)
    sample = out["pred_xstart"] * jnp.sqrt(alpha_bar_next) + jnp.sqrt(1 - alpha_bar_next) * eps
    return sample, out["pred_xstart"]

  def ddim_sample_loop(self, model_fn: ModelFn, noise: jnp.ndarray, *, eta: float = 0.0,
                       rng: Optional[jax.Array] = None, clip_denoised: bool = True,
                       denoised_fn=None) -> jnp.ndarray:
    """Runs DDIM from x_T = `noise [N, H, W, C]` down to x_0 over all respaced steps.

    `rng` is required when `eta` is not the number 0 (fresh noise per step).
    Returns x_0 `[N, H, W, C]`.
    """
    stochastic = not (isinstance(eta, numbers.Number) and eta == 0)
    if stochastic and rng is None:
      raise ValueError("ddim_sample_loop with eta != 0 needs `rng`")

    def step(x, index, step_noise):
      t = jnp.full((x.shape[0],), index, dtype=jnp.int32)
      output = model_fn(x, self.model_timesteps(t))
      sample, _ = self.ddim_step(output, x, t, noise=step_noise, eta=eta,
                                 clip_denoised=clip_denoised, denoised_fn=denoised_fn)
      return sample

    return self._reverse_loop(step, noise, rng if stochastic else None)

  def p_sample_loop(self, model_fn: ModelFn, noise: jnp.ndarray, rng: jax.Array, *,
                    clip_denoised: bool = True, denoised_fn=None) -> jnp.ndarray:
    """Runs ancestral (DDPM) sampling from x_T = `noise [N, H, W, C]`; returns x_0."""

    def step(x, index, step_noise):
      t = jnp.full((x.shape[0],), index, dtype=jnp.int32)
      output = model_fn(x, self.model_timesteps(t))
      sample, _ = self.ddpm_step(output, x, t, step_noise, clip_denoised=clip_denoised,
                                 denoised_fn=denoised_fn)
      return sample

    return self._reverse_loop(step, noise, rng)

  def _reverse_loop(self, step, x_T: jnp.ndarray, rng: Optional[jax.Array]) -> jnp.ndarray:
    """Applies `step(x, index, noise_or_None)` for index = T-1 .. 0 in a `fori_loop`."""
    last = self.num_timesteps - 1

    def body(i, x):
      index = last - i
      step_noise = None
      if rng is not None:
        step_noise = jax.random.normal(jax.random.fold_in(rng, index), x.shape, x.dtype)
      return step(x, index, step_noise)

    return jax.lax.fori_loop(0, self.num_timesteps, body, jnp.asarray(x_T, jnp.float32))
