"""Builds a `GaussianDiffusion` from a config (reference `create_gaussian_diffusion`)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional, Sequence, Union

from diff2lip_jax.diffusion.enums import LossType, ModelMeanType, ModelVarType
from diff2lip_jax.diffusion.gaussian import GaussianDiffusion
from diff2lip_jax.diffusion.schedules import (get_named_beta_schedule, respace_betas,
                                              respacing_timesteps)

_REQUIRED = ("diffusion_steps", "noise_schedule", "learn_sigma", "timestep_respacing",
             "predict_xstart", "rescale_timesteps", "use_kl", "rescale_learned_sigmas")
_MISSING = object()


def loss_type_for(use_kl: bool, rescale_learned_sigmas: bool) -> LossType:
  """use_kl -> RESCALED_KL, else rescale_learned_sigmas -> RESCALED_MSE, else MSE."""
  if use_kl:
    return LossType.RESCALED_KL
  if rescale_learned_sigmas:
    return LossType.RESCALED_MSE
  return LossType.MSE


def create_diffusion(diffusion_config: Any,
                     timestep_respacing: Optional[Union[str, Sequence[int]]] = None
                     ) -> GaussianDiffusion:
  """The (respaced) diffusion described by a config.

  Args:
    diffusion_config: ml_collections ConfigDict, mapping or attribute object with
      diffusion_steps, noise_schedule, learn_sigma, timestep_respacing, predict_xstart,
      rescale_timesteps, use_kl, rescale_learned_sigmas (and optionally sigma_small).
    timestep_respacing: replaces the config's respacing when not None; "" (or None in
      the config) keeps every step. E.g. "ddim25", "250", "10,10,10", [10, 10, 10], or
      "logsnr10" (10 steps evenly spaced in log-SNR; suits few-step sampling).
  """
  values = {name: _get(diffusion_config, name) for name in _REQUIRED}
  missing = [name for name, value in values.items() if value is _MISSING]
  if missing:
    raise ValueError(
        f"diffusion config lacks {', '.join(missing)}; it needs all of {', '.join(_REQUIRED)}")
  sigma_small = _get(diffusion_config, "sigma_small")
  sigma_small = False if sigma_small is _MISSING else bool(sigma_small)
  steps = int(values["diffusion_steps"])
  respacing = values["timestep_respacing"] if timestep_respacing is None else timestep_respacing
  if respacing is None or (isinstance(respacing, str) and not respacing.strip()):
    respacing = [steps]

  betas = get_named_beta_schedule(values["noise_schedule"], steps)
  new_betas, timestep_map = respace_betas(betas, respacing_timesteps(betas, respacing))
  if values["learn_sigma"]:
    var_type = ModelVarType.LEARNED_RANGE
  else:
    var_type = ModelVarType.FIXED_SMALL if sigma_small else ModelVarType.FIXED_LARGE
  return GaussianDiffusion.from_betas(
      new_betas,
      model_mean_type=ModelMeanType.START_X if values["predict_xstart"] else ModelMeanType.EPSILON,
      model_var_type=var_type,
      loss_type=loss_type_for(bool(values["use_kl"]), bool(values["rescale_learned_sigmas"])),
      rescale_timesteps=bool(values["rescale_timesteps"]),
      timestep_map=timestep_map,
      original_num_steps=steps,
  )


def _get(config: Any, name: str):
  if isinstance(config, Mapping):
    return config.get(name, _MISSING)
  try:
    return config[name]
  except (KeyError, TypeError, AttributeError):
    return getattr(config, name, _MISSING)
