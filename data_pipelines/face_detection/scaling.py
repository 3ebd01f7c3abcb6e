"""Detection at reduced resolution: frame size for detection, frame resizing, box scale-back.

Detectors cost time in proportion to the pixel count, while the faces a lip-sync video is about
are large. Peers (face-alignment users, LatentSync, MuseTalk) therefore detect on a downscaled
copy of each frame and scale the boxes back; `max_side` is the longer side of that copy.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image


def detection_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
  """`(h, w)` to detect on: the frame scaled (aspect kept) so its longer side is <= max_side.

  Frames already small enough, and `max_side=None`, keep their size (never upscaled).
  """
  if height < 1 or width < 1:
    raise ValueError(f"frame size must be positive, got {height}x{width}")
  if max_side is None or max(height, width) <= max_side:
    return height, width
  if max_side < 16:
    raise ValueError(f"max_side must be >= 16 pixels (or None to disable), got {max_side}")
  scale = max_side / max(height, width)
  return max(1, round(height * scale)), max(1, round(width * scale))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """`[N, H, W, C]` uint8 -> `[N, h, w, C]` uint8 with Pillow's antialiased bilinear filter.

  Pillow widens the filter by the reduction factor, so a 3x reduction averages 3x3 areas
  instead of aliasing (what a detector trained on natural photographs expects).
  """
  frames = np.asarray(frames)
  h, w = size
  if frames.shape[1:3] == (h, w):
    return frames
  if frames.dtype != np.uint8:
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
  out = np.empty((len(frames), h, w) + frames.shape[3:], np.uint8)
  for i, frame in enumerate(frames):
    out[i] = np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))
  return out


def scale_detections(detections: Sequence[np.ndarray], scale_x: float,
                     scale_y: float) -> list[np.ndarray]:
  """Maps `[K, 5]` (x1, y1, x2, y2, score) boxes from a resized frame back to the original.

  Box edges are continuous coordinates (pixel i spans [i, i + 1)), so a resize by `1/scale`
  maps an edge `x` to `x * scale` exactly; scores are unchanged.
  """
  factors = np.array([scale_x, scale_y, scale_x, scale_y, 1.0], np.float32)
  return [np.asarray(d, np.float32).reshape(-1, 5) * factors for d in detections]
