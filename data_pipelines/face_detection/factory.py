"""`create_detector`: the one entry point the video pipeline, prepare and evaluate call.

kind="auto" uses S3FD (the reference detector) when its weights are available and the bundled
dlib HOG detector otherwise, so the default crop finds the face with nothing to download:

1. `s3fd_weights` given -> S3FD with that file;
2. else the environment variable DIFF2LIP_S3FD_WEIGHTS, if set (it must name a file);
3. else ~/.cache/diff2lip/s3fd.pth, if that file exists (only read, never downloaded);
4. else dlib's HOG detector (boxes mapped to the S3FD convention, see `hog.py`).

Every detector has `detect(frames_rgb [T, H, W, 3] uint8, batch_size) -> T x [K, 5]`
(x1, y1, x2, y2, score) and a `name` for logs.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

from data_pipelines.face_detection.detector import FaceDetector
from data_pipelines.face_detection.hog import HogDetector

DETECTOR_KINDS = ("auto", "s3fd", "hog")
S3FD_WEIGHTS_ENV = "DIFF2LIP_S3FD_WEIGHTS"
DEFAULT_S3FD_WEIGHTS = pathlib.Path("~/.cache/diff2lip/s3fd.pth")
# Longer side of the frame copy each detector scans (frames already smaller are not scaled).
# HOG's window is 80 px (faces >= 80 px at this size, >= 40 px in its upsampled retry);
# S3FD's smallest anchors are 16 px and it costs ~0.5 CPU-s per 320x180 frame (2.3 at
# 640x360, ~20 at 1080p), so 320 px keeps faces >= ~100 px of a 1080p frame and a 2 s clip
# within seconds to tens of seconds on 2 cores (docs/face_detection.md).
DEFAULT_MAX_SIDE = {"s3fd": 320, "hog": 640}


class DetectorUnavailableError(RuntimeError):
  """The requested face detector cannot be built (missing weights or missing package)."""


def find_s3fd_weights(s3fd_weights: str | os.PathLike | None = None) -> pathlib.Path | None:
  """The S3FD weights file to use, or None (see the module docstring for the order).

  Raises:
    DetectorUnavailableError: a file named by the argument or the environment does not exist.
  """
  if s3fd_weights is not None:
    path, source = pathlib.Path(s3fd_weights).expanduser(), "s3fd_weights"
  elif os.environ.get(S3FD_WEIGHTS_ENV):
    path, source = pathlib.Path(os.environ[S3FD_WEIGHTS_ENV]).expanduser(), S3FD_WEIGHTS_ENV
  else:
    default = DEFAULT_S3FD_WEIGHTS.expanduser()
    return default if default.is_file() else None
  if not path.is_file():
    raise DetectorUnavailableError(
        f"S3FD weights not found: {source} names {str(path)!r}, which is not a file. Give the "
        "path of Wav2Lip's s3fd.pth (face_detection/detection/sfd/s3fd.pth), or leave it unset "
        "to use the bundled dlib detector.")
  return path


def create_detector(kind: str = "auto", s3fd_weights: str | os.PathLike | None = None,
                    max_side: int | None | str = "default",
                    **kwargs: Any) -> FaceDetector | HogDetector:
  """Builds a face detector.

  Args:
    kind: "auto" (S3FD if weights are found, else HOG), "s3fd" (weights required) or "hog".
    s3fd_weights: path of an S3FD checkpoint (`s3fd.pth`); overrides the environment variable.
    max_side: detect on frames scaled to this longer side, boxes scaled back; "default":
      `DEFAULT_MAX_SIDE` of the detector (S3FD 320, HOG 640); None: full resolution (S3FD at
      1080p costs ~20 CPU-seconds per frame).
    **kwargs: passed to the detector (`FaceDetector` or `HogDetector`), e.g. score_threshold.
  Returns:
    a `FaceDetector` (S3FD) or `HogDetector`.
  Raises:
    ValueError: unknown kind.
    DetectorUnavailableError: kind "s3fd" without weights, a weights path that is not a file,
      or the dlib package missing for HOG (the message says what to install).
  """
  if kind not in DETECTOR_KINDS:
    raise ValueError(f"face detector kind must be one of {DETECTOR_KINDS}, got {kind!r}")
  weights = None if kind == "hog" else find_s3fd_weights(s3fd_weights)
  if kind == "s3fd" and weights is None:
    raise DetectorUnavailableError(
        "S3FD needs its weights file (Wav2Lip's s3fd.pth), which is never downloaded: pass it "
        f"(--s3fd_weights), set {S3FD_WEIGHTS_ENV}, or copy it to {DEFAULT_S3FD_WEIGHTS}; or "
        "use the bundled dlib detector (kind 'hog' / 'auto').")
  chosen = "hog" if weights is None else "s3fd"
  if max_side == "default":
    max_side = DEFAULT_MAX_SIDE[chosen]
  elif max_side is not None and not isinstance(max_side, int):
    raise ValueError(f"max_side must be an int, None or 'default', got {max_side!r}")
  if weights is not None:
    return FaceDetector.from_checkpoint(weights, max_side=max_side, **kwargs)
  try:
    return HogDetector(max_side=max_side, **kwargs)
  except ImportError as error:
    raise DetectorUnavailableError(str(error)) from error
