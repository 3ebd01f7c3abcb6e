"""What the model predicts, how its variance is set, and which training loss is used."""
from __future__ import annotations

import enum


class ModelMeanType(enum.Enum):
  """Which quantity the model's first C output channels predict."""
  PREVIOUS_X = enum.auto()  # x_{t-1}
  START_X = enum.auto()  # x_0
  EPSILON = enum.auto()  # the noise added to x_0


class ModelVarType(enum.Enum):
  """How the reverse-step variance is obtained.

  LEARNED: the model's extra C channels are the log-variance.
  LEARNED_RANGE: the extra channels `v` in [-1, 1] interpolate the log-variance between
    the posterior variance (v=-1) and beta_t (v=+1).
  FIXED_SMALL / FIXED_LARGE: posterior variance / beta_t, no extra channels.
  """
  LEARNED = enum.auto()
  FIXED_SMALL = enum.auto()
  FIXED_LARGE = enum.auto()
  LEARNED_RANGE = enum.auto()

  @property
  def is_learned(self) -> bool:
    return self in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE)


class LossType(enum.Enum):
  MSE = enum.auto()  # raw MSE (+ VB term when the variance is learned)
  RESCALED_MSE = enum.auto()  # MSE + VB term scaled by num_timesteps / 1000
  KL = enum.auto()  # the variational bound only
  RESCALED_KL = enum.auto()  # the VB term scaled by num_timesteps (estimates the full bound)

  def is_vb(self) -> bool:
    return self in (LossType.KL, LossType.RESCALED_KL)
