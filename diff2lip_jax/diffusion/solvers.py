"""Multistep solvers of the probability-flow ODE: DPM-Solver++(2M) and UniPC-2 (B(h) = bh2).

Both work in data prediction (the model's x0 estimate, clipped like DDIM's) on the respaced
process and take exactly one model evaluation per respaced step, like DDIM. Notation for the
step from respaced index k to k-1 (k = K-1 .. 0; the "index" -1 is the clean image with
alpha = 1, sigma = 0):

  alpha_k = sqrt(alphas_cumprod[k]), sigma_k = sqrt(1 - alphas_cumprod[k]),
  lambda_k = log(alpha_k / sigma_k), h_k = lambda_{k-1} - lambda_k,
  x_{k-1} = ratio_k x_k + phi_k D_k,  ratio_k = sigma_{k-1} / sigma_k,
  phi_k = alpha_{k-1} (1 - e^{-h_k}),

where D_k is a combination of x0 estimates m_k = x0(x_k, k). With D_k = m_k this is exactly
DDIM (eta 0). DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) uses the previous estimate:
D_k = (1 + c_k) m_k - c_k m_{k+1}, c_k = h_k / (2 h_{k+1}) (= 1/(2 r_k) of the paper). It is
first order on the first step (no previous estimate: the paper's warm start) and on the last
step k = 0, whose target sigma_{-1} = 0 gives h_0 = inf (then ratio_0 = 0, phi_0 = 1 and
x_{-1} = m_0, the same final denoising step as DDIM). With `lower_order_final` (default) the
last ODE step k = 1, into index 0 (timestep 0, sigma ~ 0.01, all but clean), is first order
too, as in DPM-Solver's and diffusers' few-step practice: with the even-in-t respacings that
step spans about a third of the whole lambda range (h_1 / h_2 ~ 4); extrapolating the x0
estimate over it put a briefly trained synthetic model's 2M output up to 2.8x further from
the DDIM-250 result than DDIM's own (ddim10, ddim25). Both first-order steps keep the
global order 2 (their local errors are O(h^2)).

UniPC (Zhao et al. 2023) adds its corrector UniC: after m_{k-1} is evaluated at the
predicted x_{k-1}, the step k is redone with that estimate as well,
x^c_{k-1} = ratio_k x_k + phi_k ((1 - w1_k - wt_k) m_k + w1_k m_{k+1} + wt_k m_{k-1}),
and the next step starts from x^c_{k-1} (the model is not evaluated again; m_{k-1} stays the
estimate at the predicted point). Its predictor with bh2 is DPM-Solver++(2M). The corrector
has the order of the step's predictor (UniC-1 after the first step, UniC-2 after the
others); the final step has nothing to correct with.
"""
from __future__ import annotations

import numbers
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

ModelFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]

# Names accepted by `GaussianDiffusion.sample_loop` (and `diffusion.sampling.sample`).
SAMPLERS = ("ddim", "ddpm", "dpmpp_2m", "unipc")
ODE_SOLVERS = ("dpmpp_2m", "unipc")


def multistep_coefficients(diffusion, order: int = 2, lower_order_final: bool = True) -> dict:
  """Per-step scalars of the multistep solvers, each `[K]` indexed by respaced step k.

  Returns dict with `ratio`, `phi` (the first-order update), `c` (the second-order
  extrapolation weight of DPM-Solver++(2M), 0 where the step is first order) and `w1`, `wt`
  (UniC weights of m_{k+1} and m_{k-1} when correcting step k). `order` 1 makes every step
  first order (DDIM); `lower_order_final` also makes step 1 (the last ODE step, into index 0)
  first order. Computed in float64 numpy when the diffusion's tables are concrete, in
  float32 jnp when they are tracers (the diffusion passed into `jit`).
  """
  if order not in (1, 2):
    raise ValueError(f"multistep solver order must be 1 or 2, got {order!r}")
  xp = np if isinstance(diffusion.sqrt_alphas_cumprod, np.ndarray) else jnp
  alpha = xp.asarray(diffusion.sqrt_alphas_cumprod)
  sigma = xp.asarray(diffusion.sqrt_one_minus_alphas_cumprod)
  steps = alpha.shape[0]
  alpha_to = xp.concatenate([xp.ones((1,), alpha.dtype), alpha[:-1]])
  sigma_to = xp.concatenate([xp.zeros((1,), sigma.dtype), sigma[:-1]])
  ratio = sigma_to / sigma
  # alpha_{k-1} e^{-h_k} = sigma_{k-1} alpha_k / sigma_k, so no log is needed here; phi_0 = 1.
  phi = alpha_to - sigma_to * alpha / sigma
  lam = xp.log(alpha) - xp.log(sigma)
  # h[k] = h_k for k >= 1; h[0] (infinite) and h_prev[K-1] (no earlier step) are placeholders
  # that only feed entries masked out below.
  h = xp.concatenate([xp.ones((1,), lam.dtype), lam[:-1] - lam[1:]])
  h_prev = xp.concatenate([h[1:], xp.ones((1,), lam.dtype)])
  k = xp.arange(steps)
  second = (k >= (2 if lower_order_final else 1)) & (k <= steps - 2) & (order == 2)
  c = xp.where(second, h / (2 * h_prev), 0.0)
  # UniC-2 (bh2, data prediction): solve [[1, 1], [r1, 1]] rho = [b1, b2] with
  # r1 = -h_{k+1}/h_k, b_i from the phi-functions of -h_k.
  hh = -h
  b_h = xp.expm1(hh)
  phi_k1 = b_h / hh - 1
  b1 = phi_k1 / b_h
  b2 = 2 * (phi_k1 / hh - 0.5) / b_h
  r1 = -h_prev / h
  rho0 = (b1 - b2) / (1 - r1)
  # A first-order step (the first one, or all with order 1) gets UniC-1: wt = 1/2.
  wt = xp.where(second, b1 - rho0, xp.where(k >= 1, 0.5, 0.0))
  w1 = xp.where(second, rho0 / r1, 0.0)
  return dict(ratio=ratio, phi=phi, c=c, w1=w1, wt=wt)


class SolverMixin:
  """Multistep ODE samplers and the sampler dispatch; mixed into `GaussianDiffusion`."""

  def denoise(self, model_fn: ModelFn, x_t: jnp.ndarray, index, clip_denoised: bool = True,
              denoised_fn=None) -> jnp.ndarray:
    """The model's x0 estimate `[N, H, W, C]` at respaced step `index` (as DDIM computes it).

    Feeds the network `model_timesteps(index)`; the learned-variance channels are ignored.
    """
    t = jnp.full((x_t.shape[0],), index, dtype=jnp.int32)
    output = model_fn(x_t, self.model_timesteps(t))
    return self.p_mean_variance(output, x_t, t, clip_denoised=clip_denoised,
                                denoised_fn=denoised_fn)["pred_xstart"]

  def multistep_sample_loop(self, model_fn: ModelFn, noise: jnp.ndarray, *,
                            corrector: bool = False, order: int = 2,
                            lower_order_final: bool = True, clip_denoised: bool = True,
                            denoised_fn=None) -> jnp.ndarray:
    """Runs DPM-Solver++(2M) (`corrector=False`) or UniPC-2 (`corrector=True`) from x_T.

    One model evaluation per respaced step, all in one `lax.fori_loop`.
    Args:
      noise: x_T `[N, H, W, C]`, taken as the sample at the last respaced step.
      order: 2, or 1 for the first-order solver (DDIM's update).
      lower_order_final: first-order last ODE step (see `multistep_coefficients`).
    Returns:
      x_0 `[N, H, W, C]` float32.
    """
    coef = {name: jnp.asarray(v, jnp.float32)
            for name, v in multistep_coefficients(self, order, lower_order_final).items()}
    last = self.num_timesteps - 1
    x_T = jnp.asarray(noise, jnp.float32)

    def body(i, carry):
      x, x_before, m_before, m_older = carry
      index = last - i
      m = self.denoise(model_fn, x, index, clip_denoised, denoised_fn)
      if corrector:
        # Redo step index+1 (from x_before) with the new estimate m as well.
        up = jnp.minimum(index + 1, last)
        corrected = coef["ratio"][up] * x_before + coef["phi"][up] * (
            (1 - coef["w1"][up] - coef["wt"][up]) * m_before + coef["w1"][up] * m_older
            + coef["wt"][up] * m)
        x = jnp.where(i > 0, corrected, x)
      c = coef["c"][index]
      x_next = coef["ratio"][index] * x + coef["phi"][index] * ((1 + c) * m - c * m_before)
      return x_next, x, m, m_before

    zeros = jnp.zeros_like(x_T)
    return jax.lax.fori_loop(0, self.num_timesteps, body, (x_T, x_T, zeros, zeros))[0]

  def sample_loop(self, sampler: str, model_fn: ModelFn, noise: jnp.ndarray, *,
                  rng: Optional[jax.Array] = None, eta: float = 0.0,
                  clip_denoised: bool = True, denoised_fn=None) -> jnp.ndarray:
    """Runs the named sampler (one of `SAMPLERS`) from x_T = `noise [N, H, W, C]` to x_0.

    "ddim" (eta as given), "ddpm" (ancestral; needs `rng`), "dpmpp_2m", "unipc"
    (deterministic ODE solvers; eta must be 0). Each takes one model evaluation per
    respaced step.
    """
    if sampler == "ddim":
      return self.ddim_sample_loop(model_fn, noise, eta=eta, rng=rng,
                                   clip_denoised=clip_denoised, denoised_fn=denoised_fn)
    if sampler == "ddpm":
      if rng is None:
        raise ValueError("DDPM sampling needs an rng key")
      return self.p_sample_loop(model_fn, noise, rng, clip_denoised=clip_denoised,
                                denoised_fn=denoised_fn)
    if sampler in ODE_SOLVERS:
      if not (isinstance(eta, numbers.Number) and eta == 0):
        raise ValueError(f"sampler {sampler!r} is a deterministic ODE solver; eta must be 0, "
                         f"got {eta!r} (use sampler 'ddim' for eta > 0)")
      return self.multistep_sample_loop(model_fn, noise, corrector=sampler == "unipc",
                                        clip_denoised=clip_denoised, denoised_fn=denoised_fn)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
