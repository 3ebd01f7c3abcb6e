"""Where the face is in full frames: the crop specification and the per-frame boxes it gives.

One owner for data preparation (``prepare``), inference (``diff2lip_jax.inference``) and
evaluation (``diff2lip_jax.evaluate``). A :class:`CropSpec` names one of three crops:

  "voxceleb2"  the reference's fixed crop of VoxCeleb2 frames (``crops.voxceleb2_crop_box``);
  "box"        one user box ``(x1, y1, x2, y2)`` for every frame;
  "s3fd"       S3FD detections per frame, grown by ``pads`` ``(top, bottom, left, right)``,
               smoothed over ``smooth_window`` frames, frames without a face handled by
               ``no_face`` ("error" | "nearest" | "interpolate"; ``face_detection.video_boxes``).

:func:`frame_boxes` turns a spec (plus, for "s3fd", the detections of a pass over the video)
into ``[T, 4]`` int64 boxes with exclusive ends, as ``crops.crop_and_resize`` and
``crops.paste_back`` take them. Errors are :class:`CropError` (a ``ValueError``) or
``face_detection.NoFaceError`` (also a ``ValueError``), with messages that say what to change.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from data_pipelines import crops

CROP_KINDS = ("voxceleb2", "box", "s3fd")
NO_FACE_POLICIES = ("error", "nearest", "interpolate")


class CropError(ValueError):
  """A crop that cannot be used: unknown kind, malformed box, box outside the frames."""


def _int_tuple(values: Any, what: str) -> tuple[int, ...]:
  try:
    out = tuple(int(v) for v in values)
  except (TypeError, ValueError):
    raise CropError(f"{what} must be four integers, got {values!r}") from None
  if len(out) != 4:
    raise CropError(f"{what} must be four integers, got {values!r}")
  return out


@dataclasses.dataclass(frozen=True)
class CropSpec:
  """How face crops are taken from full frames (see the module docstring for the kinds).

  ``box`` is ``(x1, y1, x2, y2)`` in pixels with exclusive ends, only for kind "box". The
  other fields only matter for "s3fd": ``pads`` ``(top, bottom, left, right)`` (default
  ``(0, 0, 0, 0)`` as Diff2Lip's ``generate.py``; Wav2Lip's data preparation uses
  ``(0, 10, 0, 0)``), ``smooth_window`` (frames averaged; <= 1 disables smoothing),
  ``no_face`` and ``detector_batch_size`` (frames per detector call).
  """
  kind: str = "voxceleb2"
  box: tuple[int, int, int, int] | None = None
  pads: tuple[int, int, int, int] = (0, 0, 0, 0)
  smooth_window: int = 5
  no_face: str = "error"
  detector_batch_size: int = 16

  def __post_init__(self):
    if self.kind not in CROP_KINDS:
      raise CropError(f"crop must be one of {CROP_KINDS}, got {self.kind!r}")
    if (self.kind == "box") != (self.box is not None):
      raise CropError("crop 'box' needs box=(x1, y1, x2, y2) and other crops take none")
    if self.box is not None:
      box = _int_tuple(self.box, "crop box")
      if not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
        raise CropError(f"crop box needs 0 <= x1 < x2 and 0 <= y1 < y2 (pixels, exclusive "
                        f"ends), got {box}")
      object.__setattr__(self, "box", box)
    object.__setattr__(self, "pads", _int_tuple(self.pads, "pads (top, bottom, left, right)"))
    if self.no_face not in NO_FACE_POLICIES:
      raise CropError(f"no_face must be one of {NO_FACE_POLICIES}, got {self.no_face!r}")
    if int(self.detector_batch_size) < 1:
      raise CropError(f"detector_batch_size must be >= 1, got {self.detector_batch_size}")

  @property
  def needs_detector(self) -> bool:
    return self.kind == "s3fd"

  @property
  def lookahead(self) -> int:
    """Frames past the last used one whose detections the box smoothing reads."""
    return max(int(self.smooth_window) - 1, 0) if self.kind == "s3fd" else 0


def parse_crop(words: str | Sequence[str], **fields: Any) -> CropSpec:
  """``"voxceleb2"``, ``"s3fd"`` or ``"box x1,y1,x2,y2"`` (a string or its words) -> CropSpec.

  ``fields`` are the other :class:`CropSpec` fields (pads, smooth_window, ...).
  """
  words = words.split() if isinstance(words, str) else list(words)
  if not words:
    raise CropError("empty crop; use voxceleb2, s3fd or box x1,y1,x2,y2")
  if words[0] == "box":
    numbers = [v for v in ",".join(words[1:]).split(",") if v.strip()]
    try:
      box = tuple(int(v) for v in numbers)
    except ValueError:
      box = ()
    if len(box) != 4:
      raise CropError(f"crop box needs four integers x1,y1,x2,y2 with 0 <= x1 < x2 and "
                      f"0 <= y1 < y2 (pixels, exclusive ends), got {' '.join(words[1:])!r}")
    return CropSpec("box", box=box, **fields)
  if len(words) != 1:
    raise CropError(f"crop {words[0]!r} takes no values, got {' '.join(words)!r}")
  return CropSpec(words[0], **fields)


def load_detector(spec: CropSpec, weights: str | None) -> Any:
  """The S3FD face detector a crop needs: None for fixed crops, else loaded from ``weights``.

  Raises CropError without ``weights`` (checkpoint errors come from
  ``FaceDetector.from_checkpoint``).
  """
  if not spec.needs_detector:
    return None
  if not weights:
    raise CropError("--crop s3fd needs --s3fd_weights s3fd.pth (the S3FD face detector "
                    "checkpoint, user-supplied); or use the voxceleb2 crop or a fixed box")
  from data_pipelines.face_detection import FaceDetector  # pylint: disable=import-outside-toplevel
  return FaceDetector.from_checkpoint(weights)


def frame_boxes(spec: CropSpec, frame_size: tuple[int, int], count: int,
                detections: Sequence[np.ndarray] | None = None, *, needed: int | None = None,
                source: str | None = None) -> np.ndarray:
  """``[count, 4]`` int64 ``(x1, y1, x2, y2)`` face box of each of ``count`` frames.

  Args:
    spec: the crop.
    frame_size: ``(height, width)`` of the video's frames.
    count: frames to return boxes for.
    detections: "s3fd" only: per-frame detector output ``[K, 5]`` (``FaceDetector.detect``)
      of the first frames of the video (at least ``needed``); frames after the last
      detection reuse its box.
    needed: "s3fd" only: frames that are really cropped (default: all detections). Later
      detections only feed the smoothing window, so a frame without a face there ends them
      instead of failing.
    source: the video's name, put in front of error messages.
  Raises:
    CropError: a box outside the frames, or "s3fd" without detections.
    face_detection.NoFaceError: frames without a face under ``no_face="error"`` (listed).
  """
  height, width = frame_size
  where = f"{source}: " if source else ""
  if spec.kind == "s3fd":
    return _detected_boxes(spec, frame_size, count, detections, needed, where)
  if spec.kind == "box":
    if spec.box[2] > width or spec.box[3] > height:
      raise CropError(f"{where}crop box {spec.box} lies outside the {width}x{height} frames "
                      "(x2 <= width, y2 <= height)")
    box = spec.box
  else:
    box = crops.voxceleb2_crop_box(height, width)
  return np.tile(np.asarray(box, np.int64), (count, 1))


def _detected_boxes(spec: CropSpec, frame_size: tuple[int, int], count: int,
                    detections: Sequence[np.ndarray] | None, needed: int | None,
                    where: str) -> np.ndarray:
  # Imported here: the face_detection package loads Flax, which fixed crops never need.
  from data_pipelines.face_detection import video_boxes  # pylint: disable=import-outside-toplevel
  if detections is None:
    raise CropError("crop s3fd needs the face detections of the video's frames")
  detections = list(detections)
  needed = len(detections) if needed is None else needed
  for t in range(needed, len(detections)):
    if len(detections[t]) == 0:
      detections = detections[:t]
      break
  try:
    boxes = video_boxes.boxes_from_detections(detections, frame_size, spec.pads,
                                              spec.smooth_window, spec.no_face)
  except video_boxes.NoFaceError as error:
    if not where:
      raise
    raise video_boxes.NoFaceError(f"{where}{error}") from error
  if len(boxes) < count:
    boxes = np.concatenate([boxes, np.repeat(boxes[-1:], count - len(boxes), 0)])
  return boxes[:count]
