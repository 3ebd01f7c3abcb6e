"""Hard scene cuts (shot boundaries) in decoded frames: colour histograms, adaptive threshold.

The rule (chosen over PySceneDetect's detectors by measurement on injected cuts, see
`benchmarks/compare_scene_cuts.py`, results in `benchmarks/CURATION.md`):
  1. Each frame is box-averaged by an integer factor to about `thumbnail` pixels on its short
     side (pixel noise and compression artefacts average out; the cost after decoding does not
     grow with resolution).
  2. Per frame a signature (`frame_signatures`, `[T, 232]`): soft (linearly interpolated)
     histograms of hue (16 bins,
     each pixel weighted by its saturation, so grey pixels whose hue is noise count little),
     saturation (8 bins) and value (16 bins), each as a fraction of the frame's pixels; and the
     layout: mean RGB in [0, 1] of an 8x8 grid of cells.
  3. `distance(a, b)` in [0, 1]: the mean of four terms, the total-variation distance (half
     the L1 norm) of each histogram and `min(1, mean |cell colour difference| / 0.5)`.
     Histograms ignore where colours are, so head and camera motion barely move them while a
     new shot replaces the colour distribution; the coarse layout term catches a new framing of
     the same scene (e.g. a close-up after a wide shot), which keeps the colours.
  4. A cut before frame `t` (`t` = first frame of the new shot) when all of:
       * jump: `d[t] = distance(t-1, t) >= min_distance`;
       * adaptive: `d[t] >= ratio * median(d over t-window..t+window without t-1..t+1)`
         (fast motion or flicker raise the local baseline, so only outstanding jumps count);
       * persistence: every frame of `t-1-persist..t-1` is at least `min_distance` from every
         frame of `t..t+persist` (ends clamped): the picture after the boundary stays
         different, so flashes and glitches of up to `persist` frames are not cuts;
       * local maximum: `d[t] >= d[t-1]` and `d[t] > d[t+1]`.
Gradual transitions (fades, dissolves) are not hard cuts and are not looked for.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

HUE_BINS = 16
SATURATION_BINS = 8
VALUE_BINS = 16
LAYOUT_GRID = 8
LAYOUT_FULL_CHANGE = 0.5     # mean cell colour change (of 1) that counts as a complete change
HISTOGRAM_SIZE = HUE_BINS + SATURATION_BINS + VALUE_BINS
SIGNATURE_SIZE = HISTOGRAM_SIZE + LAYOUT_GRID * LAYOUT_GRID * 3


@dataclasses.dataclass(frozen=True)
class SceneCutConfig:
  """Parameters of the cut rule (module docstring); defaults measured on injected cuts."""
  min_distance: float = 0.1
  ratio: float = 4.0
  window: int = 6
  persist: int = 2
  thumbnail: int = 64

  def __post_init__(self):
    if not 0.0 < self.min_distance <= 1.0:
      raise ValueError(f"scene cuts: min_distance must be in (0, 1], got {self.min_distance}")
    if self.ratio < 1.0 or self.window < 2 or self.persist < 0 or self.thumbnail < 8:
      raise ValueError("scene cuts: need ratio >= 1, window >= 2, persist >= 0 and thumbnail >= "
                       f"8; got {self.ratio}, {self.window}, {self.persist}, {self.thumbnail}")


def _check_frames(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3] RGB, got {frames.dtype} {frames.shape}")
  return frames


def _block_means(images: np.ndarray, fy: int, fx: int) -> np.ndarray:
  """`[T, H // fy, W // fx, 3]` float32 means of `fy x fx` blocks of `[T, H, W, 3]` images."""
  count, height, width = images.shape[:3]
  h, w = height // fy, width // fx
  # Integer sums (uint16 while they fit), one strided slice at a time: several times faster
  # than a float mean over reshaped axes.
  small = images.dtype == np.uint8 and fy * fx * 255 < 2 ** 16
  dtype = np.uint16 if small else np.float32
  rows = images[:, :h * fy, :w * fx].reshape(count, h, fy, w * fx, 3)
  acc = rows[:, :, 0].astype(dtype)
  for i in range(1, fy):
    acc += rows[:, :, i]
  cols = acc.reshape(count, h, w, fx, 3)
  out = cols[:, :, :, 0].copy()
  for i in range(1, fx):
    out += cols[:, :, :, i]
  return out.astype(np.float32) / (fy * fx)


def _hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Hue in [0, 1) (0 where undefined), saturation and value in [0, 1]; shapes of `rgb[..., 0]`."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  value = rgb.max(axis=-1)
  chroma = value - rgb.min(axis=-1)
  saturation = np.where(value > 0, chroma / np.maximum(value, 1e-6), 0.0)
  safe = np.maximum(chroma, 1e-6)
  hue = np.where(value == r, (g - b) / safe, np.where(value == g, 2.0 + (b - r) / safe,
                                                      4.0 + (r - g) / safe))
  hue = np.where(chroma > 0, (hue / 6.0) % 1.0, 0.0)
  return hue, saturation, value


def _histograms(values: np.ndarray, bins: int, weights: np.ndarray | None = None,
                circular: bool = False) -> np.ndarray:
  """`[T, bins]` per-frame soft histograms of `[T, N]` values in [0, 1], fractions of N pixels.

  Each value is split linearly between the two nearest bin centres (wrapping around for the
  circular hue, clamped at the ends otherwise), so a small global change of brightness moves
  the histogram a little instead of flipping whole flat regions into the next bin.
  """
  count, pixels = values.shape
  position = values * bins - 0.5
  low = np.floor(position)
  upper_share = position - low
  low = low.astype(np.int64)
  high = low + 1
  if circular:
    low, high = low % bins, high % bins
  else:
    low, high = np.clip(low, 0, bins - 1), np.clip(high, 0, bins - 1)
  weights = np.ones_like(values) if weights is None else weights
  offsets = bins * np.arange(count)[:, None]
  flat = (np.bincount((low + offsets).ravel(), (weights * (1 - upper_share)).ravel(),
                      minlength=count * bins) +
          np.bincount((high + offsets).ravel(), (weights * upper_share).ravel(),
                      minlength=count * bins))
  return flat.reshape(count, bins) / pixels


def frame_signatures(frames: np.ndarray, config: SceneCutConfig = SceneCutConfig()) -> np.ndarray:
  """Colour signatures of frames (step 2 of the rule); chunks can be concatenated.

  Args:
    frames: `[T, H, W, 3]` uint8 RGB frames.
  Returns:
    `[T, 232]` float32: hue (16), saturation (8) and value (16) histograms, each summing to at
    most 1 (hue is saturation-weighted), then the 8x8 grid's mean RGB in [0, 1] (row-major).
  """
  frames = _check_frames(frames)
  if not len(frames):
    return np.zeros((0, SIGNATURE_SIZE), np.float32)
  if min(frames.shape[1:3]) < LAYOUT_GRID:
    raise ValueError(f"frames must be at least {LAYOUT_GRID}x{LAYOUT_GRID} pixels, got "
                     f"{frames.shape[2]}x{frames.shape[1]}")
  factor = max(1, min(frames.shape[1:3]) // config.thumbnail)
  small = _block_means(frames, factor, factor) / 255.0
  hue, saturation, value = _hsv(small.reshape(len(frames), -1, 3))
  layout = _block_means(small, small.shape[1] // LAYOUT_GRID, small.shape[2] // LAYOUT_GRID)
  return np.concatenate([_histograms(hue, HUE_BINS, saturation, circular=True),
                         _histograms(saturation, SATURATION_BINS),
                         _histograms(value, VALUE_BINS),
                         layout.reshape(len(frames), -1)], axis=1).astype(np.float32)


def signature_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Distance in [0, 1] between signatures `[..., 232]` (step 3 of the rule)."""
  diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
  hue, sat, value, layout = np.split(diff, [HUE_BINS, HUE_BINS + SATURATION_BINS,
                                            HISTOGRAM_SIZE], axis=-1)
  histograms = sum(0.5 * h.sum(axis=-1) for h in (hue, sat, value))
  return (histograms + np.minimum(1.0, layout.mean(axis=-1) / LAYOUT_FULL_CHANGE)) / 4.0


def _local_baseline(jumps: np.ndarray, t: int, window: int) -> float:
  """Median jump around boundary t without t-1..t+1; 0 when nothing is left."""
  lo, hi = max(1, t - window), min(len(jumps), t + window + 1)
  around = [jumps[i] for i in range(lo, hi) if abs(i - t) > 1]
  return float(np.median(around)) if around else 0.0


def cuts_from_signatures(signatures: np.ndarray,
                         config: SceneCutConfig = SceneCutConfig()) -> list[int]:
  """Cuts (first frame of each new shot, ascending) from `[T, 232]` signatures (step 4)."""
  sig = np.asarray(signatures, np.float64)
  if sig.ndim != 2 or sig.shape[1] != SIGNATURE_SIZE:
    raise ValueError(f"signatures must be [T, {SIGNATURE_SIZE}], got {sig.shape}")
  count = len(sig)
  jumps = frame_jumps(sig)
  cuts = []
  for t in np.flatnonzero(jumps >= config.min_distance):
    if jumps[t] < jumps[t - 1] or (t + 1 < count and jumps[t] <= jumps[t + 1]):
      continue
    if jumps[t] < config.ratio * _local_baseline(jumps, t, config.window):
      continue
    before = sig[max(0, t - 1 - config.persist):t]
    after = sig[t:min(count, t + 1 + config.persist)]
    if signature_distance(before[:, None], after[None]).min() >= config.min_distance:
      cuts.append(int(t))
  return cuts


def frame_jumps(signatures: np.ndarray) -> np.ndarray:
  """`[T]` float64 `d[t] = distance(t-1, t)` (`d[0] = 0`), for reports and tuning."""
  sig = np.asarray(signatures, np.float64)
  out = np.zeros(len(sig))
  if len(sig) > 1:
    out[1:] = signature_distance(sig[:-1], sig[1:])
  return out


def detect_scene_cuts(frames: np.ndarray, config: SceneCutConfig = SceneCutConfig()) -> list[int]:
  """Hard cuts in a clip.

  Args:
    frames: `[T, H, W, 3]` uint8 RGB frames.
  Returns:
    ascending frame indices `t` in `1..T-1`: frame `t` is the first frame of a new shot.
  """
  return cuts_from_signatures(frame_signatures(frames, config), config)


def shots_from_cuts(cuts: Sequence[int], num_frames: int) -> list[tuple[int, int]]:
  """`[(start, end), ...]` half-open frame ranges of the shots that `cuts` separate."""
  bounds = [0] + [int(c) for c in cuts] + [int(num_frames)]
  if any(b <= a for a, b in zip(bounds, bounds[1:])):
    raise ValueError(f"cuts must be ascending frame indices in 1..{num_frames - 1}, got "
                     f"{list(cuts)}")
  return list(zip(bounds[:-1], bounds[1:]))
