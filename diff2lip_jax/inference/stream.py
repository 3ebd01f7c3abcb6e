"""Streaming stages of the video pipeline: frame plan, chunk sources, overlap, paste and encode.

``lip_sync_video`` chains them: :class:`FramePlan` says which source frame (and face box) each
output frame shows; :meth:`FramePlan.chunks` decodes the frames chunk by chunk;
:func:`overlapped` keeps the device sampling one chunk while the host pastes the previous one;
:func:`encode` writes the pasted frames with the audio. :func:`in_background` runs decoding
and encoding on worker threads (PyAV, x264 and BLAS release the GIL, so they overlap).
Only the audio and the per-frame boxes are held whole; frames never are.
"""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines import face_crops, video_io
from data_pipelines.audio import VIDEO_FPS
from diff2lip_jax.inference.scan import VideoScan

AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def pingpong_index(k: np.ndarray | int, length: int) -> np.ndarray:
  """Source frame of output frame k when a video of ``length`` frames plays 0..n-1, n-2..1, ..."""
  k = np.asarray(k)
  if length <= 1:
    return np.zeros_like(k)
  period = 2 * (length - 1)
  m = k % period
  return np.where(m < length, m, period - m)


@dataclasses.dataclass
class FramePlan:
  """Output frames ``0..total-1`` and the source frame and face box each one shows.

  boxes: ``[scan.count, 4]`` face box of each source frame; looped: the video plays back and
  forth (:func:`pingpong_index`) because the audio is longer; found: ``[scan.count]`` bool,
  False for source frames without a face (``no_face="passthrough"``: written unchanged).
  """
  video: str
  scan: VideoScan
  boxes: np.ndarray
  total: int
  looped: bool
  found: np.ndarray | None = None

  def __post_init__(self):
    if self.found is None:
      self.found = np.ones(len(self.boxes), bool)

  @classmethod
  def create(cls, video: str, scan: VideoScan, crop: face_crops.CropSpec, audio_frames: int,
             loop_video: bool) -> "FramePlan":
    """As many frames as the audio covers, or as the video has unless ``loop_video``."""
    total = audio_frames if loop_video else min(scan.count, audio_frames)
    boxes, found = face_crops.frame_boxes_and_found(
        crop, scan.frame_size, scan.count, scan.detections, needed=min(total, scan.count),
        source=video)
    return cls(video, scan, boxes, total, total > scan.count, found)

  def source(self, k: np.ndarray | int) -> np.ndarray:
    """Source frame index (int64) of output frame(s) ``k``."""
    return pingpong_index(k, self.scan.count) if self.looped else np.asarray(k)

  @property
  def passed_through(self) -> int:
    """Output frames whose source frame has no face (written unchanged in cross mode)."""
    return int(np.count_nonzero(~self.found[self.source(np.arange(self.total))]))

  def nearest_face(self, src: int) -> int:
    """``src`` if that source frame has a face, else the closest one that has."""
    faces = np.flatnonzero(self.found)
    return int(faces[np.argmin(np.abs(faces - src))])

  def chunks(self, batch: int, pixels: bool = True) -> Iterator[tuple[np.ndarray, Any]]:
    """``(ks, frames)`` for consecutive output frames ``ks`` (at most ``batch``).

    ``frames`` is uint8 ``[len(ks), H, W, 3]`` (from the frame cache of a looped video, else
    decoded again), or None when ``pixels`` is False (nothing is decoded).
    """
    if not pixels or self.scan.cache is not None:
      for start in range(0, self.total, batch):
        ks = np.arange(start, min(start + batch, self.total))
        yield ks, np.asarray(self.scan.cache[self.source(ks)]) if pixels else None
      return
    start = 0
    for chunk in video_io.iter_video_chunks(self.video, fps=VIDEO_FPS, chunk_size=batch,
                                            max_frames=self.total):
      yield np.arange(start, start + len(chunk)), chunk
      start += len(chunk)
    if start < self.total:
      raise video_io.MediaFileError(self.video, f"gave {start} frames on the second read, "
                                    f"{self.total} on the first; the file changed meanwhile")


def in_background(items: Iterable, depth: int = 2) -> Iterator:
  """Yields ``items`` computed by a worker thread up to ``depth`` ahead; re-raises its errors.

  Closing the iterator (or leaving the loop) stops and joins the worker.
  """
  slots: queue.Queue = queue.Queue(maxsize=depth)
  stop, done = threading.Event(), object()

  def put(entry) -> bool:
    while not stop.is_set():
      try:
        slots.put(entry, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def work():
    try:
      for item in items:
        if not put((item, None)):
          return
      put((done, None))
    except BaseException as error:  # noqa: BLE001 - handed to the consumer
      put((done, error))

  worker = threading.Thread(target=work, daemon=True)
  worker.start()
  try:
    while True:
      item, error = slots.get()
      if item is done:
        if error is not None:
          raise error
        return
      yield item
  finally:
    stop.set()
    worker.join()


def overlapped(items: Iterable[tuple], start: Callable[..., Any],
               finish: Callable[[Any], Any]) -> Iterator:
  """``finish(start(*item))`` for each item, starting item i+1 before finishing item i.

  ``start`` dispatches device work (``Diff2LipSampler.submit``) and returns at once, so the
  device samples the next chunk while ``finish`` pastes the previous one; ``items`` are
  produced ahead on a worker thread.
  """
  pending = None
  for item in in_background(items):
    job = start(*item)
    if pending is not None:
      yield finish(pending)
    pending = job
  if pending is not None:
    yield finish(pending)


def output_audio(samples: np.ndarray, rate: int, num_frames: int) -> tuple[np.ndarray, int]:
  """The driving audio ``[n]`` or ``[n, channels]`` cut to ``num_frames`` frames (25 fps), at a
  rate AAC takes; more than two channels are mixed down to mono (the writer takes 1 or 2)."""
  if samples.ndim == 2 and samples.shape[1] > 2:
    samples = samples.mean(axis=1, dtype=np.float32)
  if rate not in AAC_RATES:
    samples, rate = audio_lib.resample(samples, rate, 48000), 48000
  return samples[:int(round(num_frames * rate / VIDEO_FPS))], rate


def encode(out: str | os.PathLike, chunks: Iterable[np.ndarray], samples: np.ndarray, rate: int,
           num_frames: int, crf: int = 18, preset: str = "medium") -> None:
  """Writes ``chunks`` (uint8 ``[n, H, W, 3]`` each, ``num_frames`` in all) as a 25 fps mp4.

  The chunks are produced on a worker thread while this one encodes; the audio is cut to
  the frames. The file appears only when complete.
  """
  def frames() -> Iterator[np.ndarray]:
    for chunk in in_background(chunks):
      yield from chunk

  out_audio, out_rate = output_audio(samples, rate, num_frames)
  video_io.write_video(out, frames(), fps=VIDEO_FPS, audio=out_audio, audio_sr=out_rate,
                       crf=crf, preset=preset)
