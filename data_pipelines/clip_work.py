"""The per-clip work of data preparation, shared by both engines (``prepare`` runs it in local
worker processes, ``beam_prepare`` in Beam workers): one video -> serialized clip records.

Without curation (``PrepareOptions.curation is None``) a video gives one record
(:func:`process_video`): audio decoded and resampled to 16 kHz, silence check, mel spectrogram,
frames read at ``fps`` in chunks, cropped (``face_crops``), resized, JPEG-encoded.

With curation the whole clip is decoded, ``curation.curate_clip`` decides (scene cuts split or
drop, face-size / detection-score filters, SyncNet offset and confidence), and every kept shot
becomes one record, its audio shifted by the measured offset before the mel is computed
(:func:`curated_records`). Record ids: the clip id, ``<id>#<shot>`` when the clip was split.
Curation's face statistics use the raw detections when the crop runs a detector ("s3fd": boxes
and scores), else the crop boxes (no detection scores, so only the size filter applies).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from data_pipelines import crops, face_check, face_crops, shards

# Curation (and the JAX it loads) is imported only where it is used: workers of runs without
# curation start without it (~3 CPU-s less per worker process).

WAV2LIP_PADS = (0, 10, 0, 0)  # the s3fd pads of Wav2Lip's preprocessing (keeps the chin)


class ClipSkipped(ValueError):
  """A clip that is readable but unsuitable (silent, too short, dropped by curation)."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """How each clip is turned into records (see ``prepare --help`` for each field).

  ``crop`` is the shared face-crop specification (``face_crops.CropSpec``); ``s3fd_weights``
  the detector checkpoint for kind "s3fd". ``curation`` switches curation on (None: off);
  ``sync_measurer`` / ``sync_weights`` pick the SyncNet used when ``curation.sync`` is set
  (``curation.sync.MEASURERS``; "synthetic" is for ``data_pipelines.synthetic`` videos only).
  """
  crop: face_crops.CropSpec = face_crops.CropSpec("voxceleb2", pads=WAV2LIP_PADS)
  s3fd_weights: str | None = None
  image_size: int = 128
  fps: float = 25.0
  window: int = 5
  jpeg_quality: int = shards.JPEG_QUALITY
  keep_silent: bool = False
  silence_dbfs: float = -60.0
  curation: "curation.CurationConfig | None" = None
  sync_measurer: str = "syncnet_v2"
  sync_weights: str | None = None
  face_check: bool = True  # fixed crops: skip clips with no face in any sampled frame

  def record_settings(self) -> dict:
    """Settings that must agree between runs writing into one output directory."""
    settings = {"image_size": self.image_size, "fps": self.fps, "crop": self.crop.kind,
                "box": list(self.crop.box) if self.crop.box else None}
    if self.curation is not None:  # absent without curation: older manifests stay valid
      settings["curation"] = {**self.curation.to_dict(), "measurer": self.sync_measurer}
    return settings

  def confidence_threshold(self) -> float | None:
    """The sync confidence threshold in force (None when sync curation is off)."""
    if self.curation is None or not self.curation.sync:
      return None
    if self.curation.min_confidence is not None:
      return float(self.curation.min_confidence)
    from data_pipelines.curation import sync as sync_lib  # pylint: disable=import-outside-toplevel
    default = {"syncnet_v2": sync_lib.SYNCNET_V2_MIN_CONFIDENCE,
               "synthetic": sync_lib.SYNTHETIC_MIN_CONFIDENCE}.get(self.sync_measurer)
    if default is None:
      raise ValueError(f"the {self.sync_measurer!r} sync measurer has no default confidence "
                       "threshold: set --curate_min_confidence")
    return default


def check_options(options: PrepareOptions) -> None:
  """Fails before any work on settings no clip can satisfy (missing weights, no threshold)."""
  if options.crop.kind == "s3fd" and not (options.s3fd_weights
                                          and os.path.isfile(options.s3fd_weights)):
    raise FileNotFoundError(f"--crop s3fd needs --s3fd_weights FILE (got {options.s3fd_weights!r}); "
                            "supply the S3FD checkpoint (e.g. Wav2Lip's s3fd.pth) yourself")
  if options.curation is not None and options.curation.sync:
    options.confidence_threshold()
    if options.sync_measurer != "synthetic" and not (options.sync_weights
                                                     and os.path.exists(options.sync_weights)):
      raise FileNotFoundError(f"--curate_sync with the {options.sync_measurer} measurer needs "
                              f"--sync_weights FILE (got {options.sync_weights!r}), e.g. "
                              "syncnet_python's syncnet_v2.model; or --no_curate_sync")
  face_check.make_detector(options.face_check, options.crop, options.s3fd_weights)


def load_checked_audio(path: str, options: PrepareOptions) -> np.ndarray:
  """``[n]`` float32 16 kHz audio of a video; raises ClipSkipped for silent audio."""
  from data_pipelines import audio  # pylint: disable=import-outside-toplevel
  wav = audio.load_audio(path)
  peak = float(np.max(np.abs(wav))) if len(wav) else 0.0
  if not options.keep_silent and peak <= 10 ** (options.silence_dbfs / 20):
    peak_db = 20 * np.log10(max(peak, 1e-12))
    raise ClipSkipped(f"silent audio (peak {peak_db:.1f} dBFS <= {options.silence_dbfs} dBFS); "
                      "pass --keep_silent to keep silent clips")
  return wav


def encode_clip(clip_id: str, chunks: Iterable[tuple[np.ndarray, np.ndarray]], wav: np.ndarray,
                options: PrepareOptions, source: str) -> bytes:
  """Serialized record of full frames with their crop boxes and the clip's 16 kHz audio.

  Args:
    chunks: ``(frames [t, H, W, 3] uint8, boxes [t, 4] int)`` pieces of the clip, in order.
    wav: ``[n]`` float32 audio; sample ``k * 640`` starts frame ``k`` (25 fps).
  Raises:
    ClipSkipped: too short for a training window plus a reference window.
  """
  from data_pipelines import audio  # pylint: disable=import-outside-toplevel
  from data_pipelines.input_pipeline import clip_is_trainable  # pylint: disable=import-outside-toplevel
  frames_jpeg, boxes = [], []
  for frames, frame_boxes in chunks:
    pixels = crops.crop_uint8(frames, frame_boxes, size=options.image_size)
    frames_jpeg.extend(shards.encode_jpeg(frame, options.jpeg_quality) for frame in pixels)
    boxes.extend(frame_boxes)
  mel = audio.melspectrogram(wav)
  if not clip_is_trainable(len(frames_jpeg), mel.shape[0], options.fps, options.window):
    raise ClipSkipped(f"too short: {len(frames_jpeg)} frames and {len(wav) / audio.SAMPLE_RATE:.2f}"
                      f" s of audio; training needs a {options.window}-frame window with audio "
                      "plus a separate reference window (>= 10 frames)")
  record = shards.ClipRecord(clip_id=clip_id, frames_jpeg=frames_jpeg, mel=mel, fps=options.fps,
                             boxes=np.asarray(boxes, np.float32), source=source)
  return _serializer(options.image_size).serialize(record)


@functools.lru_cache(maxsize=4)
def _serializer(image_size: int) -> shards.ClipSerializer:
  return shards.ClipSerializer(image_size)


def _detections(path: str, options: PrepareOptions, detector: Any) -> tuple[list, tuple[int, int]]:
  """A first pass over the video: per-frame detections ``[K, 5]`` and the frame size."""
  from data_pipelines import video_io  # pylint: disable=import-outside-toplevel
  detections, frame_size = [], None
  for chunk in video_io.iter_video_chunks(path, fps=options.fps):
    detections.extend(detector.detect(chunk, batch_size=options.crop.detector_batch_size))
    frame_size = chunk.shape[1:3]
  return detections, frame_size


def _boxed_chunks(path: str, options: PrepareOptions, detector: Any,
                  check: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Streams ``(frames, crop boxes)`` chunks of a video (bounded memory); ``check``
  (``face_check.FaceCheck``) sees every chunk and verifies the clip at its end."""
  from data_pipelines import video_io  # pylint: disable=import-outside-toplevel
  spec, per_frame_boxes = options.crop, None
  if spec.needs_detector:
    detections, frame_size = _detections(path, options, detector)
    per_frame_boxes = face_crops.frame_boxes(spec, frame_size, len(detections), detections)
  done = 0
  for chunk in video_io.iter_video_chunks(path, fps=options.fps):
    if per_frame_boxes is not None:
      chunk_boxes = per_frame_boxes[done:done + len(chunk)]
    else:
      chunk_boxes = face_crops.frame_boxes(spec, chunk.shape[1:3], len(chunk))
    done += len(chunk)
    if check is not None:
      check.add(chunk)
    yield chunk, chunk_boxes
  if check is not None:
    check.verify()


def process_video(path: str, clip_id: str, options: PrepareOptions, detector=None,
                  face_checker=None) -> bytes:
  """One video -> serialized clip record. Raises with a specific message when it cannot be used.

  ``face_checker``: a face detector; the clip is refused when it finds no face in any sampled
  frame (``face_check.FaceCheck``)."""
  wav = load_checked_audio(path, options)
  check = face_check.FaceCheck(face_checker, options.fps) if face_checker is not None else None
  return encode_clip(clip_id, _boxed_chunks(path, options, detector, check), wav, options, path)


def curated_records(path: str, clip_id: str, options: PrepareOptions, detector: Any,
                    measurer: Any) -> tuple[list[tuple[str, bytes]], Any]:
  """One video -> ``([(record id, record)], curation.ClipCuration)`` (module docstring)."""
  from data_pipelines import curation as curation_lib  # pylint: disable=import-outside-toplevel
  from data_pipelines import video_io  # pylint: disable=import-outside-toplevel
  wav = load_checked_audio(path, options)
  frames, _ = video_io.read_video(path, fps=options.fps)
  if not len(frames):
    raise ClipSkipped("the video has no frames")
  detections = None
  if options.crop.needs_detector:
    detections = detector.detect(frames, batch_size=options.crop.detector_batch_size)
  boxes = face_crops.frame_boxes(options.crop, frames.shape[1:3], len(frames), detections,
                                 source=path)
  face_boxes, scores = boxes, None
  if detections is not None:
    face_boxes, scores = curation_lib.best_detections(detections)
  decision = curation_lib.curate_clip(frames, wav, face_boxes, scores, config=options.curation,
                                  measurer=measurer, clip_id=clip_id)
  records = []
  for index, segment in enumerate(decision.segments):
    if segment.keep:
      seg_frames, seg_wav, seg_boxes = curation_lib.apply_segment(frames, wav, segment, boxes)
      record_id = curation_lib.segment_clip_id(clip_id, index, len(decision.segments))
      records.append((record_id, encode_clip(record_id, [(seg_frames, seg_boxes)], seg_wav,
                                             options, path)))
  return records, decision


def _crops_for_synthetic(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
  return crops.crop_uint8(frames, np.rint(boxes).astype(np.int64), size=size)


def load_measurer(options: PrepareOptions) -> Any:
  """The SyncNet measurer curation needs (None when sync curation is off). "synthetic" sees the
  record's face crops (its mouth measure needs crops laid out like ``synthetic`` renders)."""
  if options.curation is None or not options.curation.sync:
    return None
  from data_pipelines.curation import sync as sync_lib  # pylint: disable=import-outside-toplevel
  if options.sync_measurer == "synthetic":
    crop = functools.partial(_crops_for_synthetic, size=options.image_size)
    return sync_lib.EmbeddingSync(sync_lib.MouthOpeningEmbedder(), crop, "synthetic_mouth",
                                  sync_lib.SYNTHETIC_MIN_CONFIDENCE)
  return sync_lib.make_measurer(options.sync_measurer, options.sync_weights)


@dataclasses.dataclass
class ClipResult:
  """What one input video gave: records ``[(record id, bytes)]`` (empty when it failed or was
  dropped), the curation decision (``ClipCuration.to_dict()``, None without curation) and the
  failure reason (None when records were written)."""
  path: str
  clip_id: str
  records: list[tuple[str, bytes]]
  decision: dict | None = None
  failure: str | None = None


class ClipWorker:
  """Per-process state (face detector, SyncNet) and the per-clip function both engines call."""

  def __init__(self, options: PrepareOptions):
    self.options = options
    self.detector = face_crops.load_detector(options.crop, options.s3fd_weights)
    self.measurer = load_measurer(options)
    self.face_checker = face_check.make_detector(options.face_check, options.crop,
                                                 options.s3fd_weights)

  def process(self, path: str, clip_id: str) -> ClipResult:
    """Never raises for a bad clip: the failure is returned with its reason."""
    try:
      if self.options.curation is None:
        return ClipResult(path, clip_id, [(clip_id, process_video(
            path, clip_id, self.options, self.detector, self.face_checker))])
      records, decision = curated_records(path, clip_id, self.options, self.detector,
                                          self.measurer)
    except Exception as error:  # any failure of one clip is recorded, never fatal to the run
      return ClipResult(path, clip_id, [], failure=f"{type(error).__name__}: {error}".replace(
          "\n", " "))
    failure = None
    if not records:
      failure = "dropped by curation: " + "; ".join(
          f"frames {s.start}-{s.end} {s.reason}" + (f" ({s.detail})" if s.detail else "")
          for s in decision.segments)
    return ClipResult(path, clip_id, records, decision.to_dict(), failure)
