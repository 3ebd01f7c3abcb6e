"""Training objectives: variational-bound terms (with Diff2Lip's mouth mask), hybrid loss.

Mixed into `GaussianDiffusion`; every method also works as a plain function taking the
diffusion first. Images are NHWC `[N, H, W, C]`, `t` is `[N]` int (respaced index),
`mask` is `[N, H, W, 1]` (1 on the region to generate) or anything broadcasting to x.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.diffusion.enums import LossType, ModelMeanType
from diff2lip_jax.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl

_LOG2 = float(np.log(2.0))


class ObjectivesMixin:
  """Loss pieces of guided-diffusion `training_losses` / `_vb_terms_bpd`, on raw outputs."""

  def sample_timesteps(self, rng: jax.Array, batch: int) -> jnp.ndarray:
    """Uniform respaced timesteps `[batch]` int32 (reference `UniformSampler`, weights 1)."""
    return jax.random.randint(rng, (batch,), 0, self.num_timesteps, dtype=jnp.int32)

  def vb_terms_bpd(self, model_output: jnp.ndarray, x_start: jnp.ndarray, x_t: jnp.ndarray,
                   t: jnp.ndarray, mask: Optional[jnp.ndarray] = None,
                   clip_denoised: bool = False):
    """One term of the variational bound, in bits.

    KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0 and the discretised decoder NLL
    at t == 0. With `mask` (Diff2Lip) both per-pixel terms are multiplied by the mask
    before the mean over all non-batch axes, so the mean still divides by H*W*C.

    Args:
      model_output: raw output `[N, H, W, 2C]` (or C).
      x_start, x_t: `[N, H, W, C]`.
      t: `[N]` int.
    Returns:
      `(output [N], pred_xstart [N, H, W, C])`.
    """
    true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
    out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised)
    kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
    decoder_nll = -discretized_gaussian_log_likelihood(
        x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
    if mask is not None:
      kl = kl * mask
      decoder_nll = decoder_nll * mask
    kl = mean_flat(kl) / _LOG2
    decoder_nll = mean_flat(decoder_nll) / _LOG2
    return jnp.where(jnp.asarray(t) == 0, decoder_nll, kl), out["pred_xstart"]

  def hybrid_vb_term(self, model_output: jnp.ndarray, x_start: jnp.ndarray,
                     x_t: jnp.ndarray, t: jnp.ndarray,
                     mask: Optional[jnp.ndarray] = None) -> jnp.ndarray:
    """The `vb` term of the hybrid loss, `[N]` bits: trains only the variance channels.

    The mean prediction enters through `stop_gradient` so the VB term cannot pull it
    (Nichol & Dhariwal's L_hybrid); scaled by num_timesteps/1000 for RESCALED_MSE.
    Requires a learned variance (`model_output` `[N, H, W, 2C]`).
    """
    if not self.model_var_type.is_learned:
      raise ValueError(
          f"hybrid_vb_term needs a learned variance, this diffusion has "
          f"{self.model_var_type.name} (set learn_sigma=True)")
    prediction, var_values = self.split_model_output(model_output, x_t)
    frozen_out = jnp.concatenate([jax.lax.stop_gradient(prediction), var_values], axis=-1)
    vb, _ = self.vb_terms_bpd(frozen_out, x_start, x_t, t, mask=mask, clip_denoised=False)
    if self.loss_type == LossType.RESCALED_MSE:
      # Without the 1/1000 the VB term dominates the MSE term.
      vb = vb * (self.num_timesteps / 1000.0)
    return vb

  def mse_target(self, x_start: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray,
                 noise: jnp.ndarray) -> jnp.ndarray:
    """What the mean channels regress to: eps, x_0 or the posterior mean; `[N, H, W, C]`."""
    if self.model_mean_type == ModelMeanType.EPSILON:
      return noise
    if self.model_mean_type == ModelMeanType.START_X:
      return x_start
    return self.q_posterior_mean_variance(x_start, x_t, t)[0]

  def training_losses(self, model_output: jnp.ndarray, x_start: jnp.ndarray,
                      x_t: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray,
                      mask: Optional[jnp.ndarray] = None) -> dict[str, jnp.ndarray]:
    """Per-example loss terms of guided-diffusion `training_losses`, each `[N]`.

    `x_t` must be `q_sample(x_start, t, noise)` and `model_output` the model's output on
    it. KL losses: {"loss"} (= masked VB term, times num_timesteps for RESCALED_KL).
    MSE losses: {"mse", "loss"} plus "vb" (`hybrid_vb_term`) with a learned variance;
    the MSE is over the whole image, `mask` only enters the VB term.
    """
    if self.loss_type.is_vb():
      loss, _ = self.vb_terms_bpd(model_output, x_start, x_t, t, mask=mask,
                                  clip_denoised=False)
      if self.loss_type == LossType.RESCALED_KL:
        loss = loss * self.num_timesteps
      return {"loss": loss}
    prediction, _ = self.split_model_output(model_output, x_t)
    terms = {"mse": mean_flat((self.mse_target(x_start, x_t, t, noise) - prediction) ** 2)}
    terms["loss"] = terms["mse"]
    if self.model_var_type.is_learned:
      terms["vb"] = self.hybrid_vb_term(model_output, x_start, x_t, t, mask=mask)
      terms["loss"] = terms["mse"] + terms["vb"]
    return terms

  def prior_bpd(self, x_start: jnp.ndarray) -> jnp.ndarray:
    """KL(q(x_T|x_0) || N(0, I)) in bits, `[N]`; constant w.r.t. the model."""
    t = jnp.full((x_start.shape[0],), self.num_timesteps - 1, dtype=jnp.int32)
    mean, _, log_variance = self.q_mean_variance(x_start, t)
    return mean_flat(normal_kl(mean, log_variance, 0.0, 0.0)) / _LOG2
