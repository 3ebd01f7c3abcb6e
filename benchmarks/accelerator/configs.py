"""The suite's model/training configs: configs/released.py's plain-dict sections.

The train step reads its config by attribute (``config.loss.mse``) like a ConfigDict;
:class:`AttrDict` gives that without ml_collections.
"""
from __future__ import annotations

from typing import Any

from configs import released

# --cpu_smoke: a tiny model of the same architecture (16x16 crops, one level with attention,
# a shallow audio encoder): few ops, so XLA:CPU compiles the whole suite quickly.
TINY_MODEL = dict(image_size=16, num_channels=32, channel_mult="1", num_res_blocks=1,
                  num_heads=2, num_head_channels=-1, attention_resolutions="16",
                  audio_encoder_channels=32, audio_encoder_num_res_blocks=1)


class AttrDict(dict):
  """A dict whose keys are also attributes (``cfg.train.seed``), nested dicts converted."""

  def __init__(self, fields: dict[str, Any]):
    super().__init__({k: AttrDict(v) if isinstance(v, dict) else v for k, v in fields.items()})

  def __getattr__(self, name: str) -> Any:
    try:
      return self[name]
    except KeyError as error:
      raise AttributeError(name) from error


def suite_config(*, tiny: bool, dtype: str, attention_impl: str = "default") -> AttrDict:
  """The released config (or the tiny smoke model) with ``model.dtype``/``attention_impl`` set.

  The sync, LPIPS and adversarial loss weights are 0: their frozen networks need weights
  the suite does not have; the timed step is the ε-MSE + VB + masked-L1 objective.
  """
  fields = released.training_fields()
  fields["model"] = dict(released.model_fields(), dtype=dtype, attention_impl=attention_impl,
                         **(TINY_MODEL if tiny else {}))
  fields["diffusion"] = released.diffusion_fields()
  fields["loss"].update(sync=0.0, lpips=0.0, adversarial=0.0)
  return AttrDict(fields)
