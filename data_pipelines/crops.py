"""Face crops: the fixed VoxCeleb2 crop, per-frame crop + resize, and pasting results back.

Boxes are integer `(x1, y1, x2, y2)` with exclusive ends (`frame[y1:y2, x1:x2]`), one per frame
(`[T, 4]`) or one for all frames (`[4]`), as returned by `face_boxes_for_video`.

Resizing is separable and done with small interpolation matrices in numpy (no OpenCV):
  "bilinear": OpenCV `INTER_LINEAR` (half-pixel centres, edge clamp, no antialiasing), which is
    what the reference (`cv2.resize` defaults) uses both for cropping and for pasting back;
  "area": averaging over the covered source area when shrinking (same numbers as OpenCV
    `INTER_AREA`; no aliasing from large faces), bilinear when enlarging (where OpenCV's
    INTER_AREA is close to nearest-neighbour instead).
"""
from __future__ import annotations

import functools

import numpy as np

RESIZE_METHODS = ("area", "bilinear")


def voxceleb2_crop_box(height: int, width: int) -> tuple[int, int, int, int]:
  """The reference's fixed VoxCeleb2 face crop (no detector) as `(x1, y1, x2, y2)`.

  Rows `[0, H - int(H*2.36/8))`, columns `[int(W*1.8/8), W - int(W*1.8/8))`.
  """
  if height < 1 or width < 1:
    raise ValueError(f"frame size must be positive, got {height}x{width}")
  margin_x = int(width * 1.8 / 8)
  return margin_x, 0, width - margin_x, height - int(height * 2.36 / 8)


@functools.lru_cache(maxsize=256)
def resize_matrix(src: int, dst: int, method: str = "bilinear") -> np.ndarray:
  """`[dst, src]` float64 matrix M with `resized = M @ signal` along one axis."""
  if method not in RESIZE_METHODS:
    raise ValueError(f"resize method must be one of {RESIZE_METHODS}, got {method!r}")
  if src < 1 or dst < 1:
    raise ValueError(f"cannot resize {src} -> {dst} pixels")
  scale = src / dst
  m = np.zeros((dst, src))
  if method == "area" and dst < src:
    edges = np.arange(dst + 1) * scale
    for i in range(dst):
      lo, hi = edges[i], edges[i + 1]
      first, last = int(np.floor(lo)), min(int(np.ceil(hi)), src)
      for j in range(first, last):
        m[i, j] = (min(hi, j + 1) - max(lo, j)) / scale
    return m
  pos = (np.arange(dst) + 0.5) * scale - 0.5
  left = np.floor(pos).astype(np.int64)
  frac = pos - left
  frac[left < 0] = 0.0          # OpenCV clamps to the edge pixels
  left[left < 0] = 0
  at_end = left >= src - 1
  left[at_end], frac[at_end] = src - 1, 0.0
  rows = np.arange(dst)
  m[rows, left] += 1.0 - frac
  right = np.minimum(left + 1, src - 1)
  m[rows, right] += frac
  return m


def resize_image(image: np.ndarray, height: int, width: int,
                 method: str = "bilinear") -> np.ndarray:
  """`[h, w, C]` -> `[height, width, C]` float32 (no rounding or clipping)."""
  ry = resize_matrix(image.shape[0], height, method)
  rx = resize_matrix(image.shape[1], width, method)
  out = np.einsum("yh,hwc,xw->yxc", ry, image.astype(np.float64), rx, optimize=True)
  return out.astype(np.float32)


def _check_boxes(boxes: np.ndarray, frames_shape: tuple[int, ...]) -> np.ndarray:
  num, height, width = frames_shape[:3]
  boxes = np.asarray(boxes)
  if boxes.shape == (4,):
    boxes = np.broadcast_to(boxes, (num, 4))
  if boxes.shape != (num, 4):
    raise ValueError(f"boxes must be [4] or [{num}, 4] (x1, y1, x2, y2), got {boxes.shape}")
  if not np.issubdtype(boxes.dtype, np.integer):
    if not np.array_equal(boxes, np.round(boxes)):
      raise ValueError("boxes must hold integer pixel bounds")
    boxes = boxes.astype(np.int64)
  bad = np.flatnonzero((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width)
                       | (boxes[:, 3] > height) | (boxes[:, 2] <= boxes[:, 0])
                       | (boxes[:, 3] <= boxes[:, 1]))
  if bad.size:
    raise ValueError(
        f"invalid boxes for {width}x{height} frames at frame indices {bad[:20].tolist()}"
        f"{' ...' if bad.size > 20 else ''} (first: {boxes[bad[0]].tolist()}); boxes must satisfy "
        "0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H (rows of -1 mark skipped frames: drop them)")
  return boxes


def crop_and_resize(frames: np.ndarray, boxes: np.ndarray, size: int = 128,
                    method: str = "area") -> np.ndarray:
  """Crops each frame to its box and resizes to `size` x `size`.

  Args:
    frames: `[T, H, W, C]` (any numeric dtype).
    boxes: `[T, 4]` or `[4]` integer (x1, y1, x2, y2).
    size: output side.
    method: "area" (default, antialiased shrink) or "bilinear" (exactly the reference's
      `cv2.resize` default, before its rounding to uint8).
  Returns:
    `[T, size, size, C]` float32 in the value range of `frames`.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4:
    raise ValueError(f"frames must be [T, H, W, C], got {frames.shape}")
  boxes = _check_boxes(boxes, frames.shape)
  out = np.empty((len(frames), size, size, frames.shape[-1]), np.float32)
  for t, (x1, y1, x2, y2) in enumerate(boxes):
    out[t] = resize_image(frames[t, y1:y2, x1:x2], size, size, method)
  return out


def crop_uint8(frames: np.ndarray, boxes: np.ndarray, size: int = 128,
               method: str = "area") -> np.ndarray:
  """:func:`crop_and_resize` rounded (half to even) and clipped to uint8 ``[T, size, size, C]``."""
  out = crop_and_resize(frames, boxes, size=size, method=method)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def paste_back(frames: np.ndarray, crops: np.ndarray, boxes: np.ndarray,
               mask_lower_half_only: bool = True, face_hide_percentage: float = 0.5,
               method: str = "bilinear") -> np.ndarray:
  """Puts generated square crops back into full frames (returns a new array).

  Each crop is resized to its box. With `mask_lower_half_only` only the box rows under the
  model's mask are replaced (the last `face_hide_percentage` of the box height, matching the
  mask rows `>= int(S*(1 - face_hide_percentage))` of the crop), so every other pixel keeps its
  exact original value. With False the whole box is replaced, as the reference does (it pastes
  `sample*mask + (1-mask)*crop`, i.e. the upper half only comes back twice resized).

  Args:
    frames: `[T, H, W, C]` original frames; the output has their dtype (integer output is
      rounded and clipped to the dtype's range).
    crops: `[T, S, S, C]` generated crops in the value range of `frames` (e.g. 0..255).
    boxes: `[T, 4]` or `[4]` (x1, y1, x2, y2) used to make the crops.
  Returns:
    `[T, H, W, C]` frames with the crops pasted in.
  """
  frames = np.asarray(frames)
  crops = np.asarray(crops)
  if crops.ndim != 4 or len(crops) != len(frames) or crops.shape[-1] != frames.shape[-1]:
    raise ValueError(f"crops must be [T, S, S, C] matching frames {frames.shape}, "
                     f"got {crops.shape}")
  if not 0.0 < face_hide_percentage <= 1.0:
    raise ValueError(f"face_hide_percentage must be in (0, 1], got {face_hide_percentage}")
  boxes = _check_boxes(boxes, frames.shape)
  out = frames.copy()
  for t, (x1, y1, x2, y2) in enumerate(boxes):
    patch = resize_image(crops[t], y2 - y1, x2 - x1, method)
    top = int((y2 - y1) * (1.0 - face_hide_percentage)) if mask_lower_half_only else 0
    patch = patch[top:]
    if np.issubdtype(out.dtype, np.integer):
      info = np.iinfo(out.dtype)
      patch = np.clip(np.round(patch), info.min, info.max)
    out[t, y1 + top:y2, x1:x2] = patch.astype(out.dtype)
  return out
