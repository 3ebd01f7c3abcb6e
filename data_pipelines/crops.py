"""Face crops: the fixed VoxCeleb2 crop, per-frame crop + resize, and pasting results back.

Boxes are integer `(x1, y1, x2, y2)` with exclusive ends (`frame[y1:y2, x1:x2]`), one per frame
(`[T, 4]`) or one for all frames (`[4]`), as returned by `face_boxes_for_video`.
`square_boxes` grows boxes to squares (the face keeps its shape in the square model input);
such boxes may reach past the frame, where cropping replicates the edge pixels and pasting
writes only the part inside. Paste modes (`paste_back`): "soft" (feathered mask, optional
colour matching), "lower_half" and "box" (hard rectangles); docs/paste_back.md.

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


def _check_boxes(boxes: np.ndarray, frames_shape: tuple[int, ...],
                 allow_outside: bool = False) -> np.ndarray:
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
  if allow_outside:  # only some overlap with the frame is needed; the rest is edge-replicated
    bad = ((boxes[:, 2] <= np.maximum(boxes[:, 0], 0)) | (boxes[:, 3] <= np.maximum(boxes[:, 1], 0))
           | (boxes[:, 0] >= width) | (boxes[:, 1] >= height))
  else:
    bad = ((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)
           | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
  bad = np.flatnonzero(bad)
  if bad.size:
    rule = ("must overlap the frame with x1 < x2 and y1 < y2" if allow_outside else
            "must satisfy 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H")
    raise ValueError(
        f"invalid boxes for {width}x{height} frames at frame indices {bad[:20].tolist()}"
        f"{' ...' if bad.size > 20 else ''} (first: {boxes[bad[0]].tolist()}); boxes {rule} "
        "(rows of -1 mark skipped frames: drop them)")
  return boxes


def square_boxes(boxes: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
  """Grows each box to a square of side ``max(w, h)`` so that resizing it never squashes.

  The square keeps the box's centre (the shorter side grows by ``(side - len) // 2`` before,
  the rest after) and is then shifted inside the frame along each axis where the side fits;
  where it does not (a face taller than the frame is wide), it stays centred and reaches past
  the edges, whose pixels :func:`crop_and_resize` replicates and :func:`paste_back` skips.

  Args:
    boxes: ``[T, 4]`` or ``[4]`` integer (x1, y1, x2, y2), exclusive ends.
    frame_size: ``(height, width)``.
  Returns:
    int64 boxes of the same shape with ``x2 - x1 == y2 - y1``.
  """
  boxes = np.asarray(boxes, np.int64)
  flat = boxes.reshape(-1, 4)
  side = np.maximum(flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1])
  out = np.empty_like(flat)
  for axis, limit in ((0, frame_size[1]), (1, frame_size[0])):
    lo, hi = flat[:, axis], flat[:, axis + 2]
    start = lo - (side - (hi - lo)) // 2
    start = np.where(side <= limit, np.clip(start, 0, np.maximum(limit - side, 0)), start)
    out[:, axis], out[:, axis + 2] = start, start + side
  return out.reshape(boxes.shape)


def _box_pixels(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
  """``frame[y1:y2, x1:x2]``, with rows and columns past the frame edges replicated."""
  x1, y1, x2, y2 = (int(v) for v in box)
  height, width = frame.shape[:2]
  if x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height:
    return frame[y1:y2, x1:x2]
  rows = np.clip(np.arange(y1, y2), 0, height - 1)
  cols = np.clip(np.arange(x1, x2), 0, width - 1)
  return frame[rows[:, None], cols[None, :]]


def crop_and_resize(frames: np.ndarray, boxes: np.ndarray, size: int = 128,
                    method: str = "area", allow_outside: bool = False) -> np.ndarray:
  """Crops each frame to its box and resizes to `size` x `size`.

  Args:
    frames: `[T, H, W, C]` (any numeric dtype).
    boxes: `[T, 4]` or `[4]` integer (x1, y1, x2, y2).
    size: output side.
    method: "area" (default, antialiased shrink) or "bilinear" (exactly the reference's
      `cv2.resize` default, before its rounding to uint8).
    allow_outside: boxes may reach past the frame edges (e.g. :func:`square_boxes`); the edge
      pixels are replicated there. Otherwise such boxes are an error.
  Returns:
    `[T, size, size, C]` float32 in the value range of `frames`.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4:
    raise ValueError(f"frames must be [T, H, W, C], got {frames.shape}")
  boxes = _check_boxes(boxes, frames.shape, allow_outside)
  out = np.empty((len(frames), size, size, frames.shape[-1]), np.float32)
  for t, box in enumerate(boxes):
    out[t] = resize_image(_box_pixels(frames[t], box), size, size, method)
  return out


def crop_uint8(frames: np.ndarray, boxes: np.ndarray, size: int = 128,
               method: str = "area", allow_outside: bool = False) -> np.ndarray:
  """:func:`crop_and_resize` rounded (half to even) and clipped to uint8 ``[T, size, size, C]``."""
  out = crop_and_resize(frames, boxes, size=size, method=method, allow_outside=allow_outside)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


PASTE_MODES = ("soft", "lower_half", "box")
FEATHER = 0.025   # soft paste: Gaussian sigma of the mask edge, as a fraction of the box side
ERODE_SIGMAS = 2.5  # the mask is eroded by this many sigmas: at its outer edge it is ~0.006


def feather_profile(length: int, sigma: float, erode: float) -> np.ndarray:
  """``[length]`` float64: the interval ``[0, length)`` shrunk by ``erode`` px at both ends and
  blurred by a Gaussian of ``sigma`` px, sampled at the pixel centres ``i + 0.5``.

  Exactly ``Phi((c - erode) / sigma) - Phi((c - length + erode) / sigma)`` (Phi: the normal
  CDF), i.e. the continuous convolution; the outer product of two profiles is the blurred,
  eroded rectangle. ``sigma <= 0`` gives the hard interval (all ones).
  """
  if sigma <= 0:
    return np.ones(length)
  from scipy.special import ndtr  # pylint: disable=import-outside-toplevel
  centres = np.arange(length) + 0.5
  return np.clip(ndtr((centres - erode) / sigma) - ndtr((centres - length + erode) / sigma), 0, 1)


def soft_mask(height: int, width: int, feather: float = FEATHER) -> np.ndarray:
  """``[height, width]`` blend weights of a pasted region: 1 inside, feathered to ~0 at every
  edge (sigma ``feather * min(height, width)`` px, eroded by ``ERODE_SIGMAS`` sigmas)."""
  sigma = feather * min(height, width)
  erode = ERODE_SIGMAS * sigma
  return np.outer(feather_profile(height, sigma, erode), feather_profile(width, sigma, erode))


def match_colors(patch: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """``patch`` with each channel's mean and std moved to ``original``'s, both measured over the
  seam ring (weights ``mask * (1 - mask)``: the feathered band where the two meet).

  ``patch``, ``original``: ``[h, w, C]`` float; ``mask``: ``[h, w]`` in [0, 1]. The gain is
  kept within [0.5, 2] so a flat ring cannot blow the patch up.
  """
  ring = (mask * (1.0 - mask))[..., None]
  total = ring.sum()
  if total < 1e-6:
    return patch
  mean = lambda a: (a * ring).sum((0, 1)) / total
  std = lambda a, m: np.sqrt((((a - m) ** 2) * ring).sum((0, 1)) / total)
  mean_p, mean_o = mean(patch), mean(original)
  gain = np.clip(std(original, mean_o) / np.maximum(std(patch, mean_p), 1e-6), 0.5, 2.0)
  return (patch - mean_p) * gain + mean_o


def _paste_one(frame: np.ndarray, crop: np.ndarray, box: np.ndarray, mode: str, top_fraction: float,
               method: str, feather: float, color_match: bool) -> None:
  """Pastes one crop into ``frame`` (in place); see :func:`paste_back`."""
  x1, y1, x2, y2 = (int(v) for v in box)
  height, width = frame.shape[:2]
  patch = resize_image(crop, y2 - y1, x2 - x1, method)
  top = 0 if mode == "box" else int((y2 - y1) * top_fraction)
  # The region in frame coordinates, clipped to the frame (square boxes may reach past it).
  fy1, fy2, fx1, fx2 = max(y1 + top, 0), min(y2, height), max(x1, 0), min(x2, width)
  if fy1 >= fy2 or fx1 >= fx2:
    return
  patch = patch[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1].astype(np.float64)
  if mode == "soft":
    # The mask is laid over the whole region (also the part outside the frame), so the seam
    # sits where the region ends, not where the frame cuts it.
    mask = soft_mask(y2 - y1 - top, x2 - x1, feather)[fy1 - y1 - top:fy2 - y1 - top,
                                                       fx1 - x1:fx2 - x1]
    original = frame[fy1:fy2, fx1:fx2].astype(np.float64)
    if color_match:
      patch = match_colors(patch, original, mask)
    patch = original + mask[..., None] * (patch - original)
  if np.issubdtype(frame.dtype, np.integer):
    info = np.iinfo(frame.dtype)
    patch = np.clip(np.round(patch), info.min, info.max)
  frame[fy1:fy2, fx1:fx2] = patch.astype(frame.dtype)


def paste_back(frames: np.ndarray, crops: np.ndarray, boxes: np.ndarray, mode: str = "lower_half",
               face_hide_percentage: float = 0.5, method: str = "bilinear", *,
               feather: float = FEATHER, color_match: bool = False) -> np.ndarray:
  """Puts generated square crops back into full frames (returns a new array).

  Each crop is resized to its box (the inverse of :func:`crop_and_resize`, also for boxes
  reaching past the frame: only the part inside is written). ``mode``:

    "lower_half": only the box rows under the model's mask change (the last
      ``face_hide_percentage`` of the box height, matching the mask rows
      ``>= int(S*(1 - face_hide_percentage))`` of the crop); every other pixel keeps its value;
    "soft": the same region, blended with :func:`soft_mask` (feathered edges) in the
      full-resolution frame, so no seam shows; pixels outside the region are untouched;
      ``color_match`` first moves the generated colours to the original's in the seam ring;
    "box": the whole box is replaced, as the reference does (it pastes
      ``sample*mask + (1-mask)*crop``, i.e. the upper half comes back twice resized).

  Args:
    frames: `[T, H, W, C]` original frames; the output has their dtype (integer output is
      rounded and clipped to the dtype's range).
    crops: `[T, S, S, C]` generated crops in the value range of `frames` (e.g. 0..255).
    boxes: `[T, 4]` or `[4]` (x1, y1, x2, y2) used to make the crops; they may reach past the
      frame edges (:func:`square_boxes`).
  Returns:
    `[T, H, W, C]` frames with the crops pasted in.
  """
  frames = np.asarray(frames)
  crops = np.asarray(crops)
  if crops.ndim != 4 or len(crops) != len(frames) or crops.shape[-1] != frames.shape[-1]:
    raise ValueError(f"crops must be [T, S, S, C] matching frames {frames.shape}, "
                     f"got {crops.shape}")
  if mode not in PASTE_MODES:
    raise ValueError(f"paste mode must be one of {PASTE_MODES}, got {mode!r}")
  if not 0.0 < face_hide_percentage <= 1.0:
    raise ValueError(f"face_hide_percentage must be in (0, 1], got {face_hide_percentage}")
  boxes = _check_boxes(boxes, frames.shape, allow_outside=True)
  out = frames.copy()
  for t, box in enumerate(boxes):
    _paste_one(out[t], crops[t], box, mode, 1.0 - face_hide_percentage, method, feather,
               color_match)
  return out
