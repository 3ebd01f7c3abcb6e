"""One person's face through a video: detections linked into tracks by box overlap.

The reference takes the best-scoring detection of every frame, which jumps between people when
several faces are visible (and onto any false positive that outscores the face once). Here:

1. Detections are linked frame to frame into tracks: a detection continues the track whose last
   box it overlaps most (IoU >= `iou_threshold`), also across up to `max_gap` frames without a
   match (blinks, motion blur, a hand in front of the face).
2. The main track is the most prominent one: the largest sum of box areas over its frames, i.e.
   the largest face, weighted by how long it is seen.
3. Tracks that lie entirely outside the time spans already chosen and last at least
   `min_frames` frames are added in order of prominence (a shot change to another framing or
   another speaker). A track that overlaps a chosen track in time is never used, so the result
   never switches between two people who are on screen together.

Frames of no chosen track have no face; the caller's no-face policy decides what to do there.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of `[K, 4]` and `[M, 4]` (x1, y1, x2, y2) continuous boxes -> `[K, M]`."""
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]),
              0, None)
  h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]),
              0, None)
  inter = w * h
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclasses.dataclass
class Track:
  """Detections of one face: frame index -> box `[4]` (x1, y1, x2, y2)."""
  boxes: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

  @property
  def first(self) -> int:
    return min(self.boxes)

  @property
  def last(self) -> int:
    return max(self.boxes)

  @property
  def prominence(self) -> float:
    """Sum of the box areas in pixels^2."""
    return float(sum((b[2] - b[0]) * (b[3] - b[1]) for b in self.boxes.values()))


def link_tracks(detections: Sequence[np.ndarray], iou_threshold: float = 0.3,
                max_gap: int = 12) -> list[Track]:
  """Greedy frame-to-frame linking of detections `T x [K, 5]` into tracks.

  In each frame the (track, detection) pairs are matched in order of decreasing IoU between the
  detection and the track's last box; a track not matched for more than `max_gap` frames ends.
  """
  tracks: list[Track] = []
  for t, dets in enumerate(detections):
    dets = np.asarray(dets, np.float64).reshape(-1, 5)
    if not len(dets):
      continue
    alive = [k for k, track in enumerate(tracks) if t - track.last <= max_gap + 1]
    used_tracks, used_dets = set(), set()
    if alive:
      iou = box_iou(np.stack([tracks[k].boxes[tracks[k].last] for k in alive]), dets[:, :4])
      for flat in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat, iou.shape)
        if iou[i, j] < iou_threshold:
          break
        if i in used_tracks or j in used_dets:
          continue
        tracks[alive[i]].boxes[t] = dets[j, :4]
        used_tracks.add(i)
        used_dets.add(j)
    for j in range(len(dets)):
      if j not in used_dets:
        tracks.append(Track({t: dets[j, :4]}))
  return tracks


def select_face_track(detections: Sequence[np.ndarray], iou_threshold: float = 0.3,
                      max_gap: int = 12, min_frames: int = 3) -> tuple[np.ndarray, np.ndarray]:
  """The face to lip-sync in every frame (see the module docstring).

  Args:
    detections: T arrays `[K, 5]` (x1, y1, x2, y2, score) in pixels, any order.
    iou_threshold: minimum overlap of a detection with a track's last box to continue it.
    max_gap: frames a track may go undetected and still be continued.
    min_frames: shortest track added after the main one (filters one-frame false positives).
  Returns:
    boxes `[T, 4]` float32 (rows of frames without the face are -1) and found `[T]` bool.
  """
  num_frames = len(detections)
  boxes = np.full((num_frames, 4), -1, np.float32)
  found = np.zeros(num_frames, bool)
  tracks = sorted(link_tracks(detections, iou_threshold, max_gap),
                  key=lambda track: track.prominence, reverse=True)
  spans: list[tuple[int, int]] = []
  for track in tracks:
    if spans:
      if len(track.boxes) < min_frames:
        continue
      if any(track.first <= end and track.last >= start for start, end in spans):
        continue
    spans.append((track.first, track.last))
    for t, box in track.boxes.items():
      boxes[t] = box
      found[t] = True
  return boxes, found
