"""The Diff2Lip generator objective, term by term (each weighted in ``config.loss``).

All terms act on the generated (masked) region only: the model never has to reproduce the
visible upper half, so counting it would dilute the gradients. Images are NHWC in [-1, 1];
``mask`` is ``[N, H, W, 1]`` with 1 where the model generates; frames come in windows of
``F`` consecutive frames, flattened to ``N = B * F``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from diff2lip_jax.diffusion import GaussianDiffusion


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of ``values [N,H,W,C]`` over the pixels where ``mask [N,H,W,1]`` is 1 (all channels)."""
  mask = jnp.broadcast_to(mask, values.shape).astype(jnp.float32)
  return jnp.sum(values.astype(jnp.float32) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_mse(prediction: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean squared error over the masked region (the ε-prediction loss of Diff2Lip)."""
  return masked_mean(jnp.square(prediction.astype(jnp.float32) - target), mask)


def masked_l1(prediction: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean absolute error over the masked region (pixel reconstruction on x̂0)."""
  return masked_mean(jnp.abs(prediction.astype(jnp.float32) - target), mask)


def parse_region(spec: str) -> tuple[float, float, float, float]:
  """``"top,bottom,left,right"`` fractions of the crop -> floats, checked to lie in [0, 1]."""
  try:
    top, bottom, left, right = (float(v) for v in str(spec).split(","))
  except ValueError:
    raise ValueError(f"loss.mouth_region={spec!r}: expected 'top,bottom,left,right' fractions "
                     "of the crop, e.g. '0.62,0.9,0.32,0.68'") from None
  if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
    raise ValueError(f"loss.mouth_region={spec!r}: need 0 <= top < bottom <= 1 and "
                     "0 <= left < right <= 1")
  return top, bottom, left, right


def mouth_weighted_mask(mask: jax.Array, weight: float, region: str) -> jax.Array:
  """``mask [N,S,S,1]`` scaled by ``1 + weight`` inside ``region`` (rows/cols as fractions).

  Passed as the mask of :func:`masked_mean`, it turns the masked mean into a weighted mean
  in which a pixel of the mouth region counts ``1 + weight`` times: in the aligned crops the
  mouth is a small part of the regenerated half but carries all of the audio's signal.
  ``weight`` 0 returns ``mask`` unchanged.
  """
  if not weight:
    return mask
  top, bottom, left, right = parse_region(region)
  size_h, size_w = mask.shape[1], mask.shape[2]
  rows = jnp.arange(size_h)
  cols = jnp.arange(size_w)
  in_rows = (rows >= int(top * size_h)) & (rows < int(bottom * size_h))
  in_cols = (cols >= int(left * size_w)) & (cols < int(right * size_w))
  region_map = (in_rows[:, None] & in_cols[None, :]).astype(jnp.float32)
  return mask * (1.0 + float(weight) * region_map[None, :, :, None])


def composite(generated: jax.Array, original: jax.Array, mask: jax.Array) -> jax.Array:
  """The frame as it will be shown: generated inside the mask, original outside."""
  return generated * mask + original * (1.0 - mask)


def to_windows(frames: jax.Array, nframes: int) -> jax.Array:
  """``[B*F, H, W, C] -> [B, F, H, W, C]``."""
  return frames.reshape((frames.shape[0] // nframes, nframes) + frames.shape[1:])


def diffusion_terms(diffusion: GaussianDiffusion, model_output: jax.Array, x_start: jax.Array,
                    x_t: jax.Array, t: jax.Array, noise: jax.Array, mask: jax.Array,
                    loss_mask: jax.Array | None = None) -> dict[str, jax.Array]:
  """The denoising terms: masked ε-MSE, masked VB (hybrid, stop-gradient mean), and x̂0.

  ``loss_mask``: the (possibly weighted, :func:`mouth_weighted_mask`) mask of the MSE term;
  default ``mask``. The VB term always uses the 0/1 ``mask``.
  Returns ``mse`` and ``vb`` (scalars) and ``pred_xstart [N,H,W,3]`` (the one-step estimate,
  clipped to [-1, 1], carrying gradients to the model's mean prediction).
  """
  channels = x_start.shape[-1]
  prediction = model_output[..., :channels].astype(jnp.float32)
  target = diffusion.mse_target(x_start, x_t, t, noise)
  terms = {"mse": masked_mse(prediction, target, mask if loss_mask is None else loss_mask)}
  if model_output.shape[-1] == 2 * channels:
    terms["vb"] = jnp.mean(diffusion.hybrid_vb_term(model_output.astype(jnp.float32), x_start,
                                                    x_t, t, mask=mask))
  else:
    terms["vb"] = jnp.zeros((), jnp.float32)
  pred_xstart = diffusion.p_mean_variance(model_output.astype(jnp.float32), x_t, t,
                                          clip_denoised=False)["pred_xstart"]
  terms["pred_xstart"] = jnp.clip(pred_xstart, -1.0, 1.0)
  return terms


def sync_loss(syncnet_apply: Callable[..., Any], syncnet_variables: Any, frames: jax.Array,
              sync_mel: jax.Array, nframes: int) -> jax.Array:
  """Expert lip-sync loss on a window of generated frames (Wav2Lip generator side).

  Args:
    syncnet_apply: ``SyncNetColor().apply``.
    frames: ``[B*F, H, W, 3]`` in [-1, 1] (composited x̂0), F = 5.
    sync_mel: ``[B, 80, 16]`` mel window aligned with the first frame of each window.
  Returns:
    scalar BCE(cosine similarity, 1).
  """
  from diff2lip_jax.models.syncnet import cosine_sync_loss, syncnet_face_input
  windows = (to_windows(frames, nframes).astype(jnp.float32) + 1.0) / 2.0
  face = syncnet_face_input(windows)
  audio_emb, face_emb = syncnet_apply(syncnet_variables, sync_mel[..., None], face)
  return cosine_sync_loss(audio_emb, face_emb)


def weighted_total(terms: dict[str, jax.Array], weights: Any) -> jax.Array:
  """``sum(weights[k] * terms[k])`` over the scalar terms that have a weight."""
  total = jnp.zeros((), jnp.float32)
  for name, value in terms.items():
    weight = float(weights.get(name, 0.0)) if hasattr(weights, "get") else 0.0
    if weight and value.ndim == 0:
      total = total + weight * value
  return total
