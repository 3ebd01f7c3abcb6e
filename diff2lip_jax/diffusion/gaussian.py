"""The Gaussian diffusion process (guided-diffusion `GaussianDiffusion` + `SpacedDiffusion`).

`GaussianDiffusion` is a frozen dataclass registered as a JAX pytree: its float64 numpy
tables are leaves (so it can be passed into jitted functions) and its enums and step
counts are static. Methods take the model's raw output instead of the model, so the
caller applies the network (feeding it `model_timesteps(t)`) and this module does the
math. Tables are read at `t` and cast to float32 like the reference's
`_extract_into_tensor(...).float()`; all array math is float32.

Layout: images are NHWC `[N, H, W, C]`; `t` is `[N]` int (respaced index).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.diffusion.enums import LossType, ModelMeanType, ModelVarType
from diff2lip_jax.diffusion.indexing import check_batch as _check_batch
from diff2lip_jax.diffusion.indexing import check_same_shape as _check_same_shape
from diff2lip_jax.diffusion.indexing import extract as _extract
from diff2lip_jax.diffusion.objectives import ObjectivesMixin
from diff2lip_jax.diffusion.samplers import SamplingMixin
from diff2lip_jax.diffusion.solvers import SolverMixin

_STATIC = {"static": True}

# Float64 per-timestep tables, computed once on the host (see `from_betas`).
TABLE_NAMES = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next",
    "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "log_betas", "fixed_large_variance",
    "fixed_large_log_variance", "recip_posterior_mean_coef1",
    "posterior_mean_coef2_over_coef1",
)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class GaussianDiffusion(SamplingMixin, SolverMixin, ObjectivesMixin):
  """A (possibly respaced) diffusion process; build with `from_betas` or `create_diffusion`.

  Table attributes are `[num_timesteps]` float64 numpy arrays outside `jit` (tracers
  inside). `timestep_map[k]` is the original timestep of respaced step k.
  """
  betas: np.ndarray
  alphas_cumprod: np.ndarray
  alphas_cumprod_prev: np.ndarray
  alphas_cumprod_next: np.ndarray
  sqrt_alphas_cumprod: np.ndarray
  sqrt_one_minus_alphas_cumprod: np.ndarray
  one_minus_alphas_cumprod: np.ndarray
  log_one_minus_alphas_cumprod: np.ndarray
  sqrt_recip_alphas_cumprod: np.ndarray
  sqrt_recipm1_alphas_cumprod: np.ndarray
  posterior_variance: np.ndarray
  posterior_log_variance_clipped: np.ndarray
  posterior_mean_coef1: np.ndarray
  posterior_mean_coef2: np.ndarray
  log_betas: np.ndarray
  fixed_large_variance: np.ndarray
  fixed_large_log_variance: np.ndarray
  recip_posterior_mean_coef1: np.ndarray
  posterior_mean_coef2_over_coef1: np.ndarray
  timestep_map: np.ndarray
  model_mean_type: ModelMeanType = dataclasses.field(metadata=_STATIC)
  model_var_type: ModelVarType = dataclasses.field(metadata=_STATIC)
  loss_type: LossType = dataclasses.field(metadata=_STATIC)
  rescale_timesteps: bool = dataclasses.field(metadata=_STATIC)
  num_timesteps: int = dataclasses.field(metadata=_STATIC)
  original_num_steps: int = dataclasses.field(metadata=_STATIC)

  @classmethod
  def from_betas(cls, betas, *, model_mean_type: ModelMeanType,
                 model_var_type: ModelVarType, loss_type: LossType,
                 rescale_timesteps: bool = False, timestep_map=None,
                 original_num_steps: Optional[int] = None) -> "GaussianDiffusion":
    """Builds every table from betas `[T]` (float64, same formulas as the reference).

    `timestep_map` defaults to `arange(T)` and `original_num_steps` to `T` (no respacing).
    """
    betas = np.array(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0:
      raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not ((betas > 0).all() and (betas <= 1).all()):
      raise ValueError("betas must lie in (0, 1]")
    num_timesteps = int(betas.shape[0])
    timestep_map = (np.arange(num_timesteps, dtype=np.int64) if timestep_map is None
                    else np.asarray(timestep_map, dtype=np.int64))
    if timestep_map.shape != (num_timesteps,):
      raise ValueError(
          f"timestep_map must have shape ({num_timesteps},), got {timestep_map.shape}")
    if original_num_steps is None:
      original_num_steps = num_timesteps

    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    # Clipped because the posterior variance is 0 at t=0: reuse the t=1 value there.
    # With a single step there is no t=1; fall back to beta_0 as a finite stand-in.
    first_variance = posterior_variance[1] if num_timesteps > 1 else betas[0]
    posterior_log_variance_clipped = np.log(np.append(first_variance, posterior_variance[1:]))
    posterior_mean_coef1 = betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    posterior_mean_coef2 = (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod)
    # FIXED_LARGE uses beta_t, except at t=0 where the posterior variance of t=1 gives a
    # better decoder log-likelihood.
    fixed_large_variance = np.append(first_variance, betas[1:])
    tables = dict(
        betas=betas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        alphas_cumprod_next=np.append(alphas_cumprod[1:], 0.0),
        sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
        one_minus_alphas_cumprod=1.0 - alphas_cumprod,
        log_one_minus_alphas_cumprod=np.log(1.0 - alphas_cumprod),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=posterior_log_variance_clipped,
        posterior_mean_coef1=posterior_mean_coef1,
        posterior_mean_coef2=posterior_mean_coef2,
        log_betas=np.log(betas),
        fixed_large_variance=fixed_large_variance,
        fixed_large_log_variance=np.log(fixed_large_variance),
        recip_posterior_mean_coef1=1.0 / posterior_mean_coef1,
        posterior_mean_coef2_over_coef1=posterior_mean_coef2 / posterior_mean_coef1,
    )
    return cls(**tables, timestep_map=timestep_map,
               model_mean_type=ModelMeanType(model_mean_type),
               model_var_type=ModelVarType(model_var_type), loss_type=LossType(loss_type),
               rescale_timesteps=bool(rescale_timesteps), num_timesteps=num_timesteps,
               original_num_steps=int(original_num_steps))

  def __repr__(self) -> str:
    return (f"GaussianDiffusion(num_timesteps={self.num_timesteps} of "
            f"{self.original_num_steps}, mean={self.model_mean_type.name}, "
            f"var={self.model_var_type.name}, loss={self.loss_type.name}, "
            f"rescale_timesteps={self.rescale_timesteps})")

  # ---- timesteps ---------------------------------------------------------------------

  def model_timesteps(self, t: jnp.ndarray) -> jnp.ndarray:
    """Timesteps to feed the network for respaced indices `t [N]` (reference `_WrappedModel`).

    Returns `timestep_map[t]` (int), or, with `rescale_timesteps`, that value as float32
    scaled to the 0..1000 range of the original process.
    """
    mapped = jnp.asarray(self.timestep_map)[jnp.asarray(t)]
    if self.rescale_timesteps:
      return mapped.astype(jnp.float32) * (1000.0 / self.original_num_steps)
    return mapped

  # ---- forward process ---------------------------------------------------------------

  def q_mean_variance(self, x_start: jnp.ndarray, t: jnp.ndarray):
    """q(x_t | x_0): `(mean, variance, log_variance)`, each of `x_start`'s shape."""
    _check_batch(x_start, t)
    mean = _extract(self.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
    variance = _extract(self.one_minus_alphas_cumprod, t, x_start.ndim)
    log_variance = _extract(self.log_one_minus_alphas_cumprod, t, x_start.ndim)
    return (mean, jnp.broadcast_to(variance, x_start.shape),
            jnp.broadcast_to(log_variance, x_start.shape))

  def q_sample(self, x_start: jnp.ndarray, t: jnp.ndarray, noise: jnp.ndarray) -> jnp.ndarray:
    """Sample x_t ~ q(x_t | x_0) with the given standard-normal `noise` (shape of `x_start`)."""
    _check_batch(x_start, t)
    _check_same_shape(x_start, noise=noise)
    return (_extract(self.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
            + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.ndim) * noise)

  def q_posterior_mean_variance(self, x_start: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray):
    """q(x_{t-1} | x_t, x_0): `(mean, variance, log_variance_clipped)`, each of `x_t`'s shape."""
    _check_batch(x_t, t)
    _check_same_shape(x_t, x_start=x_start)
    mean = (_extract(self.posterior_mean_coef1, t, x_t.ndim) * x_start
            + _extract(self.posterior_mean_coef2, t, x_t.ndim) * x_t)
    variance = _extract(self.posterior_variance, t, x_t.ndim)
    log_variance = _extract(self.posterior_log_variance_clipped, t, x_t.ndim)
    return (mean, jnp.broadcast_to(variance, x_t.shape),
            jnp.broadcast_to(log_variance, x_t.shape))

  # ---- x_0 / eps conversions ---------------------------------------------------------

  def predict_xstart_from_eps(self, x_t: jnp.ndarray, t: jnp.ndarray, eps: jnp.ndarray):
    """x_0 implied by x_t and its noise `eps` (all `[N, H, W, C]`)."""
    _check_same_shape(x_t, eps=eps)
    return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
            - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps)

  def predict_eps_from_xstart(self, x_t: jnp.ndarray, t: jnp.ndarray, pred_xstart: jnp.ndarray):
    """Noise implied by x_t and a prediction of x_0 (all `[N, H, W, C]`)."""
    _check_same_shape(x_t, pred_xstart=pred_xstart)
    return ((_extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - pred_xstart)
            / _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim))

  def predict_xstart_from_xprev(self, x_t: jnp.ndarray, t: jnp.ndarray, xprev: jnp.ndarray):
    """x_0 implied by x_t and the posterior mean x_{t-1} (all `[N, H, W, C]`)."""
    _check_same_shape(x_t, xprev=xprev)
    return (_extract(self.recip_posterior_mean_coef1, t, x_t.ndim) * xprev
            - _extract(self.posterior_mean_coef2_over_coef1, t, x_t.ndim) * x_t)

  # ---- reverse process ---------------------------------------------------------------

  def split_model_output(self, model_output: jnp.ndarray, x_t: jnp.ndarray):
    """`(mean_part [N,H,W,C], var_values [N,H,W,C] or None)` from the raw model output.

    With a learned variance the output has 2C channels (prediction, then variance
    values); otherwise exactly C.
    """
    channels = x_t.shape[-1]
    expected = 2 * channels if self.model_var_type.is_learned else channels
    if model_output.shape != x_t.shape[:-1] + (expected,):
      raise ValueError(
          f"model output has shape {model_output.shape}, expected "
          f"{x_t.shape[:-1] + (expected,)} for x_t {x_t.shape} with "
          f"{self.model_var_type.name} variance (NHWC layout)")
    if self.model_var_type.is_learned:
      return model_output[..., :channels], model_output[..., channels:]
    return model_output, None

  def p_mean_variance(self, model_output: jnp.ndarray, x_t: jnp.ndarray, t: jnp.ndarray,
                      clip_denoised: bool = True,
                      denoised_fn: Optional[Callable[[jnp.ndarray], jnp.ndarray]] = None
                      ) -> dict[str, jnp.ndarray]:
    """p(x_{t-1} | x_t) from the raw model output at respaced index `t`.

    Args:
      model_output: `[N, H, W, 2C]` (learned variance) or `[N, H, W, C]`.
      x_t: `[N, H, W, C]`.
      t: `[N]` int, respaced indices.
      clip_denoised: clip the x_0 prediction to [-1, 1].
      denoised_fn: applied to the x_0 prediction before clipping.
    Returns:
      dict of `[N, H, W, C]` arrays: mean, variance, log_variance, pred_xstart.
    """
    _check_batch(x_t, t)
    prediction, var_values = self.split_model_output(model_output, x_t)
    ndim = x_t.ndim
    if self.model_var_type == ModelVarType.LEARNED:
      log_variance = var_values
      variance = jnp.exp(log_variance)
    elif self.model_var_type == ModelVarType.LEARNED_RANGE:
      min_log = _extract(self.posterior_log_variance_clipped, t, ndim)
      max_log = _extract(self.log_betas, t, ndim)
      frac = (var_values + 1) / 2  # v in [-1, 1] spans [min_var, max_var]
      log_variance = frac * max_log + (1 - frac) * min_log
      variance = jnp.exp(log_variance)
    elif self.model_var_type == ModelVarType.FIXED_LARGE:
      variance = jnp.broadcast_to(_extract(self.fixed_large_variance, t, ndim), x_t.shape)
      log_variance = jnp.broadcast_to(
          _extract(self.fixed_large_log_variance, t, ndim), x_t.shape)
    else:
      variance = jnp.broadcast_to(_extract(self.posterior_variance, t, ndim), x_t.shape)
      log_variance = jnp.broadcast_to(
          _extract(self.posterior_log_variance_clipped, t, ndim), x_t.shape)

    def process_xstart(x):
      if denoised_fn is not None:
        x = denoised_fn(x)
      return jnp.clip(x, -1, 1) if clip_denoised else x

    if self.model_mean_type == ModelMeanType.PREVIOUS_X:
      pred_xstart = process_xstart(self.predict_xstart_from_xprev(x_t, t, prediction))
      mean = prediction
    else:
      if self.model_mean_type == ModelMeanType.START_X:
        pred_xstart = process_xstart(prediction)
      else:
        pred_xstart = process_xstart(self.predict_xstart_from_eps(x_t, t, prediction))
      mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x_t, t)
    return {"mean": mean, "variance": variance, "log_variance": log_variance,
            "pred_xstart": pred_xstart}

