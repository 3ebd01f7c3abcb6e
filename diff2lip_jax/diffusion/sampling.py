"""The full reverse diffusion process of Diff2Lip as one jittable computation.

``sample`` runs DDIM, ancestral DDPM or a multistep ODE solver (DPM-Solver++(2M), UniPC;
see ``diffusion/solvers.py``) over the respaced steps in a ``lax.fori_loop``; it has no
Python loop over steps, so it can sit inside ``jax.jit`` or be jitted once with
:func:`make_sampler` and reused on batches of the same shape. Every sampler evaluates the
model once per respaced step.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from diff2lip_jax.diffusion import ODE_SOLVERS, SAMPLERS, GaussianDiffusion, create_diffusion


def masked_condition(img: jax.Array, mask: jax.Array, noise: jax.Array) -> jax.Array:
  """``cond_img = img*(1-mask) + mask*noise``: the masked region of the frame filled with noise.

  At sampling the reference fills it with the chain's initial noise ``x_T``.
  Shapes: ``img, noise [N,H,W,3]``, ``mask [N,H,W,1]``.
  """
  return img * (1.0 - mask) + mask * noise


def lower_half_mask(batch: int, size: int, face_hide_percentage: float = 0.5) -> jax.Array:
  """``[batch, size, size, 1]`` mask that is 1 on rows ``>= int(size*(1-p))`` (reference)."""
  start = int(size * (1 - face_hide_percentage))
  rows = (jnp.arange(size) >= start).astype(jnp.float32)
  return jnp.broadcast_to(rows[None, :, None, None], (batch, size, size, 1))


def _as_diffusion(diffusion_config: Any) -> GaussianDiffusion:
  if isinstance(diffusion_config, GaussianDiffusion):
    return diffusion_config
  return create_diffusion(diffusion_config)


def resolve_sampler(sampler: str | None, use_ddim: bool = True, eta: float = 0.0) -> str:
  """The sampler name to run: ``sampler`` when given, else "ddim"/"ddpm" from ``use_ddim``.

  ``use_ddim=False`` (an explicit request for DDPM) with another ``sampler`` is an error, as
  is ``eta != 0`` with a deterministic ODE solver.
  """
  if sampler is None:
    return "ddim" if use_ddim else "ddpm"
  if sampler not in SAMPLERS:
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
  if not use_ddim and sampler != "ddpm":
    raise ValueError(f"use_ddim=False asks for DDPM but sampler={sampler!r}; pass only one")
  if sampler in ODE_SOLVERS and eta != 0:
    raise ValueError(f"sampler {sampler!r} is a deterministic ODE solver; eta must be 0, "
                     f"got {eta!r} (use sampler 'ddim' for eta > 0)")
  return sampler


def sample(model: nn.Module, params: Any, diffusion_config: Any, *, noise: jax.Array,
           cond_img: jax.Array, mask: jax.Array, ref_img: jax.Array | None,
           indiv_mels: jax.Array | None, rng: jax.Array | None = None, use_ddim: bool = True,
           clip_denoised: bool = True, eta: float = 0.0,
           sampler: str | None = None) -> jax.Array:
  """Generates frames from ``noise`` (``x_T``) conditioned on masked frames, reference and audio.

  Args:
    model: the TFG model (``diff2lip_jax.models.create_model``).
    params: its Flax params.
    diffusion_config: diffusion ConfigDict (respacing taken from ``timestep_respacing``) or a
      ready :class:`GaussianDiffusion`.
    noise: ``[N,H,W,3]`` start of the chain.
    cond_img: ``[N,H,W,3]`` frames with the masked region filled (see :func:`masked_condition`).
    mask: ``[N,H,W,1]``, 1 where the model generates.
    ref_img: ``[N,H,W,3*nrefer]`` identity reference frames (None if ``use_ref`` is off).
    indiv_mels: ``[N,80,16]`` per-frame mel windows (None if ``use_audio`` is off).
    rng: PRNG key; needed for DDPM or DDIM with ``eta > 0``.
    use_ddim: DDIM (True) or ancestral DDPM (False) when ``sampler`` is None.
    sampler: one of ``diffusion.SAMPLERS``: "ddim", "ddpm", "dpmpp_2m" (DPM-Solver++(2M)),
      "unipc" (UniPC-2); overrides ``use_ddim``. The ODE solvers need ``eta == 0``.
  Returns:
    ``x0 [N,H,W,3]`` float32 in [-1, 1] when ``clip_denoised``.
  """
  diffusion = _as_diffusion(diffusion_config)

  def model_fn(x_t, model_t):
    return model.apply({"params": params}, x_t, model_t, cond_img=cond_img, mask=mask,
                       ref_img=ref_img, indiv_mels=indiv_mels).astype(jnp.float32)

  name = resolve_sampler(sampler, use_ddim, eta)
  if name == "ddim" and eta and rng is None:
    raise ValueError("DDIM with eta > 0 needs an rng key")
  if name == "ddpm" and rng is None:
    raise ValueError("DDPM sampling (use_ddim=False or sampler='ddpm') needs an rng key")
  return diffusion.sample_loop(name, model_fn, noise, rng=rng, eta=eta,
                               clip_denoised=clip_denoised)


def make_sampler(model: nn.Module, diffusion_config: Any, *, use_ddim: bool = True,
                 clip_denoised: bool = True, eta: float = 0.0,
                 sampler: str | None = None) -> Callable[..., jax.Array]:
  """Returns ``jit(fn(params, noise, cond_img, mask, ref_img, indiv_mels, rng) -> x0)``.

  ``sampler``/``use_ddim`` as in :func:`sample` (checked here, before any compile). The
  diffusion tables are built once here; the function compiles once per input shape.
  """
  diffusion = _as_diffusion(diffusion_config)
  sampler = resolve_sampler(sampler, use_ddim, eta)

  @jax.jit
  def run(params, noise, cond_img, mask, ref_img, indiv_mels, rng):
    return sample(model, params, diffusion, noise=noise, cond_img=cond_img, mask=mask,
                  ref_img=ref_img, indiv_mels=indiv_mels, rng=rng, clip_denoised=clip_denoised,
                  eta=eta, sampler=sampler)

  return run
