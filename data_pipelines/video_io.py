"""Video and audio file IO with PyAV (bundled FFmpeg libraries; no ffmpeg binary, no subprocess).

Frames are uint8 RGB ``[T, H, W, 3]``. Reading resamples any frame rate, variable frame rates
included, to a fixed rate by presentation timestamps, the way FFmpeg's ``fps`` filter does
(the reference extracts frames with ``ffmpeg -vf fps=25``): input frame i is assigned to output
slot ``round((t_i - t_0) * fps)``, and each output slot shows the newest input frame assigned
at or before it; frames are duplicated to fill gaps and dropped when several share a slot.
"""
from __future__ import annotations

import dataclasses
import fractions
import math
import os
import pathlib
import uuid
from typing import Iterable, Iterator

import av
import numpy as np

DEFAULT_FPS = 25.0
_MIN_DECODED_FRACTION = 0.9  # fewer frames than this share of the header count => truncated


class MediaFileError(ValueError):
  """A media file cannot be used; the message names the file and what to do."""

  def __init__(self, path: str | os.PathLike, message: str):
    self.path = os.fspath(path)
    super().__init__(f"{self.path}: {message}")


class NoVideoStreamError(MediaFileError):
  pass


class NoAudioStreamError(MediaFileError):
  pass


@dataclasses.dataclass
class VideoInfo:
  """What is known about a video file; ``num_frames`` counts frames at ``fps`` once read."""
  path: str
  width: int
  height: int
  fps: float | None            # rate of the returned frames (None: native, no resampling)
  source_fps: float | None     # container's average rate (None if unknown)
  source_frames: int | None    # frame count in the header (None if unknown)
  duration: float | None       # seconds, video stream
  has_audio: bool
  audio_sample_rate: int | None
  num_frames: int | None = None
  # Timestamp (s) of the first frame: output frame k shows time start_time + k / fps. Audio
  # from read_audio_track starts at the audio stream's own start; offset them if they differ.
  start_time: float | None = None
  audio_start_time: float | None = None


def _open(path: str | os.PathLike) -> av.container.InputContainer:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"media file not found: {path}")
  if os.path.isdir(path):
    raise MediaFileError(path, "is a directory, expected a video or audio file")
  try:
    return av.open(path, mode="r")
  except av.FFmpegError as error:
    raise MediaFileError(path, f"cannot be opened as audio/video ({error}); the file may be "
                         "truncated, corrupt or not a media file - re-download or re-encode it"
                         ) from error


def _video_stream(container, path) -> av.video.stream.VideoStream:
  if not container.streams.video:
    raise NoVideoStreamError(path, "has no video stream (audio-only or not a video); "
                             "pass a video file")
  return container.streams.video[0]


def _info(container, stream, path, fps) -> VideoInfo:
  duration = None
  if stream.duration is not None and stream.time_base is not None:
    duration = float(stream.duration * stream.time_base)
  elif container.duration is not None:
    duration = container.duration / av.time_base
  audio = container.streams.audio
  audio_start = None
  if audio and audio[0].start_time is not None and audio[0].time_base:
    audio_start = float(audio[0].start_time * audio[0].time_base)
  return VideoInfo(
      path=os.fspath(path), width=stream.codec_context.width, height=stream.codec_context.height,
      fps=fps, source_fps=float(stream.average_rate) if stream.average_rate else None,
      source_frames=stream.frames or None, duration=duration, has_audio=bool(audio),
      audio_sample_rate=audio[0].sample_rate if audio else None, audio_start_time=audio_start)


def probe_video(path: str | os.PathLike) -> VideoInfo:
  """Header information of a video without decoding it."""
  with _open(path) as container:
    return _info(container, _video_stream(container, path), path, fps=None)


class _FrameRateResampler:
  """Frame duplication/dropping by timestamp onto an ``fps`` grid (FFmpeg fps filter, near)."""

  def __init__(self, fps: float):
    if not fps > 0:
      raise ValueError(f"fps must be positive, got {fps}")
    self.fps = fps
    self.start_time: float | None = None
    self.next_slot = 0
    self.pending: np.ndarray | None = None

  def push(self, time: float, image: np.ndarray) -> list[np.ndarray]:
    if self.start_time is None:
      self.start_time = time
    slot = math.floor((time - self.start_time) * self.fps + 0.5)
    out = []
    if self.pending is not None:
      out = [self.pending] * max(0, slot - self.next_slot)
      self.next_slot = max(self.next_slot, slot)
    self.pending = image
    return out

  def finish(self, end_time: float) -> list[np.ndarray]:
    if self.pending is None:
      return []
    end_slot = math.floor((end_time - self.start_time) * self.fps + 0.5)
    # The newest frame fills the slots up to the stream's end; a frame whose slot is the end
    # itself is dropped (as FFmpeg does), unless nothing at all was output yet.
    minimum = 1 if self.next_slot == 0 else 0
    out = [self.pending] * max(minimum, end_slot - self.next_slot)
    self.pending = None
    return out


def iter_video_chunks(path: str | os.PathLike, fps: float | None = DEFAULT_FPS,
                      chunk_size: int = 64, max_frames: int | None = None,
                      info_out: VideoInfo | None = None) -> Iterator[np.ndarray]:
  """Stream a video as uint8 RGB chunks ``[<=chunk_size, H, W, 3]`` with bounded memory.

  Args:
    fps: output frame rate (frames resampled by timestamp); None keeps every decoded frame.
    max_frames: stop after this many output frames.
    info_out: if given, filled in (``num_frames`` set when the stream ends).
  Raises:
    FileNotFoundError, MediaFileError (unreadable/truncated), NoVideoStreamError.
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
  path = os.fspath(path)
  with _open(path) as container:
    stream = _video_stream(container, path)
    stream.thread_type = "AUTO"
    info = _info(container, stream, path, fps)
    if info_out is not None:
      info_out.__dict__.update(info.__dict__)
    resampler = _FrameRateResampler(fps) if fps is not None else None
    time_base = float(stream.time_base) if stream.time_base else None
    nominal_step = 1.0 / float(stream.average_rate) if stream.average_rate else 1.0 / DEFAULT_FPS
    chunk: list[np.ndarray] = []
    emitted = decoded = 0
    time = previous_time = None
    last_step = nominal_step

    def take(images):
      nonlocal emitted
      for image in images:
        if max_frames is not None and emitted >= max_frames:
          return
        chunk.append(image)
        emitted += 1

    try:
      for frame in container.decode(stream):
        if frame.pts is not None and time_base is not None:
          time = frame.pts * time_base
        else:
          time = (previous_time + nominal_step) if previous_time is not None else 0.0
        if previous_time is not None:
          time = max(time, previous_time)  # guard against non-monotonic timestamps
          if time > previous_time:
            last_step = time - previous_time
        image = frame.to_ndarray(format="rgb24")
        if decoded == 0 and info_out is not None:
          info_out.start_time = time
        decoded += 1
        take(resampler.push(time, image) if resampler else [image])
        previous_time = time
        if frame.duration and time_base is not None:
          last_step = frame.duration * time_base
        while len(chunk) >= chunk_size:
          yield np.stack(chunk[:chunk_size])
          del chunk[:chunk_size]
        if max_frames is not None and emitted >= max_frames:
          break
    except av.FFmpegError as error:
      raise MediaFileError(path, f"decoding failed after {decoded} frames ({error}); the file "
                           "is probably truncated or corrupt") from error
    if decoded == 0:
      raise MediaFileError(path, "video stream contains no decodable frames")
    reached_limit = max_frames is not None and emitted >= max_frames
    if (not reached_limit and info.source_frames
        and decoded < _MIN_DECODED_FRACTION * info.source_frames):
      raise MediaFileError(path, f"only {decoded} of the {info.source_frames} frames in the header "
                           "could be decoded; the file is probably truncated")
    if resampler is not None and not reached_limit:
      take(resampler.finish(previous_time + last_step))
    for start in range(0, len(chunk), chunk_size):
      yield np.stack(chunk[start:start + chunk_size])
    if info_out is not None:
      info_out.num_frames = emitted


def read_video(path: str | os.PathLike, fps: float | None = DEFAULT_FPS,
               max_frames: int | None = None) -> tuple[np.ndarray, VideoInfo]:
  """Whole video as uint8 RGB ``[T, H, W, 3]`` at ``fps`` (None: native frames) and its info."""
  info = VideoInfo(path=os.fspath(path), width=0, height=0, fps=fps, source_fps=None,
                   source_frames=None, duration=None, has_audio=False, audio_sample_rate=None)
  chunks = list(iter_video_chunks(path, fps=fps, chunk_size=256, max_frames=max_frames,
                                  info_out=info))
  frames = (np.concatenate(chunks) if chunks
            else np.zeros((0, info.height, info.width, 3), np.uint8))
  info.num_frames = len(frames)
  return frames, info


def read_audio_track(path: str | os.PathLike, mono: bool = True) -> tuple[np.ndarray, int]:
  """First audio stream of any media file as float32 ``[num_samples]`` and its sample rate.

  mono: channels are averaged; False: ``[num_samples, channels]`` as stored (to keep stereo).
  Encoder padding after the stream's declared duration is trimmed.
  Raises:
    FileNotFoundError, MediaFileError, NoAudioStreamError, and MediaFileError if the track is empty.
  """
  path = os.fspath(path)
  with _open(path) as container:
    if not container.streams.audio:
      raise NoAudioStreamError(path, "has no audio stream; lip-sync data needs the speech track "
                               "(re-export the video with its audio)")
    stream = container.streams.audio[0]
    to_float = av.AudioResampler(format="fltp")  # keeps layout and rate, converts sample format
    pieces: list[np.ndarray] = []
    try:
      for frame in container.decode(stream):
        pieces.extend(converted.to_ndarray() for converted in to_float.resample(frame))
      pieces.extend(converted.to_ndarray() for converted in to_float.resample(None))
    except av.FFmpegError as error:
      raise MediaFileError(path, f"decoding the audio failed ({error}); the file is probably "
                           "truncated or corrupt") from error
    sample_rate = stream.sample_rate or stream.codec_context.sample_rate
    planes = np.concatenate(pieces, axis=1) if pieces else np.zeros((1, 0), np.float32)
    samples = planes.mean(axis=0, dtype=np.float32) if mono else planes.T
    if stream.duration and stream.time_base:
      declared = int(round(float(stream.duration * stream.time_base) * sample_rate))
      if 0 < declared < len(samples):
        samples = samples[:declared]
  if samples.size == 0:
    raise MediaFileError(path, "audio stream is empty (zero samples)")
  return samples.astype(np.float32, copy=False), int(sample_rate)


def _as_rgb(frame: np.ndarray, index: int) -> np.ndarray:
  frame = np.asarray(frame)
  if frame.dtype != np.uint8:
    raise ValueError(f"frame {index}: expected uint8 pixels, got {frame.dtype} "
                     "(convert with np.clip(x * 255, 0, 255).astype(np.uint8))")
  if frame.ndim == 2:
    frame = frame[..., None]
  if frame.ndim != 3 or frame.shape[2] not in (1, 3):
    raise ValueError(f"frame {index}: expected [H, W, 3] or [H, W] pixels, got {frame.shape}")
  return np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
  # yuv420p needs even sizes; replicate the last row/column rather than rescale.
  pad_rows, pad_cols = frame.shape[0] % 2, frame.shape[1] % 2
  if pad_rows or pad_cols:
    frame = np.pad(frame, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
  return np.ascontiguousarray(frame)


def _audio_planes(audio: np.ndarray) -> np.ndarray:
  """[n] or [n, channels<=2] float/int PCM -> float32 [channels, n] clipped to [-1, 1]."""
  audio = np.asarray(audio)
  if np.issubdtype(audio.dtype, np.integer):
    audio = audio.astype(np.float32) / (np.iinfo(audio.dtype).max + 1)
  audio = audio.astype(np.float32)
  if audio.ndim == 1:
    audio = audio[:, None]
  if audio.ndim != 2 or audio.shape[1] not in (1, 2):
    raise ValueError(f"audio must be [num_samples] or [num_samples, 1|2], got {audio.shape}")
  if not np.all(np.isfinite(audio)):
    raise ValueError("audio contains NaN or infinite samples")
  return np.ascontiguousarray(np.clip(audio, -1.0, 1.0).T)


def write_video(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray],
                fps: float = DEFAULT_FPS, audio: np.ndarray | None = None,
                audio_sr: int = 16000, crf: int = 18, preset: str = "medium",
                audio_bitrate: int = 96000) -> pathlib.Path:
  """Write H.264 (yuv420p) video, with AAC audio if given, atomically.

  Args:
    frames: uint8 ``[T, H, W, 3]`` (or ``[T, H, W]`` grayscale), or an iterable of ``[H, W, 3]``
      frames for streaming. Odd heights/widths are padded by one replicated row/column,
      so the file is ``H + H % 2`` by ``W + W % 2``.
    audio: ``[num_samples]`` or ``[num_samples, 1|2]`` PCM at ``audio_sr`` (float in [-1, 1]).
  Returns:
    The written path. The file appears only when complete: it is written to a temporary name
    in the same directory and renamed at the end (removed again on any error).
  """
  if not fps > 0:
    raise ValueError(f"fps must be positive, got {fps}")
  path = pathlib.Path(path)
  if not path.parent.is_dir():
    raise FileNotFoundError(f"output directory does not exist: {path.parent}")
  if isinstance(frames, np.ndarray) and not (
      frames.ndim == 4 or (frames.ndim == 3 and frames.shape[-1] != 3)):
    raise ValueError(f"frames must be [T, H, W, 3] or [T, H, W] (grayscale), got {frames.shape}"
                     " (for a single frame pass frames[None])")
  planes = _audio_planes(audio) if audio is not None else None
  temp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
  options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
  rate = fractions.Fraction(fps).limit_denominator(10000)
  try:
    with av.open(os.fspath(temp), mode="w", options=options) as container:
      video = container.add_stream("libx264", rate=rate)
      video.pix_fmt = "yuv420p"
      video.options = {"crf": str(crf), "preset": preset}
      sound = None
      if planes is not None:
        layout = "mono" if len(planes) == 1 else "stereo"
        sound = container.add_stream("aac", rate=audio_sr, layout=layout)
        sound.bit_rate = audio_bitrate
      audio_cursor = 0

      def write_audio_until(stop: int):
        nonlocal audio_cursor
        stop = min(stop, planes.shape[1])
        if stop <= audio_cursor:
          return
        piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, audio_cursor:stop]),
                                           format="fltp", layout=sound.layout)
        piece.sample_rate, piece.pts = audio_sr, audio_cursor
        piece.time_base = fractions.Fraction(1, audio_sr)
        container.mux(sound.encode(piece))
        audio_cursor = stop

      count = 0
      for index, frame in enumerate(frames):
        image = _pad_to_even(_as_rgb(frame, index))
        if count == 0:
          video.width, video.height = image.shape[1], image.shape[0]
        elif image.shape[:2] != (video.height, video.width):
          raise ValueError(f"frame {index} has size {image.shape[:2]}, earlier frames "
                           f"{(video.height, video.width)} (after even padding)")
        picture = av.VideoFrame.from_ndarray(image, format="rgb24")
        picture.pts, picture.time_base = index, 1 / rate
        container.mux(video.encode(picture))
        count += 1
        if sound is not None:  # interleave: audio up to the end of this frame
          write_audio_until(int(round(count / float(rate) * audio_sr)))
      if count == 0:
        raise ValueError(f"no frames to write to {path}")
      container.mux(video.encode(None))
      if sound is not None:
        write_audio_until(planes.shape[1])
        container.mux(sound.encode(None))
    os.replace(temp, path)
  except BaseException:
    temp.unlink(missing_ok=True)
    raise
  return path
