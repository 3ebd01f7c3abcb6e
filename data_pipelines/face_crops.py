"""Where the face is in full frames: the crop specification and the per-frame boxes it gives.

One owner for data preparation (``prepare``), inference (``diff2lip_jax.inference``) and
evaluation (``diff2lip_jax.evaluate``). A :class:`CropSpec` names one of these crops:

  "auto"       face detection (``face_detection.create_detector``): S3FD when its weights are
               found (argument, ``DIFF2LIP_S3FD_WEIGHTS``, ``~/.cache/diff2lip/s3fd.pth``), else
               dlib's bundled HOG detector with boxes mapped to S3FD's convention;
  "s3fd"/"hog" that detector only; detections are grown by ``pads`` ``(top, bottom, left,
               right)``, smoothed over ``smooth_window`` frames, frames without a face handled
               by ``no_face`` ("error" | "passthrough" | "nearest" | "interpolate");
  "voxceleb2"  the reference's fixed crop of VoxCeleb2 frames (``crops.voxceleb2_crop_box``;
               :func:`framing_warning` says when frames do not look like that framing);
  "box"        one user box ``(x1, y1, x2, y2)`` for every frame.

``aspect`` "squash" (the reference, and the training data) resizes the box as it is; "pad"
grows it to a square first (``crops.square_boxes``) so the face keeps its shape.

:func:`frame_boxes_and_found` turns a spec (plus, for detector crops, the detections of a pass
over the video) into ``[T, 4]`` int64 boxes with exclusive ends, as ``crops.crop_and_resize``
(``allow_outside=True`` for "pad") and ``crops.paste_back`` take them, and ``found [T]``:
under "passthrough" frames without the face get a neighbour's box (so they can still serve as
inputs) but ``found`` False, and the video pipeline writes them unchanged. Errors are
:class:`CropError` (a ``ValueError``) or ``face_detection.NoFaceError`` (also a ``ValueError``),
with messages that say what to change.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from data_pipelines import crops

DETECTOR_CROPS = ("auto", "s3fd", "hog")
CROP_KINDS = DETECTOR_CROPS + ("voxceleb2", "box")
NO_FACE_POLICIES = ("error", "passthrough", "nearest", "interpolate")
ASPECTS = ("squash", "pad")


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
  other fields only matter for the detector crops: ``pads`` ``(top, bottom, left, right)`` (default
  ``(0, 0, 0, 0)`` as Diff2Lip's ``generate.py``; Wav2Lip's data preparation uses
  ``(0, 10, 0, 0)``), ``smooth_window`` (frames averaged; <= 1 disables smoothing),
  ``no_face`` and ``detector_batch_size`` (frames per detector call). ``aspect``: "squash"
  (the reference) or "pad" (square boxes, see the module docstring).
  """
  kind: str = "voxceleb2"
  box: tuple[int, int, int, int] | None = None
  pads: tuple[int, int, int, int] = (0, 0, 0, 0)
  smooth_window: int = 5
  no_face: str = "error"
  detector_batch_size: int = 16
  aspect: str = "squash"

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
    if self.aspect not in ASPECTS:
      raise CropError(f"aspect must be one of {ASPECTS}, got {self.aspect!r}")
    if int(self.detector_batch_size) < 1:
      raise CropError(f"detector_batch_size must be >= 1, got {self.detector_batch_size}")

  @property
  def needs_detector(self) -> bool:
    return self.kind in DETECTOR_CROPS

  @property
  def lookahead(self) -> int:
    """Frames past the last used one whose detections the box smoothing reads."""
    return max(int(self.smooth_window) - 1, 0) if self.needs_detector else 0


def parse_crop(words: str | Sequence[str], **fields: Any) -> CropSpec:
  """``"auto"``, ``"hog"``, ``"s3fd"``, ``"voxceleb2"`` or ``"box x1,y1,x2,y2"`` -> CropSpec.

  ``words``: a string or a list of words (each may itself hold spaces, e.g. the one shell word
  ``'box 1,2,3,4'``). ``fields`` are the other :class:`CropSpec` fields (pads, ...).
  """
  words = " ".join([words] if isinstance(words, str) else list(words)).split()
  if not words:
    raise CropError("empty crop; use auto, hog, s3fd, voxceleb2 or box X1,Y1,X2,Y2")
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


def load_detector(spec: CropSpec, weights: str | None = None) -> Any:
  """The face detector a crop needs (``face_detection.create_detector``), None for fixed crops.

  ``weights``: S3FD checkpoint (else the environment variable / default path; "auto" falls
  back to dlib's HOG detector). Raises CropError when the detector cannot be built (no S3FD
  weights for "s3fd", dlib missing for "hog"); checkpoint errors come from
  ``FaceDetector.from_checkpoint``.
  """
  if not spec.needs_detector:
    return None
  # Imported here: the face_detection package loads Flax, which fixed crops never need.
  from data_pipelines import face_detection  # pylint: disable=import-outside-toplevel
  try:
    return face_detection.create_detector(spec.kind, weights)
  except face_detection.DetectorUnavailableError as error:
    raise CropError(f"--crop {spec.kind}: {error}") from None


def frame_boxes(spec: CropSpec, frame_size: tuple[int, int], count: int,
                detections: Sequence[np.ndarray] | None = None, *, needed: int | None = None,
                source: str | None = None) -> np.ndarray:
  """``[count, 4]`` int64 face boxes: :func:`frame_boxes_and_found` without ``found``."""
  return frame_boxes_and_found(spec, frame_size, count, detections, needed=needed,
                               source=source)[0]


def frame_boxes_and_found(spec: CropSpec, frame_size: tuple[int, int], count: int,
                          detections: Sequence[np.ndarray] | None = None, *,
                          needed: int | None = None,
                          source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``[count, 4]`` int64 ``(x1, y1, x2, y2)`` face box of each of ``count`` frames, and
  ``found [count]`` bool (False: no face there, the box is a neighbour's, "passthrough" only).

  Args:
    spec: the crop (``aspect`` "pad" returns square boxes, which may reach past the frame).
    frame_size: ``(height, width)`` of the video's frames.
    count: frames to return boxes for.
    detections: detector crops only: per-frame detector output ``[K, 5]`` of the first frames
      of the video (at least ``needed``); frames after the last detection reuse its box.
    needed: detector crops only: frames that are really cropped (default: all detections).
      Later detections only feed the smoothing window, so a frame without a face there ends
      them instead of failing.
    source: the video's name, put in front of error messages.
  Raises:
    CropError: a box outside the frames, or a detector crop without detections.
    face_detection.NoFaceError: frames without a face under ``no_face="error"`` (listed), or
      no face in any frame.
  """
  height, width = frame_size
  where = f"{source}: " if source else ""
  found = np.ones(count, bool)
  if spec.needs_detector:
    boxes, found = _detected_boxes(spec, frame_size, count, detections, needed, where)
  elif spec.kind == "box":
    if spec.box[2] > width or spec.box[3] > height:
      raise CropError(f"{where}crop box {spec.box} lies outside the {width}x{height} frames "
                      "(x2 <= width, y2 <= height)")
    boxes = np.tile(np.asarray(spec.box, np.int64), (count, 1))
  else:
    boxes = np.tile(np.asarray(crops.voxceleb2_crop_box(height, width), np.int64), (count, 1))
  if spec.aspect == "pad":
    boxes = crops.square_boxes(boxes, frame_size)
  return boxes, found


def _detected_boxes(spec: CropSpec, frame_size: tuple[int, int], count: int,
                    detections: Sequence[np.ndarray] | None, needed: int | None,
                    where: str) -> tuple[np.ndarray, np.ndarray]:
  from data_pipelines.face_detection import video_boxes  # pylint: disable=import-outside-toplevel
  if detections is None:
    raise CropError(f"crop {spec.kind} needs the face detections of the video's frames")
  detections = list(detections)
  needed = len(detections) if needed is None else needed
  for t in range(needed, len(detections)):
    if len(detections[t]) == 0:
      detections = detections[:t]
      break
  if not any(len(d) for d in detections):
    raise video_boxes.NoFaceError(
        f"{where}no face detected in any of the {len(detections)} frames (detector: "
        f"{spec.kind}); if the face is there but not found, place the crop yourself with "
        "--crop box X1,Y1,X2,Y2 (or --crop voxceleb2 for VoxCeleb2-framed video)")
  try:
    boxes, found = video_boxes.face_boxes_and_found(detections, frame_size, spec.pads,
                                                    spec.smooth_window, spec.no_face)
  except video_boxes.NoFaceError as error:
    if not where:
      raise
    raise video_boxes.NoFaceError(f"{where}{error}") from error
  if not found.all() and spec.no_face == "passthrough":
    # Frames written unchanged still get a box: reconstruction mode and a fixed reference may
    # crop them (their padded, smoothed neighbour's).
    boxes = video_boxes.fill_missing_boxes(boxes, found, "nearest")
  if len(boxes) < count:
    extra = count - len(boxes)
    boxes = np.concatenate([boxes, np.repeat(boxes[-1:], extra, 0)])
    found = np.concatenate([found, np.repeat(found[-1:], extra)])
  return boxes[:count], found[:count]


VOXCELEB2_PROBE_EVERY = 25  # the framing check looks at one frame a second ...
VOXCELEB2_PROBES = 8        # ... and at most this many


def framing_warning(probes: Sequence[tuple[int, np.ndarray]], detector: Any = None,
                    source: str | None = None) -> str | None:
  """Why frames do not look like VoxCeleb2's framing (for the fixed "voxceleb2" crop), or None.

  VoxCeleb2 frames are square (224x224) with one face filling the middle, which is what the
  fixed crop assumes. Flagged: a frame aspect ratio outside [0.8, 1.25]; and with a
  ``detector`` (anything with ``detect``; e.g. the cheap HOG one), probe frames where no face
  is found, where the largest face's centre lies outside the middle half (columns) / middle
  60 % (rows) of the fixed box, or where its width is not 0.4-1.5 times the box's.

  Args:
    probes: ``(frame index, uint8 [H, W, 3] frame)`` pairs (``VideoScan.probes``).
  Returns:
    one message naming the frames, or None.
  """
  if not probes:
    return None
  height, width = probes[0][1].shape[:2]
  problems = []
  if not 0.8 <= width / height <= 1.25:
    problems.append(f"the frames are {width}x{height} (VoxCeleb2's are square, 224x224)")
  if detector is not None:
    x1, y1, x2, y2 = crops.voxceleb2_crop_box(height, width)
    box_w, box_h = x2 - x1, y2 - y1
    detections = detector.detect(np.stack([frame for _, frame in probes]))
    bad = []
    for (index, _), dets in zip(probes, detections):
      dets = np.asarray(dets)
      if len(dets) == 0:
        bad.append(f"{index} (no face)")
        continue
      fx1, fy1, fx2, fy2 = dets[np.argmax((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])),
                                :4]
      cx, cy = (fx1 + fx2) / 2, (fy1 + fy2) / 2
      if not (x1 + box_w / 4 <= cx <= x2 - box_w / 4 and y1 + 0.2 * box_h <= cy <= y2 - 0.2 * box_h):
        bad.append(f"{index} (face at x {fx1:.0f}-{fx2:.0f}, y {fy1:.0f}-{fy2:.0f}, off the "
                   f"crop's middle)")
      elif not 0.4 <= (fx2 - fx1) / box_w <= 1.5:
        bad.append(f"{index} (face {fx2 - fx1:.0f} px wide, crop {box_w} px)")
    if bad:
      problems.append(f"in frames {', '.join(bad)} the face does not fill the fixed crop "
                      f"x {x1}-{x2}, y {y1}-{y2}")
  if not problems:
    return None
  where = f"{source}: " if source else ""
  return (f"{where}--crop voxceleb2 expects VoxCeleb2 framing (a square frame filled by one "
          f"centred face), but {'; '.join(problems)}. The fixed crop may miss the face; "
          "--crop auto finds it.")
