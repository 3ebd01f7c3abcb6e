"""Model construction from ml_collections configs that use the reference flag names."""
from __future__ import annotations

from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.models.layers import ATTENTION_IMPLS
from diff2lip_jax.models.tfg import TFGModel

# Channel multipliers the reference picks from image_size (script_util.tfg_create_model).
CHANNEL_MULT_BY_SIZE = {
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
    256: (1, 1, 2, 3, 4, 4),
    512: (1, 1, 2, 2, 4, 4),
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class ParamsMismatchError(ValueError):
  """A params tree does not fit the model its config describes."""


def config_value(config: Any, key: str, default: Any) -> Any:
  """``config[key]`` for a ConfigDict, dict or attribute object; ``default`` when absent."""
  if isinstance(config, Mapping):
    return config.get(key, default)
  return getattr(config, key, default) if hasattr(config, key) else default


def channel_mult_for(config: Any) -> tuple[int, ...]:
  """The explicit ``channel_mult`` string ("1,1,2,3,4") or the reference default for the size."""
  explicit = config_value(config, "channel_mult", "")
  if explicit:
    if isinstance(explicit, str):
      return tuple(int(m) for m in explicit.split(","))
    return tuple(int(m) for m in explicit)
  size = int(config_value(config, "image_size", 128))
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
  name = str(config_value(config, "dtype", "float16" if config_value(config, "use_fp16", False) else "float32"))
  if name not in _DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
  return _DTYPES[name]


def create_model(model_config: Any) -> nn.Module:
  """Builds the Diff2Lip ``TFGModel`` from a config with the reference flag names.

  Fields: image_size, num_channels, num_res_blocks, num_heads, num_heads_upsample,
  num_head_channels, attention_resolutions (str), channel_mult (str, "" = by size), dropout,
  use_scale_shift_norm, resblock_updown, learn_sigma, use_ref, nrefer, use_audio,
  audio_as_style, audio_encoder_channels (32) and audio_encoder_num_res_blocks (2) (the
  reference's audio_encoder_kwargs), nframes, dtype ("float32"|"bfloat16"), remat (or
  use_checkpoint), attention_impl ("default" | "dot_product_attention": the attention kernel,
  same parameters; see ``layers.ATTENTION_IMPLS``).
  """
  if config_value(model_config, "class_cond", False):
    raise ValueError("class_cond=True is not supported by Diff2Lip models")
  if config_value(model_config, "audio_as_style_encoder_mlp", False):
    raise ValueError("audio_as_style_encoder_mlp=True is not supported: the reference's MLP "
                     "encoder has inconsistent shapes (Linear(80+16) on a flattened 80x16 input)")
  image_size = int(config_value(model_config, "image_size", 128))
  attention_impl = str(config_value(model_config, "attention_impl", "default"))
  if attention_impl not in ATTENTION_IMPLS:
    raise ValueError(f"model.attention_impl must be one of {', '.join(ATTENTION_IMPLS)}, "
                     f"got {attention_impl!r}")
  return TFGModel(
      model_channels=int(config_value(model_config, "num_channels", 128)),
      out_channels=6 if config_value(model_config, "learn_sigma", True) else 3,
      num_res_blocks=int(config_value(model_config, "num_res_blocks", 2)),
      attention_ds=attention_downsample_rates(
          config_value(model_config, "attention_resolutions", "32,16,8"), image_size),
      channel_mult=channel_mult_for(model_config),
      dropout=float(config_value(model_config, "dropout", 0.0)),
      num_heads=int(config_value(model_config, "num_heads", 4)),
      num_head_channels=int(config_value(model_config, "num_head_channels", -1)),
      num_heads_upsample=int(config_value(model_config, "num_heads_upsample", -1)),
      use_scale_shift_norm=bool(config_value(model_config, "use_scale_shift_norm", False)),
      resblock_updown=bool(config_value(model_config, "resblock_updown", True)),
      use_ref=bool(config_value(model_config, "use_ref", True)),
      nrefer=int(config_value(model_config, "nrefer", 1)),
      use_audio=bool(config_value(model_config, "use_audio", True)),
      audio_as_style=bool(config_value(model_config, "audio_as_style", True)),
      audio_channels=int(config_value(model_config, "audio_encoder_channels", 32)),
      audio_num_res_blocks=int(config_value(model_config, "audio_encoder_num_res_blocks", 2)),
      dtype=compute_dtype(model_config),
      remat=bool(config_value(model_config, "remat", False) or config_value(model_config, "use_checkpoint", False)),
      attention_impl=attention_impl,
  )


def dummy_inputs(model_config: Any, batch: int = 1) -> dict[str, jax.Array]:
  """Zero inputs of the model's call signature: ``x, t, cond_img, mask, ref_img, indiv_mels``.

  Shapes: images ``[batch, S, S, 3]`` (``ref_img`` ``[batch, S, S, 3*nrefer]``), mask
  ``[batch, S, S, 1]``, ``t [batch]``, mel windows ``[batch, 80, 16]``.
  """
  size = int(config_value(model_config, "image_size", 128))
  nrefer = int(config_value(model_config, "nrefer", 1))
  img = jnp.zeros((batch, size, size, 3), jnp.float32)
  return dict(x=img, t=jnp.zeros((batch,), jnp.int32), cond_img=img,
              mask=jnp.zeros((batch, size, size, 1), jnp.float32),
              ref_img=jnp.zeros((batch, size, size, 3 * nrefer), jnp.float32),
              indiv_mels=jnp.zeros((batch, 80, 16), jnp.float32))


def init_params(model: nn.Module, model_config: Any, rng: jax.Array) -> Any:
  """Fresh Flax params of ``model`` (built from ``model_config``)."""
  inp = dummy_inputs(model_config)
  return model.init(rng, inp.pop("x"), inp.pop("t"), **inp)["params"]


def param_shapes(model_config: Any) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Flattened param path -> shape of the model ``model_config`` builds (nothing allocated)."""
  model = create_model(model_config)
  shapes = jax.eval_shape(lambda: init_params(model, model_config, jax.random.PRNGKey(0)))
  return {k: tuple(v.shape) for k, v in flax.traverse_util.flatten_dict(shapes).items()}


def check_params(params: Any, model_config: Any) -> None:
  """Raises :class:`ParamsMismatchError` naming the parameters that do not fit the model."""
  expected = param_shapes(model_config)
  try:
    found = {k: tuple(np.shape(v)) for k, v in flax.traverse_util.flatten_dict(params).items()}
  except (TypeError, ValueError) as error:
    raise ParamsMismatchError(f"params are not a parameter tree: {error}") from error
  missing = sorted("/".join(k) for k in expected if k not in found)
  unexpected = sorted("/".join(k) for k in found if k not in expected)
  misshaped = sorted(f"{'/'.join(k)}: checkpoint {found[k]}, model {v}"
                     for k, v in expected.items() if k in found and found[k] != v)
  if missing or unexpected or misshaped:
    lines = [f"checkpoint params do not match the model of its config ({len(missing)} missing,"
             f" {len(unexpected)} unexpected, {len(misshaped)} mis-shaped):"]
    lines += [f"  missing: {m}" for m in missing[:8]]
    lines += [f"  unexpected: {u}" for u in unexpected[:8]]
    lines += [f"  mis-shaped: {m}" for m in misshaped[:8]]
    lines.append("The checkpoint's config and params disagree: re-export it with "
                 "`python -m diff2lip_jax.convert` (with the config it was trained with) or "
                 "point --checkpoint at the training workdir.")
    raise ParamsMismatchError("\n".join(lines))


__all__ = ["TFGModel", "create_model", "channel_mult_for", "attention_downsample_rates",
           "CHANNEL_MULT_BY_SIZE", "config_value", "dummy_inputs", "init_params",
           "param_shapes", "check_params", "ParamsMismatchError", "compute_dtype", "ATTENTION_IMPLS"]
