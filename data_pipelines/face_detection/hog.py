"""dlib's HOG frontal face detector, with boxes mapped to the S3FD (WIDER FACE) convention.

The detector is compiled into the `dlib` library (wheel `dlib-bin`, Boost Software License): no
model file, nothing downloaded. Why this detector and how the box mapping was derived (with the
measurements) is in docs/face_detection.md; in short:

* Detection: each frame is scaled so its longer side is <= `max_side` (640) and scanned once
  (dlib's window is 80x80 pixels: faces >= 80 px in the scaled frame, >= 240 px at 1080p).
  Three tiers, from measured scores (docs/face_detection.md): faces scoring >= `score_threshold`
  (0.5) are reported; if a frame has none, those >= `weak_threshold` (-0.5); if it has none
  either, the frame is scanned again at twice the resolution (dlib's pyramid upsampling) with
  `retry_threshold` (0.0). Real faces score 0.8 .. 1.5 (astronaut), median 1.1 (LFW), the
  cartoon synthetic faces -0.8 .. 0.4; non-face photographs score <= -0.61 (<= -0.38 upsampled)
  but the surroundings of a real face can reach 0.16 (the astronaut's space suit), which the
  first tier keeps away from the largest-face choice.
* Box mapping: a HOG box is a square from just above the eyebrows to just above the chin; S3FD,
  trained on WIDER FACE, gives taller boxes (forehead to chin, height/width ~1.29). With `s`
  the HOG box side, the S3FD-like box is the HOG box with its top raised by 0.173 s, its bottom
  lowered by 0.067 s and 0.017 s taken off each side (`HOG_TO_S3FD`).

Scores are dlib's SVM margins (about -1 .. 3), not probabilities.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from data_pipelines.face_detection import scaling

# (left, top, right, bottom) offsets of the S3FD-convention box in units of the HOG box side.
HOG_TO_S3FD = (0.017, -0.173, -0.017, 0.067)
INSTALL_HINT = ("dlib's face detector is not installed. Install it with "
                "`pip install dlib-bin` (or `pip install -e \".[faces]\"` from the repository), "
                "or give S3FD weights instead (--s3fd_weights / DIFF2LIP_S3FD_WEIGHTS).")


def _import_dlib() -> Any:
  try:
    import dlib  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(INSTALL_HINT) from error
  return dlib


def hog_to_s3fd(boxes: np.ndarray) -> np.ndarray:
  """HOG boxes `[K, 4+]` (x1, y1, x2, y2, ...) -> S3FD-convention boxes, same shape (float32)."""
  boxes = np.array(boxes, np.float32, copy=True)
  side = 0.5 * ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1]))
  boxes[:, :4] += side[:, None] * np.asarray(HOG_TO_S3FD, np.float32)
  return boxes


class HogDetector:
  """dlib HOG face detector with the `detect(frames, batch_size)` protocol of `FaceDetector`.

  Args:
    max_side: longer side of the copy each frame is scanned on (None: full resolution).
    score_threshold: minimum dlib score of a confident face.
    weak_threshold: minimum score of the faces reported when no face reaches score_threshold.
    retry: scan frames without any face again at twice the resolution.
    retry_threshold: minimum score in that second scan.
    s3fd_boxes: map boxes to the S3FD convention (False: dlib's own boxes).
  """

  name = "dlib HOG"

  def __init__(self, max_side: int | None = 640, score_threshold: float = 0.5,
               weak_threshold: float = -0.5, retry: bool = True, retry_threshold: float = 0.0,
               s3fd_boxes: bool = True):
    self._detector = _import_dlib().get_frontal_face_detector()
    self.max_side = max_side
    self.score_threshold = float(score_threshold)
    self.weak_threshold = min(float(weak_threshold), self.score_threshold)
    self.retry = retry
    self.retry_threshold = float(retry_threshold)
    self.s3fd_boxes = s3fd_boxes

  def _scan(self, image: np.ndarray, upsample: int, threshold: float) -> np.ndarray:
    """One dlib scan -> `[K, 5]` boxes with exclusive ends (dlib's right/bottom are inclusive)."""
    rects, scores, _ = self._detector.run(image, upsample, threshold)
    dets = [[r.left(), r.top(), r.right() + 1, r.bottom() + 1, s] for r, s in zip(rects, scores)
            if s >= threshold]
    return np.asarray(dets, np.float32).reshape(-1, 5)

  def detect_frame(self, frame: np.ndarray) -> np.ndarray:
    """One RGB frame `[H, W, 3]` -> faces `[K, 5]` (x1, y1, x2, y2, score), best first."""
    height, width = frame.shape[:2]
    size = scaling.detection_size(height, width, self.max_side)
    small = np.ascontiguousarray(scaling.resize_frames(frame[None], size)[0])
    dets = self._scan(small, 0, self.weak_threshold)
    strong = dets[dets[:, 4] >= self.score_threshold]
    if len(strong):
      dets = strong
    elif not len(dets) and self.retry:
      dets = self._scan(small, 1, self.retry_threshold)
    dets = scaling.scale_detections([dets], width / size[1], height / size[0])[0]
    if self.s3fd_boxes:
      dets = hog_to_s3fd(dets)
    return dets[np.argsort(-dets[:, 4], kind="stable")]

  def detect(self, frames_rgb: np.ndarray, batch_size: int = 16) -> list[np.ndarray]:
    """Faces in every frame.

    Args:
      frames_rgb: `[T, H, W, 3]` RGB frames, uint8 (floats in 0..255 are rounded).
      batch_size: unused (dlib scans one frame at a time); kept for the shared protocol.
    Returns:
      T arrays `[K, 5]` float32 (x1, y1, x2, y2, score) in pixels, best score first; K may be 0.
    """
    del batch_size
    frames_rgb = np.asarray(frames_rgb)
    if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3:
      raise ValueError(f"detect: frames must be [T, H, W, 3] RGB, got {frames_rgb.shape}")
    if frames_rgb.dtype != np.uint8:
      frames_rgb = np.clip(np.rint(frames_rgb), 0, 255).astype(np.uint8)
    return [self.detect_frame(frame) for frame in frames_rgb]
