"""Likelihood helpers of the variational bound (Ho et al. / guided-diffusion), in jnp.

All functions broadcast their arguments elementwise; images are NHWC but nothing here
depends on the layout.
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp

# Half-width of one uint8 bin once pixels are rescaled to [-1, 1].
_HALF_BIN = 1.0 / 255.0
# Python floats (weakly typed) so float32 inputs stay float32 even with jax x64 on.
_SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))


def mean_flat(x: jnp.ndarray) -> jnp.ndarray:
  """Mean over every axis but the first: `[N, ...] -> [N]`."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> jnp.ndarray:
  """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats, elementwise (broadcast)."""
  mean1, logvar1, mean2, logvar2 = (jnp.asarray(a) for a in (mean1, logvar1, mean2, logvar2))
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + ((mean1 - mean2) ** 2) * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x: jnp.ndarray) -> jnp.ndarray:
  """The tanh approximation of the standard normal CDF used by the reference."""
  return 0.5 * (1.0 + jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * jnp.power(x, 3))))


def discretized_gaussian_log_likelihood(x: jnp.ndarray, *, means: jnp.ndarray,
                                        log_scales: jnp.ndarray) -> jnp.ndarray:
  """Log-probability (nats) of uint8-quantised targets under a Gaussian, elementwise.

  Args:
    x: targets in [-1, 1] that were uint8 values, any shape.
    means, log_scales: Gaussian mean and log standard deviation, same shape as `x`.
  Returns:
    log-probabilities, shape of `x`. The edge bins (x < -0.999, x > 0.999) take the
    whole tail, so the 256 bins sum to one.
  """
  if not x.shape == means.shape == log_scales.shape:
    raise ValueError(
        f"x, means and log_scales must share one shape, got {x.shape}, {means.shape}, "
        f"{log_scales.shape}")
  centered_x = x - means
  inv_stdv = jnp.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + _HALF_BIN))
  cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - _HALF_BIN))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_cdf_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  return jnp.where(x < -0.999, log_cdf_plus,
                   jnp.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))
