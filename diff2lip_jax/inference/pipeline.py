"""Video + audio -> lip-synced mp4, streamed in chunks with bounded memory.

Used through ``diff2lip_jax.inference`` (``inference.lip_sync_video``). Two passes over the
video: a scan (frame count at 25 fps, first frame, S3FD detections, and for ``loop_video`` a
raw-frame cache on disk), then decode -> crop -> sample -> paste -> encode chunk by chunk,
with the device sampling one chunk while the host pastes and encodes the previous one.
Only the audio (and per-frame boxes) is held whole; frames never are.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import queue
import random
import tempfile
import threading
import time
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import tqdm

from data_pipelines import audio as audio_lib
from data_pipelines import crops, video_io
from data_pipelines.face_detection import video_boxes
from diff2lip_jax.inference.sampler import InferenceInputError

FPS = 25.0
MODES = ("cross", "reconstruction")
REF_FRAMES = ("gt", "first_frame", "random")
CROP_KINDS = ("voxceleb2", "box", "s3fd")
PASTE_MODES = ("lower_half", "box")
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def _input_error(message: str) -> ValueError:
  return InferenceInputError(message)


@dataclasses.dataclass(frozen=True)
class CropSpec:
  """How face crops are taken from full frames.

  kind: "voxceleb2" (the reference's fixed crop of VoxCeleb2 frames), "box" (one user box
  ``(x1, y1, x2, y2)`` for every frame) or "s3fd" (S3FD detections, pads
  ``(top, bottom, left, right)``, temporal smoothing, ``no_face`` policy "error" | "nearest" |
  "interpolate").
  """
  kind: str = "voxceleb2"
  box: tuple[int, int, int, int] | None = None
  pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # Diff2Lip's generate.py default
  smooth_window: int = 5
  no_face: str = "error"
  detector_batch_size: int = 16

  def __post_init__(self):
    if self.kind not in CROP_KINDS:
      raise _input_error(f"crop must be one of {CROP_KINDS}, got {self.kind!r}")
    if (self.kind == "box") != (self.box is not None):
      raise _input_error("crop 'box' needs box=(x1, y1, x2, y2) and other crops take none")
    if self.no_face not in ("error", "nearest", "interpolate"):
      raise _input_error(f"no_face must be error, nearest or interpolate, got {self.no_face!r}")


def parse_crop(words: str | Sequence[str], **kwargs: Any) -> CropSpec:
  """``"voxceleb2"``, ``"s3fd"`` or ``"box x1,y1,x2,y2"`` (a string or its words)."""
  words = words.split() if isinstance(words, str) else list(words)
  if not words:
    raise _input_error("empty crop; use voxceleb2, s3fd or box x1,y1,x2,y2")
  if words[0] == "box":
    numbers = ",".join(words[1:]).replace(",,", ",").strip(",").split(",")
    try:
      box = tuple(int(v) for v in numbers if v.strip())
    except ValueError:
      box = ()
    if len(box) != 4 or not (0 <= box[0] < box[2] and 0 <= box[1] < box[3]):
      raise _input_error(f"crop box needs four integers x1,y1,x2,y2 with 0 <= x1 < x2 and "
                         f"0 <= y1 < y2 (pixels, exclusive ends), got {' '.join(words[1:])!r}")
    return CropSpec("box", box=box, **kwargs)
  if len(words) != 1:
    raise _input_error(f"crop {words[0]!r} takes no values, got {' '.join(words)!r}")
  return CropSpec(words[0], **kwargs)


def pingpong_index(k: np.ndarray | int, length: int) -> np.ndarray:
  """Source frame of output frame k when a video of ``length`` frames plays 0..n-1, n-2..1, ..."""
  k = np.asarray(k)
  if length <= 1:
    return np.zeros_like(k)
  period = 2 * (length - 1)
  m = k % period
  return np.where(m < length, m, period - m)


@dataclasses.dataclass
class LipSyncResult:
  """What :func:`lip_sync_video` wrote and how long it took."""
  out_path: str
  num_frames: int          # frames written (25 fps)
  video_frames: int        # frames of the input video at 25 fps (counted up to what was needed)
  audio_frames: int        # frames the audio covers (frames with a full mel window)
  looped: bool             # the video was played back and forth to cover the audio
  frame_size: tuple[int, int]  # input (height, width); the file is even-padded
  ref_index: int | None    # frame used as reference (None for "gt")
  seconds: float
  frames_per_second: float


@dataclasses.dataclass
class _Scan:
  count: int
  height: int
  width: int
  first: np.ndarray
  detections: list | None
  cache: np.ndarray | None


def _scan(video: str, max_frames: int | None, detector, crop: CropSpec, cache_dir: str | None,
          progress: bool) -> _Scan:
  """First pass: frame count, first frame, detections, optional raw frame cache."""
  detections = [] if crop.kind == "s3fd" else None
  cache_file = None
  info = video_io.VideoInfo(video, 0, 0, FPS, None, None, None, False, None)
  first = None
  count = 0
  bar = tqdm.tqdm(total=max_frames, unit="frame", desc="detect faces" if detections is not None
                  else "scan video", disable=not progress, leave=False)
  try:
    for chunk in video_io.iter_video_chunks(video, fps=FPS, chunk_size=64, max_frames=max_frames,
                                            info_out=info):
      if first is None:
        first = chunk[0].copy()
      if detections is not None:
        detections.extend(detector.detect(chunk, batch_size=crop.detector_batch_size))
      if cache_dir is not None:
        if cache_file is None:
          cache_file = open(os.path.join(cache_dir, "frames.raw"), "wb")
        cache_file.write(np.ascontiguousarray(chunk).tobytes())
      count += len(chunk)
      bar.update(len(chunk))
  finally:
    bar.close()
    if cache_file is not None:
      cache_file.close()
  height, width = first.shape[:2]
  cache = None
  if cache_dir is not None:
    cache = np.memmap(os.path.join(cache_dir, "frames.raw"), np.uint8, "r",
                      shape=(count, height, width, 3))
  return _Scan(count, height, width, first, detections, cache)


def _frame_boxes(scan: _Scan, crop: CropSpec, needed: int, video: str) -> np.ndarray:
  """``[scan.count, 4]`` (x1, y1, x2, y2) per source frame (only ``needed`` are used)."""
  h, w = scan.height, scan.width
  if crop.kind == "voxceleb2":
    return np.tile(np.asarray(crops.voxceleb2_crop_box(h, w), np.int64), (scan.count, 1))
  if crop.kind == "box":
    x1, y1, x2, y2 = crop.box
    if x2 > w or y2 > h:
      raise _input_error(f"{video}: crop box {crop.box} lies outside the {w}x{h} frames "
                         "(x2 <= width, y2 <= height)")
    return np.tile(np.asarray(crop.box, np.int64), (scan.count, 1))
  dets = scan.detections
  # Look-ahead frames past the last needed one only serve the smoothing window: cut them at
  # the first one without a face rather than failing on a frame that is never written.
  for t in range(needed, len(dets)):
    if len(dets[t]) == 0:
      dets = dets[:t]
      break
  try:
    boxes = video_boxes.boxes_from_detections(dets, (h, w), crop.pads, crop.smooth_window,
                                              crop.no_face)
  except video_boxes.NoFaceError as error:
    raise video_boxes.NoFaceError(f"{video}: {error}") from error
  if len(boxes) < scan.count:
    boxes = np.concatenate([boxes, np.repeat(boxes[-1:], scan.count - len(boxes), 0)])
  return boxes


def _crop(frames: np.ndarray, boxes: np.ndarray, size: int, method: str) -> np.ndarray:
  out = crops.crop_and_resize(frames, boxes, size=size, method=method)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _frame_at(video: str, scan: _Scan, index: int) -> np.ndarray:
  if scan.cache is not None:
    return np.asarray(scan.cache[index])
  if index == 0:
    return scan.first
  last = None
  for chunk in video_io.iter_video_chunks(video, fps=FPS, chunk_size=64, max_frames=index + 1):
    last = chunk[-1]
  return last


def _in_background(items: Iterable, depth: int = 2) -> Iterator:
  """Yields ``items`` computed by a worker thread up to ``depth`` ahead; re-raises its errors.

  PyAV, x264 and BLAS release the GIL, so decoding, pasting and encoding overlap.
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


def _output_audio(samples: np.ndarray, rate: int, num_frames: int) -> tuple[np.ndarray, int]:
  """The driving audio cut to the written frames, at a rate AAC takes."""
  if rate not in AAC_RATES:
    samples, rate = audio_lib.resample(samples, rate, 48000), 48000
  return samples[:int(round(num_frames * rate / FPS))], rate


def lip_sync_video(sampler, video: str | os.PathLike, audio: str | os.PathLike,
                   out: str | os.PathLike, *, mode: str = "cross", ref_frame: str | None = None,
                   crop: CropSpec | str = "voxceleb2", detector: Any = None,
                   loop_video: bool = False, resize_method: str = "area",
                   paste: str = "lower_half", crf: int = 18, preset: str = "medium",
                   progress: bool = False, cache_dir: str | None = None) -> LipSyncResult:
  """Writes ``out`` (mp4, 25 fps, AAC) whose face follows the speech of ``audio``.

  Args:
    sampler: an ``inference.Diff2LipSampler``.
    video: face video (any frame rate, variable included: resampled to 25 fps by timestamp).
    audio: any file with an audio track (wav, mp3, m4a, another video).
    mode: "cross" (every frame is the input) or "reconstruction" (the first frame is the
      input of every output frame, and its box is used throughout).
    ref_frame: identity reference "gt" (the frame itself), "first_frame" or "random"
      (frame ``random.Random(seed).randint(0, N-1)``); default "gt" for cross and
      "first_frame" for reconstruction, as the reference's two settings.
    crop: :class:`CropSpec` or its text (``parse_crop``); "s3fd" needs ``detector``.
    loop_video: play the video back and forth to cover longer audio (frames are cached raw
      on disk in ``cache_dir``/the system temp dir meanwhile); otherwise the output stops at
      the shorter of video and audio.
    paste: "lower_half" (only the box rows under the mask change, every other pixel is the
      input's) or "box" (the whole resized crop replaces the box, as the reference does).
    crf, preset: H.264 settings of the output.
  Returns:
    :class:`LipSyncResult`. The file appears only when complete.
  Raises:
    FileNotFoundError, video_io.MediaFileError (unreadable, truncated, no video or audio
    stream, empty audio), face_detection.NoFaceError (frame indices named),
    InferenceInputError (bad options, audio shorter than 0.2 s, box outside the frame).
  """
  started = time.time()
  if mode not in MODES:
    raise _input_error(f"mode must be one of {MODES}, got {mode!r}")
  ref_frame = ref_frame or ("gt" if mode == "cross" else "first_frame")
  if ref_frame not in REF_FRAMES:
    raise _input_error(f"ref_frame must be one of {REF_FRAMES}, got {ref_frame!r}")
  if paste not in PASTE_MODES:
    raise _input_error(f"paste must be one of {PASTE_MODES}, got {paste!r}")
  crop = parse_crop(crop) if isinstance(crop, (str, list, tuple)) else crop
  if crop.kind == "s3fd" and detector is None:
    raise _input_error("crop s3fd needs the S3FD face detector: pass --s3fd_weights s3fd.pth "
                       "(or use --crop voxceleb2 / --crop box x1,y1,x2,y2)")
  video, audio, out = os.fspath(video), os.fspath(audio), pathlib.Path(out)
  if not out.parent.is_dir():
    raise FileNotFoundError(f"output directory does not exist: {out.parent}")

  samples, rate = video_io.read_audio_track(audio)
  mel = audio_lib.melspectrogram(audio_lib.resample(samples, rate, audio_lib.SAMPLE_RATE))
  audio_frames = audio_lib.count_mel_windows(mel)
  if audio_frames == 0:
    raise _input_error(f"{audio}: the audio lasts {samples.size / rate:.3f} s; at least 0.2 s "
                       "(one 16-step mel window) is needed")

  with tempfile.TemporaryDirectory(prefix="diff2lip_frames_", dir=cache_dir) as temp:
    lookahead = crop.smooth_window - 1 if crop.kind == "s3fd" else 0
    scan = _scan(video, None if loop_video else audio_frames + max(lookahead, 0), detector,
                 crop, temp if loop_video else None, progress)
    total = audio_frames if loop_video else min(scan.count, audio_frames)
    looped = total > scan.count
    boxes = _frame_boxes(scan, crop, min(total, scan.count), video)
    source = (lambda k: pingpong_index(k, scan.count)) if looped else (lambda k: np.asarray(k))
    size = sampler.image_size
    ref_index = None
    if ref_frame == "first_frame":
      ref_index = 0
    elif ref_frame == "random":
      ref_index = random.Random(sampler.seed).randint(0, total - 1)
    fixed_ref = None
    if ref_index is not None:
      src = int(source(ref_index))
      fixed_ref = _crop(_frame_at(video, scan, src)[None], boxes[src:src + 1], size,
                        resize_method)[0]
    first_crop = _crop(scan.first[None], boxes[:1], size, resize_method)[0]
    stream_needed = mode == "cross" or ref_frame == "gt"

    def source_chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
      batch = sampler.batch_size
      if not stream_needed:
        for start in range(0, total, batch):
          yield np.arange(start, min(start + batch, total)), None
      elif scan.cache is not None:
        for start in range(0, total, batch):
          ks = np.arange(start, min(start + batch, total))
          yield ks, np.asarray(scan.cache[source(ks)])
      else:
        start = 0
        for chunk in video_io.iter_video_chunks(video, fps=FPS, chunk_size=batch,
                                                max_frames=total):
          yield np.arange(start, start + len(chunk)), chunk
          start += len(chunk)
        if start < total:
          raise video_io.MediaFileError(video, f"gave {start} frames on the second read, "
                                        f"{total} on the first; the file changed meanwhile")

    def prepare(ks: np.ndarray, frames: np.ndarray | None):
      src = source(ks)
      frame_boxes = boxes[src] if frames is not None else None
      if mode == "cross":
        full, full_boxes = frames, frame_boxes
        inputs = _crop(frames, frame_boxes, size, resize_method)
      else:
        full = np.broadcast_to(scan.first, (len(ks),) + scan.first.shape)
        full_boxes = np.repeat(boxes[:1], len(ks), 0)
        inputs = np.broadcast_to(first_crop, (len(ks),) + first_crop.shape)
      if ref_frame == "gt":
        refs = inputs if mode == "cross" else _crop(frames, frame_boxes, size, resize_method)
      else:
        refs = np.broadcast_to(fixed_ref, inputs.shape)
      mels = audio_lib.mel_windows(mel, int(ks[0]), int(ks[-1]) + 1)
      return sampler.submit(inputs, refs, mels), full, full_boxes

    bar = tqdm.tqdm(total=total, unit="frame", desc=out.name, disable=not progress)

    def finish(job, full, full_boxes) -> np.ndarray:
      pasted = crops.paste_back(full, job.result(), full_boxes,
                                mask_lower_half_only=paste == "lower_half",
                                face_hide_percentage=sampler.face_hide_percentage)
      bar.update(len(pasted))
      return pasted

    def pasted_chunks() -> Iterator[np.ndarray]:
      pending = None
      for ks, frames in _in_background(source_chunks()):  # decoding runs ahead
        job = prepare(ks, frames)  # dispatched: the device samples while we paste below
        if pending is not None:
          yield finish(*pending)
        pending = job
      if pending is not None:
        yield finish(*pending)

    def frames_out() -> Iterator[np.ndarray]:
      for chunk in _in_background(pasted_chunks()):  # encoding (here) overlaps the rest
        yield from chunk

    out_audio, out_rate = _output_audio(samples, rate, total)
    try:
      video_io.write_video(out, frames_out(), fps=FPS, audio=out_audio, audio_sr=out_rate,
                           crf=crf, preset=preset)
    finally:
      bar.close()
      scan.cache = None  # release the memmap before the directory goes
  seconds = time.time() - started
  return LipSyncResult(os.fspath(out), total, scan.count, audio_frames, looped,
                       (scan.height, scan.width), ref_index, round(seconds, 3),
                       round(total / max(seconds, 1e-9), 2))
