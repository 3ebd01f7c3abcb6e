"""Per-clip face statistics from per-frame face boxes and detection scores, and their filters."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class FaceStats:
  """`face_size`: median over frames with a face of the box's shorter side (pixels);
  `min_face_size`: its minimum; `mean_score`: mean detection score over ALL frames (0 for
  frames without a face); `min_score`: the lowest of them; `missing_fraction`: frames without
  a face / frames. Sizes are NaN when no frame has a face; scores NaN when none were given."""
  face_size: float
  min_face_size: float
  mean_score: float
  min_score: float
  missing_fraction: float


def check_boxes(boxes: np.ndarray, num_frames: int, scores: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
  """Validated `(boxes [T, 4] float64, scores [T] float64 or None)`; raises a clear error."""
  boxes = np.asarray(boxes, np.float64)
  if boxes.ndim != 2 or boxes.shape != (num_frames, 4):
    raise ValueError(f"boxes must be [T, 4] (x1, y1, x2, y2) with one row per frame "
                     f"(T = {num_frames}), got {boxes.shape}")
  if scores is None:
    return boxes, None
  scores = np.asarray(scores, np.float64)
  if scores.shape != (num_frames,):
    raise ValueError(f"scores must be [T] (T = {num_frames}), got {scores.shape}")
  if np.any(np.isnan(scores)) or np.any(scores < 0) or np.any(scores > 1):
    raise ValueError("detection scores must be in [0, 1] (0 for frames without a face)")
  return boxes, scores


def face_found(boxes: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
  """`[T]` bool: the frame has a face box (finite, positive width and height; rows of -1, NaN
  rows and, when scores are given, score 0 mean no face). Boxes may reach past the frame."""
  boxes = np.asarray(boxes, np.float64)
  with np.errstate(invalid="ignore"):
    found = (np.all(np.isfinite(boxes), axis=1) & (boxes[:, 2] > boxes[:, 0])
             & (boxes[:, 3] > boxes[:, 1]) & ~np.all(boxes == -1, axis=1))
  return found if scores is None else found & (np.asarray(scores) > 0)


def face_stats(boxes: np.ndarray, scores: np.ndarray | None = None) -> FaceStats:
  """Statistics of one clip or shot.

  Args:
    boxes: `[T, 4]` (x1, y1, x2, y2) pixels per frame; rows of frames without a face are -1
      or NaN (as `face_detection.best_face_boxes` gives).
    scores: optional `[T]` detection scores in [0, 1], 0 where there is no face.
  """
  found = face_found(boxes, scores)
  if not len(found):
    raise ValueError("face statistics of an empty shot")
  boxes = np.asarray(boxes, np.float64)[found]
  sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
  size = float(np.median(sides)) if len(sides) else float("nan")
  smallest = float(sides.min()) if len(sides) else float("nan")
  if scores is None:
    mean_score = min_score = float("nan")
  else:
    kept = np.where(found, np.asarray(scores, np.float64), 0.0)
    mean_score, min_score = float(kept.mean()), float(kept.min())
  return FaceStats(size, smallest, mean_score, min_score, float(1.0 - found.mean()))


def fill_missing(boxes: np.ndarray, found: np.ndarray) -> np.ndarray:
  """`[T, 4]` float64 boxes with frames without a face linearly interpolated in time from the
  frames that have one (held at the ends), as syncnet_python fills gaps in its face tracks."""
  boxes = np.asarray(boxes, np.float64)
  have = np.flatnonzero(found)
  if not len(have):
    raise ValueError("no frame has a face box")
  frames = np.arange(len(boxes))
  return np.stack([np.interp(frames, have, boxes[have, j]) for j in range(4)], axis=1)


def best_detections(detections: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """Per frame the highest-scoring detection, as curation's inputs.

  Args:
    detections: T arrays `[K, 5]` (x1, y1, x2, y2, score), K >= 0 (`FaceDetector.detect`).
  Returns:
    boxes `[T, 4]` float64 (-1 rows where K = 0; not clipped or rounded) and scores `[T]`
    float64 (0 where K = 0).
  """
  boxes, scores = np.full((len(detections), 4), -1.0), np.zeros(len(detections))
  for t, found in enumerate(detections):
    found = np.asarray(found, np.float64).reshape(-1, 5) if np.size(found) else np.zeros((0, 5))
    if len(found):
      boxes[t], scores[t] = found[found[:, 4].argmax(), :4], found[:, 4].max()
  return boxes, scores
