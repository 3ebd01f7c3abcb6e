"""Video + audio -> lip-synced mp4, streamed in chunks with bounded memory.

Used through ``diff2lip_jax.inference`` (``inference.lip_sync_video``, what
``python -m diff2lip_jax.sample`` runs). The stages, each in its own module:

  scan     ``inference.scan.scan_video``: a first pass over the video (frame count at 25 fps,
           first frame, face detections, and for ``loop_video`` a raw-frame cache on disk);
  boxes    ``data_pipelines.face_crops.frame_boxes``: the face box of every frame;
  stream   ``inference.stream``: decode -> crop -> sample -> paste -> encode chunk by chunk,
           the device sampling one chunk while the host pastes and encodes the previous one.

This module chooses the sampler's inputs per chunk (``cross`` / ``reconstruction`` mode,
``gt`` / ``first_frame`` / ``random`` reference, as the reference's ``generate.py``) and
orchestrates the stages.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import random
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np
import tqdm

from data_pipelines import audio as audio_lib
from data_pipelines import crops, face_crops, video_io
from data_pipelines.audio import VIDEO_FPS as FPS
from data_pipelines.face_crops import CROP_KINDS, CropSpec, parse_crop
from diff2lip_jax.inference import outputs, stream
from diff2lip_jax.inference.sampler import Diff2LipSampler, InferenceInputError, PendingCrops
from diff2lip_jax.inference import scan as scan_lib

MODES = ("cross", "reconstruction")
REF_FRAMES = ("gt", "first_frame", "random")
PASTE_MODES = crops.PASTE_MODES
__all__ = ["FPS", "CROP_KINDS", "MODES", "REF_FRAMES", "PASTE_MODES", "LipSyncResult",
           "ChunkInputs", "check_options", "driving_audio", "reference_index", "lip_sync_video"]


@dataclasses.dataclass
class LipSyncResult:
  """What :func:`lip_sync_video` wrote and how long it took."""
  out_path: str
  num_frames: int          # frames written (25 fps)
  video_frames: int        # frames of the input video at 25 fps (counted up to what was needed)
  audio_frames: int        # frames the audio spans (ceil(duration * 25))
  looped: bool             # the video was played back and forth to cover the audio
  frame_size: tuple[int, int]  # input (height, width); the file is even-padded
  ref_index: int | None    # frame used as reference (None for "gt")
  seconds: float
  frames_per_second: float
  passed_through: int = 0  # output frames without a face, written unchanged
  warnings: list = dataclasses.field(default_factory=list)  # also printed to stderr


@dataclasses.dataclass
class ChunkInputs:
  """The sampler's inputs for each chunk of output frames, and the pasting of its results.

  mode "cross": every frame is its own input; "reconstruction": the first frame (and its
  box) is the input of every output frame. ``fixed_ref``: the crop of the reference frame
  ("first_frame" / "random"), None for "gt" (the input frame itself; in reconstruction mode
  the current frame). In cross mode, frames whose source has no face (``plan.found``) are not
  sampled and come out unchanged.
  """
  sampler: Diff2LipSampler
  plan: stream.FramePlan
  mel: np.ndarray
  mode: str = "cross"
  fixed_ref: np.ndarray | None = None
  resize_method: str = "area"
  paste: str = "lower_half"
  color_match: bool = False
  bar: Any = None

  def __post_init__(self):
    self.first_crop = self.crop(self.plan.scan.first[None], self.plan.boxes[:1])[0]

  def crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return crops.crop_uint8(frames, boxes, self.sampler.image_size, self.resize_method,
                            allow_outside=True)

  def use_reference(self, index: int) -> None:
    """Makes the crop of output frame ``index`` (its source frame) every frame's reference."""
    src = self.plan.nearest_face(int(self.plan.source(index)))
    frame = scan_lib.frame_at(self.plan.video, self.plan.scan, src)
    self.fixed_ref = self.crop(frame[None], self.plan.boxes[src:src + 1])[0]

  @property
  def needs_pixels(self) -> bool:
    """Whether the chunks need decoded frames (else the first frame serves them all)."""
    return self.mode == "cross" or self.fixed_ref is None

  def submit(self, ks: np.ndarray, frames: np.ndarray | None) -> tuple:
    """Starts sampling output frames ``ks``; returns the job (None when no frame of the chunk
    has a face), the full frames, their boxes and which of them are sampled."""
    scan, boxes = self.plan.scan, self.plan.boxes
    src = self.plan.source(ks)
    frame_boxes = boxes[src] if frames is not None else None
    if self.mode == "cross":
      full, full_boxes = frames, frame_boxes
      todo = np.flatnonzero(self.plan.found[src])
      inputs = self.crop(frames[todo], frame_boxes[todo])
    else:
      full = np.broadcast_to(scan.first, (len(ks),) + scan.first.shape)
      full_boxes = np.repeat(boxes[:1], len(ks), 0)
      todo = np.arange(len(ks))
      inputs = np.broadcast_to(self.first_crop, (len(ks),) + self.first_crop.shape)
    if todo.size == 0:
      return None, full, full_boxes, todo
    if self.fixed_ref is not None:
      refs = np.broadcast_to(self.fixed_ref, inputs.shape)
    else:
      refs = inputs if self.mode == "cross" else self.crop(frames, frame_boxes)
    mels = audio_lib.mel_windows(self.mel, int(ks[0]), int(ks[-1]) + 1)[todo]
    return self.sampler.submit(inputs, refs, mels), full, full_boxes, todo

  def finish(self, started: tuple) -> np.ndarray:
    """Waits for a chunk's crops and pastes them into its full frames (the others unchanged)."""
    job, full, full_boxes, todo = started
    paste = lambda frames, boxes: crops.paste_back(
        frames, job.result(), boxes, self.paste, self.sampler.face_hide_percentage,
        color_match=self.color_match)
    if job is not None and len(todo) == len(full):
      pasted = paste(full, full_boxes)
    else:  # some frames (or all) have no face: they stay as decoded
      pasted = np.array(full)
      if job is not None:
        pasted[todo] = paste(full[todo], full_boxes[todo])
    if self.bar is not None:
      self.bar.update(len(pasted))
    return pasted


def check_options(mode: str, ref_frame: str | None, paste: str,
                  crop: CropSpec | str | Sequence[str], detector: Any) -> tuple[str, CropSpec]:
  """Validates the options of :func:`lip_sync_video`; returns the reference kind and crop."""
  if mode not in MODES:
    raise InferenceInputError(f"mode must be one of {MODES}, got {mode!r}")
  ref_frame = ref_frame or ("gt" if mode == "cross" else "first_frame")
  if ref_frame not in REF_FRAMES:
    raise InferenceInputError(f"ref_frame must be one of {REF_FRAMES}, got {ref_frame!r}")
  if paste not in PASTE_MODES:
    raise InferenceInputError(f"paste must be one of {PASTE_MODES}, got {paste!r}")
  # Crops given as text get video inference's no-face default: such frames pass through.
  crop = parse_crop(crop, no_face="passthrough") if isinstance(crop, (str, list, tuple)) else crop
  del detector  # built by lip_sync_video when the crop needs one and none is given
  return ref_frame, crop


def framing_check(scan: scan_lib.VideoScan, crop: CropSpec, video: str) -> list[str]:
  """The "voxceleb2" crop's framing warning (``face_crops.framing_warning``, checked with the
  bundled HOG detector when dlib is installed), printed to stderr once per video; [] if none."""
  if crop.kind != "voxceleb2" or not scan.probes:
    return []
  try:
    detector = face_crops.load_detector(CropSpec("hog"))
  except face_crops.CropError:
    detector = None  # dlib missing: only the frame shape is checked
  message = face_crops.framing_warning(scan.probes, detector, source=video)
  if message is None:
    return []
  print(f"warning: {message}", file=sys.stderr)
  return [message]


def driving_audio(path: str) -> tuple[np.ndarray, int, np.ndarray, int]:
  """``(samples [n, channels], rate, mel [M, 80], frames)`` of an audio track.

  ``frames`` = ceil(duration * 25): every frame the speech spans, the last ones included
  (their mel windows, which run past the end, are padded by ``pad_mel_to_frames``), so the
  whole track is kept. The mel is computed from the channels' mean; the samples keep the
  file's channels (stereo stays stereo in the output).
  """
  samples, rate = video_io.read_audio_track(path, mono=False)
  mono = samples.mean(axis=1, dtype=np.float32)
  mel = audio_lib.melspectrogram(audio_lib.resample(mono, rate, audio_lib.SAMPLE_RATE))
  if audio_lib.count_mel_windows(mel) == 0:
    raise InferenceInputError(f"{path}: the audio lasts {len(samples) / rate:.3f} s; at least "
                              "0.2 s (one 16-step mel window) is needed")
  frames = audio_lib.frames_spanned(len(samples), rate)
  return samples, rate, audio_lib.pad_mel_to_frames(mel, frames), frames


def check_inputs(video: str | os.PathLike, audio: str | os.PathLike) -> None:
  """Raises the error :func:`lip_sync_video` would give for an unusable input, cheaply: files
  exist and are readable, the video's first frame decodes, the speech track decodes and lasts
  at least 0.2 s. For CLIs, before the model is loaded."""
  for path in (video, audio):
    if os.path.isfile(path) and not os.access(path, os.R_OK):
      raise video_io.MediaFileError(path, "is not readable (permission denied); fix its "
                                    "permissions or copy it")
  next(video_io.iter_video_chunks(video, chunk_size=1, max_frames=1))
  driving_audio(os.fspath(audio))


def length_note(result: "LipSyncResult") -> str | None:
  """One line on how the output's length follows from the video's and the speech's, or None."""
  speech = result.audio_frames / audio_lib.VIDEO_FPS
  if result.looped:
    return (f"the speech ({speech:.2f} s) is longer than the video ({result.video_frames} "
            "frames): the video was played back and forth to cover it")
  if result.video_frames < result.audio_frames:
    video = result.video_frames / audio_lib.VIDEO_FPS
    return (f"the speech lasts {speech:.2f} s, the video {video:.2f} s: the last "
            f"{speech - video:.2f} s of speech were cut; pass --loop_video to cover the whole "
            "speech")
  if result.video_frames > result.audio_frames:
    return (f"the video is longer than the speech ({speech:.2f} s): the output stops with the "
            f"speech after {result.num_frames} frames")
  return None


def reference_index(ref_frame: str, total: int, seed: int) -> int | None:
  """Output frame whose crop is every frame's reference (None for "gt")."""
  if ref_frame == "first_frame":
    return 0
  if ref_frame == "random":
    return random.Random(seed).randint(0, total - 1)
  return None


def lip_sync_video(sampler: Diff2LipSampler, video: str | os.PathLike, audio: str | os.PathLike,
                   out: str | os.PathLike, *, mode: str = "cross", ref_frame: str | None = None,
                   crop: CropSpec | str = "voxceleb2", detector: Any = None,
                   loop_video: bool = False, resize_method: str = "area",
                   paste: str = "lower_half", color_match: bool = False, crf: int = 18,
                   preset: str = "medium",
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
    crop: :class:`CropSpec` or its text (``parse_crop``, then with ``no_face="passthrough"``).
    detector: the detector crops' detector; built with ``face_crops.load_detector`` if None.
    loop_video: play the video back and forth to cover longer audio (frames are cached raw
      on disk in ``cache_dir``/the system temp dir meanwhile); otherwise the output stops at
      the shorter of video and audio.
    paste: "lower_half" (only the box rows under the mask change, every other pixel is the
      input's), "soft" (the same rows blended through a feathered mask, no visible seam) or
      "box" (the whole resized crop replaces the box, as the reference does);
      ``crops.paste_back``. color_match: "soft" only, match the generated colours to the
      frame's in the seam ring.
    crf, preset: H.264 settings of the output.
  Returns:
    :class:`LipSyncResult` (with the frames passed through without a face, and warnings).
    The file appears only when complete.
  Raises:
    FileNotFoundError, video_io.MediaFileError (unreadable, truncated, no video or audio
    stream, empty audio), face_detection.NoFaceError (frame indices named),
    face_crops.CropError (bad crop, box outside the frames), InferenceInputError (bad
    options, audio shorter than 0.2 s); all but FileNotFoundError are ValueErrors.
  """
  started = time.time()
  ref_frame, crop = check_options(mode, ref_frame, paste, crop, detector)
  video, audio, out = os.fspath(video), os.fspath(audio), pathlib.Path(out)
  if not out.parent.is_dir():
    raise FileNotFoundError(f"output directory does not exist: {out.parent}")
  samples, rate, mel, audio_frames = driving_audio(audio)
  if crop.needs_detector and detector is None:
    detector = face_crops.load_detector(crop)
  with tempfile.TemporaryDirectory(prefix=outputs.cache_prefix(), dir=cache_dir) as temp:
    # Without looping, frames past the audio are never read (but for the smoothing window,
    # and one to tell a longer video from one of the same length).
    extra = max(crop.lookahead, 1)
    scan = scan_lib.scan_video(video, crop, detector=detector, progress=progress,
                               max_frames=None if loop_video else audio_frames + extra,
                               cache_dir=temp if loop_video else None)
    warnings = framing_check(scan, crop, video)
    plan = stream.FramePlan.create(video, scan, crop, audio_frames, loop_video)
    if mode == "reconstruction" and not plan.found[0]:
      raise InferenceInputError(f"{video}: reconstruction mode drives the first frame, which "
                                "has no detected face; trim the video or use --mode cross")
    inputs = ChunkInputs(sampler, plan, mel, mode, resize_method=resize_method, paste=paste,
                         color_match=color_match)
    ref_index = reference_index(ref_frame, plan.total, sampler.seed)
    if ref_index is not None:
      inputs.use_reference(ref_index)
    try:
      inputs.bar = tqdm.tqdm(total=plan.total, unit="frame", desc=out.name, disable=not progress)
      chunks = plan.chunks(sampler.batch_size, pixels=inputs.needs_pixels)
      pasted = stream.overlapped(chunks, inputs.submit, inputs.finish)
      stream.encode(out, pasted, samples, rate, plan.total, crf=crf, preset=preset)
    finally:
      if inputs.bar is not None:
        inputs.bar.close()
      scan.cache = None  # release the memmap before the directory goes
  seconds = time.time() - started
  return LipSyncResult(os.fspath(out), plan.total, scan.count, audio_frames, plan.looped,
                       scan.frame_size, ref_index, round(seconds, 3),
                       round(plan.total / max(seconds, 1e-9), 2),
                       plan.passed_through if mode == "cross" else 0, warnings)
