"""Does a clip show a face at all? ``prepare``'s check for crops that do not detect faces.

The fixed crops (voxceleb2, box) cut the same region out of every frame whatever it shows, so
a clip without a face (a slide, a blank screen, a landscape) would become training data for
"mouths". :class:`FaceCheck` keeps a few frames while the clip streams past (one a second, at
most ``max_frames``) and runs the bundled face detector on them (``face_detection
.create_detector("auto")``: S3FD when its weights are found, else dlib's HOG, no download).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def make_detector(enabled: bool, crop: Any, s3fd_weights: str | None = None) -> Any:
  """The detector of the check (None: disabled, or the ``face_crops.CropSpec`` detects faces).

  Raises ValueError (what to do) when no detector can be built.
  """
  if not enabled or crop.needs_detector:
    return None
  from data_pipelines import face_detection  # pylint: disable=import-outside-toplevel
  try:
    return face_detection.create_detector("auto", s3fd_weights)
  except face_detection.DetectorUnavailableError as error:
    raise ValueError(f"{error} (or pass --face_check none)") from error


class NoFaceInClipError(ValueError):
  """No sampled frame of a clip shows a face."""


class FaceCheck:
  """Collects sampled frames of a streamed clip; :meth:`verify` raises if none has a face.

  Args:
    detector: ``detect(frames [T, H, W, 3] uint8) -> T x [K, 5]``.
    fps: frame rate of the streamed frames (one frame is kept per second).
  """

  def __init__(self, detector: Any, fps: float, max_frames: int = 8):
    self.detector = detector
    self.step = max(1, int(round(fps)))
    self.max_frames = max_frames
    self.indices: list[int] = []
    self.frames: list[np.ndarray] = []
    self.seen = 0

  def add(self, chunk: np.ndarray) -> None:
    """Takes the next frames ``[n, H, W, 3]`` of the clip; keeps those at the sampled times."""
    for offset in range(len(chunk)):
      index = self.seen + offset
      if index % self.step == 0 and len(self.frames) < self.max_frames:
        self.indices.append(index)
        self.frames.append(chunk[offset])
    self.seen += len(chunk)

  def verify(self) -> None:
    """Raises :class:`NoFaceInClipError` (naming the frames checked) if no face was found."""
    if not self.frames:
      return
    detections = self.detector.detect(np.stack(self.frames))
    if any(len(found) for found in detections):
      return
    name = getattr(self.detector, "name", type(self.detector).__name__)
    raise NoFaceInClipError(
        f"no face found: the {name} face detector saw none in the {len(self.frames)} sampled "
        f"frames (0-based indices {', '.join(map(str, self.indices))}); the clip would train "
        "on a region without a mouth (pass --face_check none to keep such clips)")
