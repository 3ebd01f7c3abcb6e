"""Per-frame face boxes for a video: face selection, missing-face policy, pads, smoothing.

Boxes are integer `(x1, y1, x2, y2)` pixel bounds with exclusive ends, i.e. the face crop is
`frame[y1:y2, x1:x2]` (the reference stores the same numbers as `(y1, y2, x1, x2)`).

Reference (Wav2Lip `inference.py` / Diff2Lip `generate.py` `face_detect`): take the best
detection of each frame, clip it at 0 and truncate to int, add pads `(top, bottom, left, right)`
clamped to the frame, then average each box with the next `smooth_window - 1` boxes (the last
window is anchored at the end of the video), truncating to int in place.

Face selection: `select="track"` (default) follows one person (the largest face, linked by box
overlap, see `tracking.py`); `select="best"` is the reference's best score per frame.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from data_pipelines.face_detection import tracking

# "skip" and "passthrough" give the same boxes (rows -1, left out of the smoothing); they tell
# the video pipeline to drop those frames or to write them unchanged.
NO_FACE_POLICIES = ("error", "skip", "passthrough", "nearest", "interpolate")
FACE_SELECTIONS = ("track", "best")


class NoFaceError(ValueError):
  """Some frames have no detected face and the policy is "error"."""


class Detector(Protocol):
  def detect(self, frames_rgb: np.ndarray, batch_size: int = ...) -> list[np.ndarray]: ...


def _ranges(indices: Sequence[int]) -> str:
  """[1, 2, 3, 7] -> "1-3, 7"."""
  parts, start = [], None
  for k, i in enumerate(indices):
    if start is None:
      start = i
    if k + 1 == len(indices) or indices[k + 1] != i + 1:
      parts.append(f"{start}-{i}" if i != start else f"{i}")
      start = None
  return ", ".join(parts)


def best_face_boxes(detections: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Highest-scoring detection per frame, clipped at 0 and truncated to int as the reference.

  Args:
    detections: T arrays `[K, 5]` (x1, y1, x2, y2, score), best first (`FaceDetector.detect`).
  Returns:
    boxes `[T, 4]` int64 (rows of frames without a face are -1) and found `[T]` bool.
  """
  boxes = np.full((len(detections), 4), -1, np.int64)
  found = np.zeros(len(detections), bool)
  for t, dets in enumerate(detections):
    dets = np.asarray(dets)
    if len(dets):
      best = dets[int(np.argmax(dets[:, 4]))]
      boxes[t] = np.clip(best[:4], 0, None).astype(np.int64)
      found[t] = True
  return boxes, found


def fill_missing_boxes(boxes: np.ndarray, found: np.ndarray, policy: str) -> np.ndarray:
  """Boxes for frames without a face from the neighbouring frames that have one.

  policy "nearest": copy the closest frame's box (the earlier one on ties); "interpolate":
  linear in time between the previous and next frames with a face (rounded), nearest at the
  ends of the video.
  """
  if policy not in ("nearest", "interpolate"):
    raise ValueError(f"fill policy must be 'nearest' or 'interpolate', got {policy!r}")
  valid = np.flatnonzero(found)
  if valid.size == 0:
    raise NoFaceError(f"no face detected in any of the {len(found)} frames")
  out = np.array(boxes, np.int64, copy=True)
  for t in np.flatnonzero(~found):
    after = np.searchsorted(valid, t)
    prev = valid[after - 1] if after > 0 else None
    nxt = valid[after] if after < valid.size else None
    if prev is None or nxt is None:
      out[t] = boxes[nxt if prev is None else prev]
    elif policy == "nearest":
      out[t] = boxes[prev if t - prev <= nxt - t else nxt]
    else:
      frac = (t - prev) / (nxt - prev)
      out[t] = np.round(boxes[prev] + frac * (boxes[nxt] - boxes[prev])).astype(np.int64)
  return out


def pad_boxes(boxes: np.ndarray, pads: Sequence[int], height: int, width: int) -> np.ndarray:
  """Grows `[T, 4]` (x1, y1, x2, y2) by pads `(top, bottom, left, right)`, clamped to the frame."""
  if len(pads) != 4:
    raise ValueError(f"pads must be (top, bottom, left, right), got {pads!r}")
  top, bottom, left, right = (int(p) for p in pads)
  boxes = np.asarray(boxes, np.int64)
  return np.stack([np.maximum(0, boxes[:, 0] - left), np.maximum(0, boxes[:, 1] - top),
                   np.minimum(width, boxes[:, 2] + right),
                   np.minimum(height, boxes[:, 3] + bottom)], axis=1)


def smooth_boxes(boxes: np.ndarray, window: int = 5) -> np.ndarray:
  """Wav2Lip `get_smoothened_boxes`: box i = int(mean(boxes[i : i + window])).

  Runs in place in order like the reference, so the end-anchored last windows
  (`boxes[T - window:]`) see already-smoothed boxes. For videos shorter than `window` the whole
  video is the window (the reference's negative slice start would silently use fewer boxes).
  `window <= 1` returns the boxes unchanged (Wav2Lip's `--nosmooth`).
  """
  out = np.array(boxes, np.int64, copy=True)
  n = len(out)
  if window <= 1 or n == 0:
    return out
  for i in range(n):
    window_rows = out[max(n - window, 0):] if i + window > n else out[i:i + window]
    out[i] = np.mean(window_rows, axis=0)  # assignment into int64 truncates, as the reference
  return out


def tracked_face_boxes(detections: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """One person's face per frame (`tracking.select_face_track`), clipped at 0 and truncated.

  Returns boxes `[T, 4]` int64 (rows of frames without the face are -1) and found `[T]` bool.
  """
  boxes, found = tracking.select_face_track(detections)
  out = np.full(boxes.shape, -1, np.int64)
  out[found] = np.clip(boxes[found], 0, None).astype(np.int64)
  return out, found


def face_boxes_and_found(detections: Sequence[np.ndarray], frame_size: tuple[int, int],
                         pads: Sequence[int] = (0, 10, 0, 0), smooth_window: int = 5,
                         no_face: str = "error",
                         select: str = "track") -> tuple[np.ndarray, np.ndarray]:
  """Per-frame crop boxes and which frames had the face detected.

  Args: as `face_boxes_for_video`, with `detections` the detector's T arrays `[K, 5]`.
  Returns:
    boxes `[T, 4]` int64 (x1, y1, x2, y2): for "skip" / "passthrough" the rows of frames
      without a face are -1; for "nearest" / "interpolate" every row is a box.
    found `[T]` bool: the face was detected in that frame (False rows were filled or are -1).
  Raises:
    NoFaceError: no frame has a face, or some have none and `no_face` is "error".
  """
  if no_face not in NO_FACE_POLICIES:
    raise ValueError(f"no_face must be one of {NO_FACE_POLICIES}, got {no_face!r}")
  if select not in FACE_SELECTIONS:
    raise ValueError(f"select must be one of {FACE_SELECTIONS}, got {select!r}")
  height, width = frame_size
  boxes, found = (tracked_face_boxes if select == "track" else best_face_boxes)(detections)
  missing = np.flatnonzero(~found)
  if missing.size == len(found):
    raise NoFaceError(f"no face detected in any of the {len(found)} frames")
  if missing.size and no_face == "error":
    raise NoFaceError(
        f"no face detected in {missing.size} of {len(found)} frames (0-based indices: "
        f"{_ranges(missing.tolist())}). Pass no_face='passthrough' to keep them unchanged, "
        "'skip' to drop them, or 'nearest' / 'interpolate' to reuse boxes from neighbouring "
        "frames.")
  usable = found
  if missing.size and no_face in ("nearest", "interpolate"):
    boxes, usable = fill_missing_boxes(boxes, found, no_face), np.ones_like(found)
  out = np.full((len(found), 4), -1, np.int64)
  kept = pad_boxes(boxes[usable], pads, height, width)
  out[usable] = smooth_boxes(kept, smooth_window)
  return out, found


def boxes_from_detections(detections: Sequence[np.ndarray], frame_size: tuple[int, int],
                          pads: Sequence[int] = (0, 10, 0, 0), smooth_window: int = 5,
                          no_face: str = "error", select: str = "track") -> np.ndarray:
  """Per-frame crop boxes `[T, 4]` from per-frame detections (see `face_boxes_and_found`)."""
  return face_boxes_and_found(detections, frame_size, pads, smooth_window, no_face, select)[0]


def face_boxes_for_video(frames_rgb: np.ndarray, detector: Detector,
                         pads: Sequence[int] = (0, 10, 0, 0), smooth_window: int = 5,
                         no_face: str = "error", batch_size: int = 16,
                         select: str = "track") -> np.ndarray:
  """Face crop box for every frame of a video.

  Args:
    frames_rgb: `[T, H, W, 3]` RGB frames.
    detector: a `FaceDetector` (anything with `.detect(frames, batch_size)`).
    pads: `(top, bottom, left, right)` pixels added around the detection (Wav2Lip inference
      default (0, 10, 0, 0), which keeps the chin; Diff2Lip's generate.py uses (0, 0, 0, 0)).
    smooth_window: temporal window of the box average (Wav2Lip: 5); <= 1 disables smoothing.
    no_face: what to do with frames without a face: "error" (default: raise `NoFaceError`
      listing them), "skip" / "passthrough" (their rows are -1 and they are left out of the
      smoothing; the video pipeline drops them or writes them unchanged), "nearest" or
      "interpolate" (box from neighbouring frames, before pads and smoothing).
    select: "track" (one person: the largest face, followed by box overlap) or "best" (the
      reference: best-scoring detection of each frame).
  Returns:
    `[T, 4]` int64 (x1, y1, x2, y2); crop with `frame[y1:y2, x1:x2]`.
  """
  frames_rgb = np.asarray(frames_rgb)
  if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3 or len(frames_rgb) == 0:
    raise ValueError(f"frames must be a non-empty [T, H, W, 3] array, got {frames_rgb.shape}")
  detections = detector.detect(frames_rgb, batch_size=batch_size)
  return boxes_from_detections(detections, frames_rgb.shape[1:3], pads, smooth_window, no_face,
                               select)
