"""Face tracks and 224x224 face crops the way joonson/syncnet_python's `run_pipeline` makes them.

Detection is not done here: give per-frame boxes from any detector (e.g. this project's S3FD,
`data_pipelines.face_detection`; syncnet_python runs S3FD at scale 0.25 with confidence 0.9).

`track_faces` (its `track_shot`): greedy IoU tracking inside one shot. Each pass starts a
track at the first unused detection and, frame by frame, appends a detection whose IoU with
the track's last box is above 0.5, as long as the gap to the track's last frame is at most
`num_failed_det` frames; the original removes used detections from the list it iterates
over, which skips the detection after each one taken; that is reproduced. Tracks longer than
`min_track` detections are linearly interpolated over missing frames and kept if their mean
width or height exceeds `min_face_size`.

`syncnet_crop_windows` / `syncnet_face_crops` (its `crop_video`): per frame, half-size
`s = max(w, h) / 2` and centre `(x, y)` of the box, each median-filtered over 13 frames
(`scipy.signal.medfilt`, zero-padded ends); the frame is padded with value 110 by
`int(s * (1 + 2*crop_scale))` and cut to rows `[y - s, y + s*(1 + 2*crop_scale))`, columns
`[x - s*(1 + crop_scale), x + s*(1 + crop_scale))` (padded coordinates, truncated to int),
then resized to 224x224 bilinearly (cv2 `INTER_LINEAR` semantics; cv2's fixed-point uint8
arithmetic can differ by 1 level). The original then writes an XVID video and decodes it
again, which is lossy and not reproduced. As in the original, the zero-padded median makes
the first and last frames of short tracks smaller (tracks under 7 frames get size 0, an
error here); `run_pipeline` only crops tracks of more than 100 frames.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import numpy as np
import scipy.signal

from data_pipelines import crops as crops_lib

CROP_SCALE = 0.4
CROP_SIZE = 224
PAD_VALUE = 110
SMOOTHING_KERNEL = 13
IOU_THRESHOLD = 0.5


@dataclasses.dataclass
class FaceTrack:
  """`frames [L]` int64 consecutive frame indices, `boxes [L, 4]` float64 (x1, y1, x2, y2)."""
  frames: np.ndarray
  boxes: np.ndarray


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """IoU of two (x1, y1, x2, y2) boxes, continuous coordinates (no +1), as run_pipeline."""
  inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / float(union)


def _one_track(remaining: list[list[int]], detections: list[np.ndarray], num_failed_det: int,
               iou_threshold: float) -> list[tuple[int, int]]:
  """One greedy pass; removes the (frame, detection) pairs it takes from `remaining`."""
  track: list[tuple[int, int]] = []
  for frame, faces in enumerate(remaining):
    pos = 0
    while pos < len(faces):
      det = faces[pos]
      if track and frame - track[-1][0] > num_failed_det:
        break
      if not track or box_iou(detections[frame][det], detections[track[-1][0]][track[-1][1]]
                              ) > iou_threshold:
        track.append((frame, det))
        faces.pop(pos)   # the original's list.remove while iterating: the next face is skipped
      pos += 1
  return track


def track_faces(detections: Sequence[np.ndarray], *, min_track: int = 100,
                num_failed_det: int = 25, min_face_size: float = 100,
                iou_threshold: float = IOU_THRESHOLD, first_frame: int = 0) -> list[FaceTrack]:
  """Face tracks of one shot (syncnet_python `track_shot`).

  Args:
    detections: per frame of the shot, `[K, 4+]` boxes (x1, y1, x2, y2[, score]) in pixels
      (K may be 0), in the detector's order.
    min_track: tracks need more than this many detections.
    num_failed_det: largest frame gap bridged inside a track.
    min_face_size: kept tracks have mean width or mean height above this (pixels).
    first_frame: frame index of `detections[0]` in the video (added to `FaceTrack.frames`).
  Returns:
    the tracks in the order the original finds them.
  """
  dets = []
  for i, d in enumerate(detections):
    d = np.asarray(d, np.float64).reshape(-1, np.shape(d)[-1] if np.size(d) else 4)
    if d.shape[1] < 4:
      raise ValueError(f"detections of frame {i} must be [K, 4+] boxes, got {d.shape}")
    dets.append(d[:, :4])
  remaining = [list(range(len(d))) for d in dets]
  tracks = []
  while True:
    track = _one_track(remaining, dets, num_failed_det, iou_threshold)
    if not track:
      return tracks
    if len(track) <= min_track:
      continue
    frames = np.array([f for f, _ in track], np.float64)
    boxes = np.stack([dets[f][k] for f, k in track])
    dense = np.arange(frames[0], frames[-1] + 1)
    dense_boxes = np.stack([np.interp(dense, frames, boxes[:, j]) for j in range(4)], axis=1)
    size = max(np.mean(dense_boxes[:, 2] - dense_boxes[:, 0]),
               np.mean(dense_boxes[:, 3] - dense_boxes[:, 1]))
    if size > min_face_size:
      tracks.append(FaceTrack(dense.astype(np.int64) + first_frame, dense_boxes))


def smoothed_track_geometry(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Median-filtered `(size, centre_x, centre_y)`, each `[T]` float64, of `[T, 4]` boxes."""
  boxes = np.asarray(boxes, np.float64)
  if boxes.ndim != 2 or boxes.shape[1] < 4 or not len(boxes):
    raise ValueError(f"boxes must be [T, 4] (x1, y1, x2, y2), got {boxes.shape}")
  size = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
  centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
  centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
  with warnings.catch_warnings():   # tracks shorter than the kernel: zero-padded, as the original
    warnings.simplefilter("ignore", UserWarning)
    return tuple(scipy.signal.medfilt(v, kernel_size=SMOOTHING_KERNEL)
                 for v in (size, centre_x, centre_y))


def syncnet_crop_windows(boxes: np.ndarray, crop_scale: float = CROP_SCALE) -> np.ndarray:
  """`[T, 5]` int64 `(pad, row0, row1, col0, col1)` per frame: the pad width and the crop in
  coordinates of the padded frame (ends exclusive, before clipping to the padded frame)."""
  size, centre_x, centre_y = smoothed_track_geometry(boxes)
  out = np.empty((len(size), 5), np.int64)
  for i, (s, x, y) in enumerate(zip(size, centre_x, centre_y)):
    pad = int(s * (1 + 2 * crop_scale))
    my, mx = y + pad, x + pad
    out[i] = (pad, int(my - s), int(my + s * (1 + 2 * crop_scale)),
              int(mx - s * (1 + crop_scale)), int(mx + s * (1 + crop_scale)))
  return out


def syncnet_face_crops(frames: np.ndarray, boxes: np.ndarray, crop_scale: float = CROP_SCALE,
                       size: int = CROP_SIZE) -> np.ndarray:
  """syncnet_python's face crops of one track.

  Args:
    frames: `[T, H, W, 3]` uint8 frames of the track (any channel order; kept).
    boxes: `[T, 4]` (x1, y1, x2, y2) per frame (e.g. `FaceTrack.boxes`).
  Returns:
    `[T, size, size, 3]` uint8.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or len(frames) != len(boxes):
    raise ValueError(f"frames must be [T, H, W, C] with one box per frame; got {frames.shape} "
                     f"and {np.shape(boxes)} boxes")
  height, width = frames.shape[1:3]
  out = np.empty((len(frames), size, size, frames.shape[3]), np.uint8)
  for t, (pad, r0, r1, c0, c1) in enumerate(syncnet_crop_windows(boxes, crop_scale)):
    # Padded frame: [height + 2*pad, width + 2*pad]; slices clip at its end like numpy's.
    r1, c1 = min(r1, height + 2 * pad), min(c1, width + 2 * pad)
    if r0 < 0 or c0 < 0 or r1 <= r0 or c1 <= c0:
      raise ValueError(f"frame {t}: the face box {np.asarray(boxes)[t].tolist()} gives an empty "
                       "or out-of-frame crop; check the track's boxes")
    region = np.full((r1 - r0, c1 - c0, frames.shape[3]), PAD_VALUE, frames.dtype)
    src_r0, src_r1 = max(r0 - pad, 0), min(r1 - pad, height)
    src_c0, src_c1 = max(c0 - pad, 0), min(c1 - pad, width)
    if src_r1 > src_r0 and src_c1 > src_c0:
      region[src_r0 + pad - r0:src_r1 + pad - r0, src_c0 + pad - c0:src_c1 + pad - c0] = \
          frames[t, src_r0:src_r1, src_c0:src_c1]
    resized = crops_lib.resize_image(region, size, size, "bilinear")
    out[t] = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
  return out
