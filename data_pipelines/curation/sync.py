"""Audio-video offset and sync confidence of a clip, and the audio shift that corrects the offset.

Measurement: syncnet_python's procedure (`diff2lip_jax.evaluation.lse`): embeddings of every
5-frame window of face crops and of its 0.2 s of audio, mean distance over windows for audio
offsets `-vshift..vshift` frames, `offset = vshift - argmin`, `confidence = median - min`.

Sign convention (syncnet_python's): lip window `v` matches audio window `v - offset` best, so
**offset > 0 means the audio leads the video** by `offset` frames (the sound of video frame `t`
is heard at frame `t - offset`, i.e. too early), offset < 0 means it lags. Correcting it delays
the audio by `offset` frames, `audio_shift_samples = offset * sample_rate / fps` (> 0: later):
video frame `t` is then paired with input audio from frame `t - offset` on (`aligned_span`).

Measurers (all give a `SyncMeasurement`; the offset search and the shift are shared):
  * `syncnet_v2_measurer`: syncnet_python's SyncNet (user-supplied `syncnet_v2.model`) on its
    224x224 face crops (`face_tracks.syncnet_face_crops`); the scale of published LSE-C.
  * `expert_measurer`: the Wav2Lip-style expert (`lipsync_expert.pth` or a `train_syncnet`
    workdir) via `evaluation.evaluate.SyncNetScorer` on 96x96 crops of the face boxes padded
    10 px downwards (Wav2Lip's preprocessing). Its embeddings are L2-normalised, so its
    confidences are on another scale: pick the threshold for it separately.
  * `synthetic_measurer`: for `data_pipelines.synthetic` face crops only (tests, checks):
    "embeddings" are the z-scored mouth opening measured in the crops and the opening the audio
    implies, through the same `lse_from_embeddings` search as SyncNet.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from data_pipelines import crops as crops_lib
from data_pipelines import face_tracks, synthetic
from data_pipelines.face_detection import video_boxes
from diff2lip_jax.evaluation import lse

FPS = 25.0
SAMPLE_RATE = 16000
EXPERT_CROP_SIZE = 96
EXPERT_PADS = (0, 10, 0, 0)      # Wav2Lip preprocessing: 10 px more below the chin
SYNCNET_V2_MIN_CONFIDENCE = 3.0  # LatentSync drops clips under this syncnet_python confidence
SYNTHETIC_MIN_CONFIDENCE = 1.5   # measured: synthetic clips 2.5-2.9 in sync, 0.3-1.3 dubbed

CropFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class SyncMeasurement:
  """Result of the offset search: `offset` in frames (> 0: audio leads), `confidence`
  (median - min of the mean distances), `min_dist` and the number of 5-frame windows."""
  offset: int
  confidence: float
  min_dist: float
  num_windows: int


class SyncMeasurer(Protocol):
  """Measures one shot: frames `[T, H, W, 3]` uint8 RGB, face boxes `[T, 4]` (x1, y1, x2, y2,
  every frame has one), `wav_16k [n]` (int16 or float in [-1, 1]). `default_min_confidence`:
  the confidence threshold to use when the configuration gives none (None: no default)."""
  name: str
  default_min_confidence: float | None

  def measure(self, frames: np.ndarray, boxes: np.ndarray, wav_16k: np.ndarray,
              vshift: int = lse.VSHIFT) -> SyncMeasurement: ...


class Embedder(Protocol):
  """`embed(face_crops [T, S, S, 3] uint8 RGB, wav_16k [n]) -> (lip [W, D], audio [W, D])`."""

  def embed(self, face_crops: np.ndarray, wav_16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ...


class EmbeddingSync:
  """Crops -> per-window embeddings -> syncnet_python's offset search (`lse_from_embeddings`)."""

  def __init__(self, embedder: Embedder, crop: CropFn, name: str,
               default_min_confidence: float | None = None):
    self.embedder, self.crop, self.name = embedder, crop, name
    self.default_min_confidence = default_min_confidence

  def measure(self, frames: np.ndarray, boxes: np.ndarray, wav_16k: np.ndarray,
              vshift: int = lse.VSHIFT) -> SyncMeasurement:
    lips, audio = self.embedder.embed(self.crop(frames, boxes), wav_16k)
    result = lse.lse_from_embeddings(lips, audio, vshift)
    return SyncMeasurement(int(result["offset"]), float(result["conf"]),
                           float(result["min_dist"]), int(result["num_windows"]))


def expert_crops(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """`[T, 96, 96, 3]` uint8: face boxes padded as Wav2Lip's preprocessing, resized."""
  height, width = np.shape(frames)[1:3]
  padded = video_boxes.pad_boxes(np.asarray(boxes), EXPERT_PADS, height, width)
  resized = crops_lib.crop_and_resize(frames, padded, EXPERT_CROP_SIZE)
  return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


class ExpertSync:
  """The Wav2Lip-style expert through `evaluation.evaluate.SyncNetScorer.score` (same offset
  search definition and sign as syncnet_python). No default threshold: its confidences are
  on the scale of its L2-normalised embeddings, unlike syncnet_python's."""
  name = "wav2lip_expert"
  default_min_confidence = None

  def __init__(self, scorer: Any):
    self.scorer = scorer

  def measure(self, frames: np.ndarray, boxes: np.ndarray, wav_16k: np.ndarray,
              vshift: int = lse.VSHIFT) -> SyncMeasurement:
    wav = np.asarray(wav_16k)
    if wav.dtype == np.int16:
      wav = wav.astype(np.float32) / 32768.0
    result = self.scorer.score(expert_crops(frames, boxes), wav, vshift)
    return SyncMeasurement(int(result["offset"]), float(result["lse_c"]),
                           float(result["lse_d"]), int(result["sync_windows"]))


def syncnet_v2_measurer(weights: str | os.PathLike | Mapping[str, Any],
                        batch_size: int = lse.BATCH_SIZE) -> EmbeddingSync:
  """syncnet_python's SyncNet (`syncnet_v2.model` path or converted variables); default
  threshold 3.0, LatentSync's filter on this network's confidence."""
  return EmbeddingSync(lse.SyncNetV2Scorer(weights, batch_size), face_tracks.syncnet_face_crops,
                       "syncnet_v2", SYNCNET_V2_MIN_CONFIDENCE)


def expert_measurer(path: str | os.PathLike, batch_size: int = 64) -> ExpertSync:
  """The Wav2Lip-style expert from `lipsync_expert.pth` or a `train_syncnet` workdir/export."""
  from diff2lip_jax.evaluation import evaluate  # pylint: disable=import-outside-toplevel
  return ExpertSync(evaluate.SyncNetScorer(os.fspath(path), batch_size))


def _zscore(values: np.ndarray) -> np.ndarray:
  values = np.asarray(values, np.float64)
  return (values - values.mean()) / (values.std() + 1e-6)


class MouthOpeningEmbedder:
  """Synthetic faces only: window `v`'s lip "embedding" is the z-scored mouth opening measured
  in crops `v..v+4` (`synthetic.measure_mouth_opening`), its audio "embedding" the z-scored
  opening the audio implies for the same frames (`synthetic.mouth_opening_from_audio`).
  Windows are syncnet_python's (`lse.num_sync_windows`)."""

  def embed(self, face_crops: np.ndarray, wav_16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(lip [W, 5], audio [W, 5])` float32 for crops `[T, S, S, 3]` uint8 RGB."""
    wav = np.asarray(wav_16k)
    wav = wav.astype(np.float32) / 32768.0 if wav.dtype == np.int16 else wav
    windows = lse.num_sync_windows(len(face_crops), len(wav))
    if windows < 1:
      raise ValueError(f"sync needs at least {lse.CLIP_FRAMES + 1} frames of video and audio; "
                       f"got {len(face_crops)} frames and {len(wav) / SAMPLE_RATE:.3f} s")
    frames = windows + lse.CLIP_FRAMES
    lips = _zscore(synthetic.measure_mouth_opening(face_crops[:frames]))
    audio = _zscore(synthetic.mouth_opening_from_audio(wav, frames))
    index = np.arange(windows)[:, None] + np.arange(lse.CLIP_FRAMES)[None]
    return lips[index].astype(np.float32), audio[index].astype(np.float32)


def synthetic_measurer() -> EmbeddingSync:
  """Measurer for synthetic faces: the frames must be `data_pipelines.synthetic` face crops
  (any size; they are measured as they are), boxes are only used by the face filters."""
  def as_they_are(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    del boxes
    return np.asarray(frames)
  return EmbeddingSync(MouthOpeningEmbedder(), as_they_are, "synthetic_mouth",
                       SYNTHETIC_MIN_CONFIDENCE)


MEASURERS = ("syncnet_v2", "expert", "synthetic")


def make_measurer(kind: str, weights: str | os.PathLike | Mapping[str, Any] | None = None
                  ) -> SyncMeasurer:
  """A measurer by name (for CLIs and pipeline workers): "syncnet_v2" (weights: the
  `syncnet_v2.model`), "expert" (weights: `lipsync_expert.pth` or a `train_syncnet` workdir)
  or "synthetic" (no weights)."""
  if kind not in MEASURERS:
    raise ValueError(f"sync measurer must be one of {MEASURERS}, got {kind!r}")
  if kind == "synthetic":
    return synthetic_measurer()
  if weights is None:
    raise ValueError(f"the {kind} sync measurer needs weights: " + (
        "syncnet_python's syncnet_v2.model" if kind == "syncnet_v2" else
        "Wav2Lip's lipsync_expert.pth or a train_syncnet workdir"))
  return syncnet_v2_measurer(weights) if kind == "syncnet_v2" else expert_measurer(weights)


def audio_shift_samples(offset: int, fps: float = FPS, sample_rate: int = SAMPLE_RATE) -> int:
  """Samples the audio is delayed by to correct `offset` frames (> 0: later)."""
  samples = offset * sample_rate / fps
  if abs(samples - round(samples)) > 1e-9:
    raise ValueError(f"{sample_rate} Hz audio at {fps} fps has no whole number of samples per "
                     "frame; resample the audio first")
  return int(round(samples))


@dataclasses.dataclass(frozen=True)
class AlignedSpan:
  """Frames `[video_start, video_end)` and input audio samples `[audio_start, audio_end)` that
  stay once the audio is shifted; output audio sample 0 starts with output frame 0."""
  video_start: int
  video_end: int
  audio_start: int
  audio_end: int

  @property
  def num_frames(self) -> int:
    return self.video_end - self.video_start


def aligned_span(num_frames: int, num_samples: int, offset: int, fps: float = FPS,
                 sample_rate: int = SAMPLE_RATE) -> AlignedSpan:
  """What remains of a clip after delaying its audio by `offset` frames (see the module
  docstring): video frame `t` is paired with the input audio from frame `t - offset`; frames
  without any audio and audio past the last kept frame are cut (nothing is padded)."""
  per_frame = audio_shift_samples(1, fps, sample_rate)
  video_start, audio_start = max(offset, 0), max(-offset, 0) * per_frame
  frames_with_audio = math.ceil(max(num_samples - audio_start, 0) / per_frame)
  count = max(0, min(num_frames - video_start, frames_with_audio))
  return AlignedSpan(video_start, video_start + count, audio_start,
                     min(num_samples, audio_start + count * per_frame))


def apply_span(frames: np.ndarray, wav: np.ndarray, span: AlignedSpan,
               boxes: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
  """`(frames[span], wav[span])` (and `boxes[span]` when given) of an aligned span."""
  out = (frames[span.video_start:span.video_end], wav[span.audio_start:span.audio_end])
  return out if boxes is None else out + (boxes[span.video_start:span.video_end],)
