"""Beta schedules and timestep respacing (guided-diffusion semantics, float64 numpy).

Everything here runs on the host once, when a diffusion is built; the arrays it returns
are the float64 tables the JAX code later reads as float32.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np

BETA_SCHEDULES = ("linear", "cosine")


def get_named_beta_schedule(name: str, num_steps: int) -> np.ndarray:
  """Betas `[num_steps]` float64 of a named schedule.

  "linear" is Ho et al.'s 1e-4..2e-2 line rescaled so that any step count gives a
  similar process; "cosine" is Nichol & Dhariwal's squared-cosine alpha-bar.
  """
  num_steps = _positive_int(num_steps, "num_steps")
  if name == "linear":
    scale = 1000 / num_steps
    return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)
  if name == "cosine":
    return betas_for_alpha_bar(
        num_steps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
  raise ValueError(
      f"unknown beta schedule {name!r}; valid schedules are {', '.join(BETA_SCHEDULES)}")


def betas_for_alpha_bar(num_steps: int, alpha_bar: Callable[[float], float],
                        max_beta: float = 0.999) -> np.ndarray:
  """Betas `[num_steps]` float64 discretising a cumulative alpha-bar function on [0, 1].

  `max_beta` < 1 keeps the last step away from the singularity alpha_bar(1) = 0.
  """
  betas = []
  for i in range(num_steps):
    t1 = i / num_steps
    t2 = (i + 1) / num_steps
    betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
  return np.array(betas, dtype=np.float64)


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
  """Original timesteps kept when respacing a `num_timesteps` process.

  `section_counts` is a list of step counts (or a comma-separated string of them): the
  process is cut into that many equal portions and each is strided down to its count.
  "ddimN" instead takes the DDIM paper's single integer stride giving exactly N steps.
  """
  num_timesteps = _positive_int(num_timesteps, "num_timesteps")
  if isinstance(section_counts, str):
    spec = section_counts.strip()
    if spec.startswith("ddim"):
      desired = _parse_count(spec[len("ddim"):], section_counts)
      for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == desired:
          return set(range(0, num_timesteps, stride))
      if desired == num_timesteps == 1:
        return {0}
      raise ValueError(
          f"timestep respacing {section_counts!r}: cannot take exactly {desired} steps "
          f"out of {num_timesteps} with an integer stride; pick a step count that some "
          f"stride produces (e.g. ddim25, ddim50, ddim100 for 1000 steps)")
    counts = [_parse_count(part, section_counts) for part in spec.split(",")]
  else:
    counts = [_parse_count(c, section_counts) for c in _as_list(section_counts)]
  if not counts:
    raise ValueError(f"timestep respacing {section_counts!r} lists no step counts")

  size_per, extra = divmod(num_timesteps, len(counts))
  start_idx = 0
  all_steps = []
  for i, section_count in enumerate(counts):
    size = size_per + (1 if i < extra else 0)
    if size < section_count:
      raise ValueError(
          f"timestep respacing {section_counts!r}: cannot divide section {i} of {size} "
          f"steps (out of {num_timesteps}) into {section_count} steps")
    frac_stride = 1 if section_count <= 1 else (size - 1) / (section_count - 1)
    cur_idx = 0.0
    for _ in range(section_count):
      all_steps.append(start_idx + round(cur_idx))
      cur_idx += frac_stride
    start_idx += size
  return set(all_steps)


def logsnr_timesteps(betas: np.ndarray, count: int) -> set[int]:
  """`count` original timesteps evenly spaced in log-SNR, from step 0 to the last step.

  The log-SNR 2*lambda_t = log(ab_t / (1 - ab_t)) falls steeply near t = 0 and slowly at
  high noise, so this puts more steps at low noise than the even-in-t spacings (where, for the
  linear schedule, the step from the second smallest timestep to 0 spans a third of the
  whole lambda range). Each target lambda takes its nearest timestep; where the target
  spacing is finer than one timestep the steps are pushed apart so that `count` distinct
  timesteps remain. (The cosine schedule's clipped last betas drop lambda by 3.5 within its
  final timestep; that gap stays one step.)
  """
  alphas_cumprod = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
  num_steps = len(alphas_cumprod)
  count = _positive_int(count, "logsnr step count")
  if count > num_steps:
    raise ValueError(f"timestep respacing 'logsnr{count}': cannot take {count} steps out of "
                     f"{num_steps}")
  if num_steps == 1:
    return {0}
  lam = 0.5 * (np.log(alphas_cumprod) - np.log1p(-alphas_cumprod))  # decreasing in t
  targets = np.linspace(lam[0], lam[-1], count)
  upper = np.clip(np.searchsorted(-lam, -targets), 1, num_steps - 1)  # lam[upper] <= target
  nearer_lower = np.abs(lam[upper - 1] - targets) <= np.abs(lam[upper] - targets)
  steps = np.where(nearer_lower, upper - 1, upper)
  # Distinct and ascending: steps[i] >= steps[i-1] + 1, then steps[i] <= num_steps - count + i.
  offsets = np.arange(count)
  steps = np.minimum(np.maximum.accumulate(steps - offsets), num_steps - count) + offsets
  return set(int(t) for t in steps)


def respacing_timesteps(betas: np.ndarray, respacing: str | Sequence[int]) -> set[int]:
  """Original timesteps kept by a respacing spec: "logsnrN" (:func:`logsnr_timesteps`) or
  any form of :func:`space_timesteps` ("ddimN", "N", "10,10,10", a list of counts)."""
  if isinstance(respacing, str) and respacing.strip().startswith("logsnr"):
    spec = respacing.strip()
    return logsnr_timesteps(betas, _parse_count(spec[len("logsnr"):], respacing))
  return space_timesteps(len(betas), respacing)


def respace_betas(betas: np.ndarray, use_timesteps: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
  """Betas of the process that only visits `use_timesteps`, and the index map.

  Returns `(new_betas [K] float64, timestep_map [K] int64)` where `timestep_map[k]` is
  the original timestep of respaced step k. The new betas keep alphas_cumprod at the
  retained steps identical to the original process.
  """
  keep = set(int(t) for t in use_timesteps)
  alphas_cumprod = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
  if not keep:
    raise ValueError("timestep respacing keeps no timesteps")
  outside = sorted(t for t in keep if not 0 <= t < len(alphas_cumprod))
  if outside:
    raise ValueError(
        f"timesteps {outside[:5]} are outside the original process of "
        f"{len(alphas_cumprod)} steps")
  last_alpha_cumprod = 1.0
  new_betas, timestep_map = [], []
  for i, alpha_cumprod in enumerate(alphas_cumprod):
    if i in keep:
      new_betas.append(1 - alpha_cumprod / last_alpha_cumprod)
      last_alpha_cumprod = alpha_cumprod
      timestep_map.append(i)
  return np.array(new_betas, dtype=np.float64), np.array(timestep_map, dtype=np.int64)


def _positive_int(value, what: str) -> int:
  try:
    ok = not isinstance(value, bool) and int(value) == value and int(value) >= 1
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f"{what} must be a positive integer, got {value!r}")
  return int(value)


def _parse_count(text, spec) -> int:
  try:
    count = int(text)
  except (TypeError, ValueError):
    raise ValueError(
        f"timestep respacing {spec!r}: {text!r} is not an integer step count; use e.g. "
        f"'ddim25', '250' or '10,10,10'") from None
  if isinstance(text, float) and count != text:
    raise ValueError(f"timestep respacing {spec!r}: {text!r} is not an integer step count")
  if count < 0:
    raise ValueError(f"timestep respacing {spec!r}: step count {count} is negative")
  return count


def _as_list(section_counts) -> list:
  if isinstance(section_counts, (int, np.integer)):
    return [section_counts]
  try:
    return list(section_counts)
  except TypeError:
    raise ValueError(
        f"timestep respacing must be a string or a list of step counts, got "
        f"{type(section_counts).__name__}") from None
