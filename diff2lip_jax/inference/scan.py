"""First pass over a video: frame count at 25 fps, first frame, face detections, frame cache.

The video pipeline (``inference.lip_sync_video``) and ``evaluate`` (``--crop s3fd``) read a
video once with :func:`scan_video` before the frames are cropped: the per-frame boxes
(``data_pipelines.face_crops.frame_boxes``) need every detection of the smoothing window
ahead, and looping a video back and forth needs random access to its frames.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import tqdm

from data_pipelines import video_io
from data_pipelines.audio import VIDEO_FPS
from data_pipelines.face_crops import VOXCELEB2_PROBE_EVERY, VOXCELEB2_PROBES, CropSpec

SCAN_CHUNK = 64  # frames decoded (and detected) at a time


@dataclasses.dataclass
class VideoScan:
  """What :func:`scan_video` found.

  count: frames read (at 25 fps; at most ``max_frames``); height, width: frame size;
  first: uint8 ``[H, W, 3]`` first frame; detections: per-frame ``[K, 5]`` detector output
  (detector crops only, else None); cache: read-only uint8 ``[count, H, W, 3]`` memmap of the
  raw frames (only with a ``cache_dir``, else None); probes: ``(index, frame)`` of one frame a
  second (at most ``VOXCELEB2_PROBES``) for the "voxceleb2" crop's framing check, else empty.
  """
  count: int
  height: int
  width: int
  first: np.ndarray
  detections: list | None = None
  cache: np.ndarray | None = None
  probes: list = dataclasses.field(default_factory=list)

  @property
  def frame_size(self) -> tuple[int, int]:
    return self.height, self.width


def scan_video(video: str, crop: CropSpec, *, detector: Any = None, max_frames: int | None = None,
               cache_dir: str | None = None, progress: bool = False) -> VideoScan:
  """Reads ``video`` once (up to ``max_frames`` frames at 25 fps).

  Args:
    video: any video file (resampled to 25 fps by timestamp).
    crop: the crop; for detector crops every frame goes through ``detector.detect``.
    detector: a face detector (anything with ``.detect(frames, batch_size)``, e.g.
      ``face_detection.create_detector``), detector crops only.
    cache_dir: if given, the raw frames are written to ``cache_dir/frames.raw`` and mapped
      back as ``VideoScan.cache`` (the caller owns the directory).
  Raises:
    FileNotFoundError, video_io.MediaFileError: the video cannot be read.
  """
  if crop.needs_detector and detector is None:
    raise ValueError(f"crop {crop.kind} needs a face detector (face_crops.load_detector)")
  detections = [] if crop.needs_detector else None
  probes = []
  cache_path = os.path.join(cache_dir, "frames.raw") if cache_dir is not None else None
  first, count, cache_file = None, 0, None
  bar = tqdm.tqdm(total=max_frames, unit="frame", disable=not progress, leave=False,
                  desc="detect faces" if detections is not None else "scan video")
  try:
    for chunk in video_io.iter_video_chunks(video, fps=VIDEO_FPS, chunk_size=SCAN_CHUNK,
                                            max_frames=max_frames):
      if first is None:
        first = chunk[0].copy()
      if detections is not None:
        detections.extend(detector.detect(chunk, batch_size=crop.detector_batch_size))
      if cache_path is not None:
        cache_file = cache_file or open(cache_path, "wb")
        cache_file.write(np.ascontiguousarray(chunk).tobytes())
      if crop.kind == "voxceleb2":
        probes += [(count + i, chunk[i].copy()) for i in range(len(chunk))
                   if (count + i) % VOXCELEB2_PROBE_EVERY == 0][:VOXCELEB2_PROBES - len(probes)]
      count += len(chunk)
      bar.update(len(chunk))
  finally:
    bar.close()
    if cache_file is not None:
      cache_file.close()
  if first is None:
    raise video_io.MediaFileError(video, "has no video frames")
  height, width = first.shape[:2]
  cache = None
  if cache_path is not None:
    cache = np.memmap(cache_path, np.uint8, "r", shape=(count, height, width, 3))
  return VideoScan(count, height, width, first, detections, cache, probes)


def frame_at(video: str, scan: VideoScan, index: int) -> np.ndarray:
  """uint8 ``[H, W, 3]`` frame ``index`` (25 fps) of a scanned video (from its cache if any)."""
  if scan.cache is not None:
    return np.asarray(scan.cache[index])
  if index == 0:
    return scan.first
  last = None
  for chunk in video_io.iter_video_chunks(video, fps=VIDEO_FPS, chunk_size=SCAN_CHUNK,
                                          max_frames=index + 1):
    last = chunk[-1]
  return last
