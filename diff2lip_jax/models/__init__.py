"""Model construction from ml_collections configs that use the reference flag names."""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from diff2lip_jax.models.tfg import TFGModel

# Channel multipliers the reference picks from image_size (script_util.tfg_create_model).
CHANNEL_MULT_BY_SIZE = {
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
    256: (1, 1, 2, 3, 4, 4),
    512: (1, 1, 2, 2, 4, 4),
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _get(config: Any, key: str, default: Any) -> Any:
  if isinstance(config, Mapping):
    return config.get(key, default)
  return getattr(config, key, default) if hasattr(config, key) else default


def channel_mult_for(config: Any) -> tuple[int, ...]:
  """The explicit ``channel_mult`` string ("1,1,2,3,4") or the reference default for the size."""
  explicit = _get(config, "channel_mult", "")
  if explicit:
    if isinstance(explicit, str):
      return tuple(int(m) for m in explicit.split(","))
    return tuple(int(m) for m in explicit)
  size = int(_get(config, "image_size", 128))
  if size not in CHANNEL_MULT_BY_SIZE:
    raise ValueError(f"image_size={size} has no default channel_mult; supported sizes "
                     f"{sorted(CHANNEL_MULT_BY_SIZE)} or set model.channel_mult explicitly")
  return CHANNEL_MULT_BY_SIZE[size]


def attention_downsample_rates(attention_resolutions: Any, image_size: int) -> tuple[int, ...]:
  """Reference parsing: "32,16,8" at 128px -> (4, 8, 16); any "-1" means no attention."""
  if isinstance(attention_resolutions, str):
    parts = [p for p in attention_resolutions.split(",") if p.strip()]
  else:
    parts = [str(p) for p in attention_resolutions]
  if any(p.strip() == "-1" for p in parts):
    return ()
  return tuple(image_size // int(p) for p in parts)


def compute_dtype(config: Any):
  name = str(_get(config, "dtype", "float16" if _get(config, "use_fp16", False) else "float32"))
  if name not in _DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
  return _DTYPES[name]


def create_model(model_config: Any) -> nn.Module:
  """Builds the Diff2Lip ``TFGModel`` from a config with the reference flag names.

  Fields: image_size, num_channels, num_res_blocks, num_heads, num_heads_upsample,
  num_head_channels, attention_resolutions (str), channel_mult (str, "" = by size), dropout,
  use_scale_shift_norm, resblock_updown, learn_sigma, use_ref, nrefer, use_audio,
  audio_as_style, audio_encoder_channels (32) and audio_encoder_num_res_blocks (2) (the
  reference's audio_encoder_kwargs), nframes, dtype ("float32"|"bfloat16"), remat (or use_checkpoint).
  """
  if _get(model_config, "class_cond", False):
    raise ValueError("class_cond=True is not supported by Diff2Lip models")
  if _get(model_config, "audio_as_style_encoder_mlp", False):
    raise ValueError("audio_as_style_encoder_mlp=True is not supported: the reference's MLP "
                     "encoder has inconsistent shapes (Linear(80+16) on a flattened 80x16 input)")
  image_size = int(_get(model_config, "image_size", 128))
  return TFGModel(
      model_channels=int(_get(model_config, "num_channels", 128)),
      out_channels=6 if _get(model_config, "learn_sigma", True) else 3,
      num_res_blocks=int(_get(model_config, "num_res_blocks", 2)),
      attention_ds=attention_downsample_rates(
          _get(model_config, "attention_resolutions", "32,16,8"), image_size),
      channel_mult=channel_mult_for(model_config),
      dropout=float(_get(model_config, "dropout", 0.0)),
      num_heads=int(_get(model_config, "num_heads", 4)),
      num_head_channels=int(_get(model_config, "num_head_channels", -1)),
      num_heads_upsample=int(_get(model_config, "num_heads_upsample", -1)),
      use_scale_shift_norm=bool(_get(model_config, "use_scale_shift_norm", False)),
      resblock_updown=bool(_get(model_config, "resblock_updown", True)),
      use_ref=bool(_get(model_config, "use_ref", True)),
      nrefer=int(_get(model_config, "nrefer", 1)),
      use_audio=bool(_get(model_config, "use_audio", True)),
      audio_as_style=bool(_get(model_config, "audio_as_style", True)),
      audio_channels=int(_get(model_config, "audio_encoder_channels", 32)),
      audio_num_res_blocks=int(_get(model_config, "audio_encoder_num_res_blocks", 2)),
      dtype=compute_dtype(model_config),
      remat=bool(_get(model_config, "remat", False) or _get(model_config, "use_checkpoint", False)),
  )


__all__ = ["TFGModel", "create_model", "channel_mult_for", "attention_downsample_rates",
           "CHANNEL_MULT_BY_SIZE"]
