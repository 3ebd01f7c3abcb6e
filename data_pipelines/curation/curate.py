"""Curation of one clip: scene cuts, face filters, sync offset/confidence, audio shift.

`curate_clip(frames, wav, boxes, scores, config, measurer)` decides; it never changes the
inputs. Steps, each switched and tuned by `CurationConfig`:
  1. scene cuts (`scene_cuts.detect_scene_cuts`): policy "split" cuts the clip into shots and
     curates each; "drop" drops a clip with any cut (reason `scene_cut`). Shots (or clips)
     shorter than `min_frames` are dropped (`too_short`).
  2. face filters per shot (`faces.face_stats`): `missing_faces` (more than
     `max_missing_fraction` of the frames without a face), `small_face` (median shorter box
     side under `min_face_size` px), `low_detection_score` (mean score under `min_mean_score`
     or a frame under `min_frame_score`; scores must be given).
  3. sync per shot (`sync.SyncMeasurer`, syncnet_python's search over +-`vshift` frames):
     `sync_failed` (the measurer raised ValueError, e.g. too little audio), `low_confidence`
     (under `min_confidence`), `offset_out_of_range` (|offset| over `max_abs_offset`).
  4. audio shift (`shift_audio`): the shot's audio is delayed by its offset (see `sync` for the
     sign) and the frames / audio the shift leaves unpaired are cut (`sync.aligned_span`,
     within the shot's own audio); `too_short` again if fewer than `min_frames` remain.
Kept shots have reason `kept`. `apply_segment` cuts the curated frames / audio / boxes out of
the clip; compute mels from the returned audio (a shift of 1 frame is 3.2 mel rows).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from data_pipelines.curation import faces, scene_cuts
from data_pipelines.curation import sync as sync_lib

REASONS = ("kept", "scene_cut", "too_short", "missing_faces", "small_face",
           "low_detection_score", "sync_failed", "low_confidence", "offset_out_of_range")
SCENE_POLICIES = ("split", "drop")


@dataclasses.dataclass(frozen=True)
class CurationConfig:
  """Switches and thresholds (module docstring). `min_confidence` is on the measurer's scale;
  None takes the measurer's default (`syncnet_v2`: 3.0, LatentSync's filter; the Wav2Lip
  expert has none, so it must be set for it)."""
  scene_detection: bool = True
  scene_policy: str = "split"
  scene: scene_cuts.SceneCutConfig = scene_cuts.SceneCutConfig()
  min_frames: int = 25
  face_filter: bool = True
  min_face_size: float = 64.0
  max_missing_fraction: float = 0.2
  min_mean_score: float = 0.0
  min_frame_score: float = 0.0
  sync: bool = True
  vshift: int = 15
  min_confidence: float | None = None
  max_abs_offset: int = 15
  shift_audio: bool = True
  fps: float = sync_lib.FPS
  sample_rate: int = sync_lib.SAMPLE_RATE

  def __post_init__(self):
    if self.scene_policy not in SCENE_POLICIES:
      raise ValueError(f"scene_policy must be one of {SCENE_POLICIES}, got {self.scene_policy!r}")
    if self.min_frames < 1 or self.vshift < 0 or self.max_abs_offset < 0:
      raise ValueError("need min_frames >= 1, vshift >= 0 and max_abs_offset >= 0; got "
                       f"{self.min_frames}, {self.vshift}, {self.max_abs_offset}")
    if not 0.0 <= self.max_missing_fraction <= 1.0:
      raise ValueError(f"max_missing_fraction must be in [0, 1], got {self.max_missing_fraction}")
    sync_lib.audio_shift_samples(1, self.fps, self.sample_rate)   # whole samples per frame

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> "CurationConfig":
    """Inverse of `to_dict`; unknown keys are an error."""
    data = dict(data)
    if isinstance(data.get("scene"), dict):
      data["scene"] = scene_cuts.SceneCutConfig(**data["scene"])
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown curation settings {sorted(unknown)}")
    return cls(**data)


@dataclasses.dataclass
class SegmentDecision:
  """One shot of a clip. `start, end`: its frames in the input clip; `span`: what is kept
  (absolute frames and audio samples, after the audio shift), None when dropped. Measurements
  are None when the step did not run."""
  start: int
  end: int
  keep: bool = False
  reason: str = "kept"
  offset: int | None = None
  confidence: float | None = None
  min_dist: float | None = None
  face_size: float | None = None
  mean_score: float | None = None
  min_score: float | None = None
  missing_fraction: float | None = None
  audio_shift_samples: int = 0
  span: sync_lib.AlignedSpan | None = None
  detail: str = ""


@dataclasses.dataclass
class ClipCuration:
  """Decision for one input clip: detected `cuts` (first frames of new shots) and its shots."""
  clip_id: str
  num_frames: int
  num_samples: int
  cuts: list[int]
  segments: list[SegmentDecision]
  measurer: str | None = None

  @property
  def keep(self) -> bool:
    return any(s.keep for s in self.segments)

  @property
  def kept_segments(self) -> list[SegmentDecision]:
    return [s for s in self.segments if s.keep]

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> "ClipCuration":
    """Inverse of `to_dict` (e.g. decisions read back from JSON lines)."""
    segments = []
    for s in data["segments"]:
      s = dict(s)
      s["span"] = sync_lib.AlignedSpan(**s["span"]) if s.get("span") else None
      segments.append(SegmentDecision(**s))
    return cls(**{**data, "segments": segments})


def min_confidence(config: CurationConfig, measurer: sync_lib.SyncMeasurer) -> float:
  """The confidence threshold in force: the configured one, else the measurer's default."""
  if config.min_confidence is not None:
    return float(config.min_confidence)
  default = getattr(measurer, "default_min_confidence", None)
  if default is None:
    raise ValueError(f"set CurationConfig.min_confidence for the {measurer.name} measurer: its "
                     "confidences are on their own scale (no default threshold)")
  return float(default)


def _check_inputs(frames: np.ndarray, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  frames, wav = np.asarray(frames), np.asarray(wav)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3] RGB, got {frames.dtype} {frames.shape}")
  if wav.ndim != 1:
    raise ValueError(f"audio must be mono [num_samples], got {wav.shape}")
  return frames, wav


def _face_step(seg: SegmentDecision, boxes: np.ndarray, scores: np.ndarray | None,
               config: CurationConfig) -> None:
  stats = faces.face_stats(boxes[seg.start:seg.end],
                           None if scores is None else scores[seg.start:seg.end])
  finite = lambda v: v if np.isfinite(v) else None   # JSON has no NaN
  seg.face_size, seg.missing_fraction = finite(stats.face_size), stats.missing_fraction
  if scores is not None:
    seg.mean_score, seg.min_score = finite(stats.mean_score), finite(stats.min_score)
  if not config.face_filter:
    return
  if stats.missing_fraction > config.max_missing_fraction or not np.isfinite(stats.face_size):
    seg.reason = "missing_faces"
    seg.detail = f"{stats.missing_fraction:.0%} of frames without a face"
  elif stats.face_size < config.min_face_size:
    seg.reason = "small_face"
    seg.detail = f"median face side {stats.face_size:.0f} px < {config.min_face_size:g}"
  elif scores is not None and (stats.mean_score < config.min_mean_score
                               or stats.min_score < config.min_frame_score):
    seg.reason = "low_detection_score"
    seg.detail = f"mean {stats.mean_score:.3f}, min {stats.min_score:.3f}"


def _sync_step(seg: SegmentDecision, frames: np.ndarray, wav: np.ndarray, boxes: np.ndarray,
               found: np.ndarray, config: CurationConfig, measurer: sync_lib.SyncMeasurer) -> None:
  per_frame = sync_lib.audio_shift_samples(1, config.fps, config.sample_rate)
  a0, a1 = seg.start * per_frame, min(len(wav), seg.end * per_frame)
  try:
    shot_boxes = faces.fill_missing(boxes[seg.start:seg.end], found[seg.start:seg.end])
    result = measurer.measure(frames[seg.start:seg.end], shot_boxes, wav[a0:a1], config.vshift)
  except ValueError as error:
    seg.reason, seg.detail = "sync_failed", " ".join(str(error).split())
    return
  seg.offset, seg.confidence, seg.min_dist = result.offset, result.confidence, result.min_dist
  threshold = min_confidence(config, measurer)
  if result.confidence < threshold:
    seg.reason = "low_confidence"
    seg.detail = f"confidence {result.confidence:.3f} < {threshold:g}"
  elif abs(result.offset) > config.max_abs_offset:
    seg.reason = "offset_out_of_range"
    seg.detail = f"|offset| {abs(result.offset)} > {config.max_abs_offset}"


def _finish(seg: SegmentDecision, num_samples: int, config: CurationConfig) -> None:
  """Keep decision and the span after the audio shift (absolute frames / samples)."""
  per_frame = sync_lib.audio_shift_samples(1, config.fps, config.sample_rate)
  a0 = seg.start * per_frame
  a1 = min(num_samples, seg.end * per_frame)
  offset = seg.offset if (config.shift_audio and seg.offset is not None) else 0
  span = sync_lib.aligned_span(seg.end - seg.start, max(a1 - a0, 0), offset, config.fps,
                           config.sample_rate)
  if span.num_frames < config.min_frames:
    seg.reason = "too_short"
    seg.detail = f"{span.num_frames} frames with audio < {config.min_frames}"
    return
  seg.keep, seg.audio_shift_samples = True, sync_lib.audio_shift_samples(offset, config.fps,
                                                                      config.sample_rate)
  seg.span = sync_lib.AlignedSpan(seg.start + span.video_start, seg.start + span.video_end,
                              a0 + span.audio_start, a0 + span.audio_end)


def curate_clip(frames: np.ndarray, wav: np.ndarray, boxes: np.ndarray,
                scores: np.ndarray | None = None, *, config: CurationConfig = CurationConfig(),
                measurer: sync_lib.SyncMeasurer | None = None, clip_id: str = "") -> ClipCuration:
  """Curation decision of one clip (module docstring).

  Args:
    frames: `[T, H, W, 3]` uint8 RGB frames at `config.fps` (the whole clip).
    wav: `[n]` mono audio at `config.sample_rate` (int16, or float in [-1, 1]); sample
      `t * n_per_frame` starts with frame `t`.
    boxes: `[T, 4]` face boxes (x1, y1, x2, y2) in frame pixels; -1 or NaN rows: no face.
    scores: optional `[T]` detection scores in [0, 1] (0: no face); needed for score filters.
    measurer: a `sync_lib.SyncMeasurer`; required when `config.sync`.
  """
  frames, wav = _check_inputs(frames, wav)
  boxes, scores = faces.check_boxes(boxes, len(frames), scores)
  if config.sync and measurer is None:
    raise ValueError("sync curation needs a measurer: data_pipelines.curation.sync."
                     "make_measurer('syncnet_v2', 'syncnet_v2.model') (or 'expert' with "
                     "lipsync_expert.pth), or CurationConfig(sync=False)")
  if config.sync:
    min_confidence(config, measurer)   # fail before any work when no threshold applies
  cuts = scene_cuts.detect_scene_cuts(frames, config.scene) if config.scene_detection else []
  result = ClipCuration(clip_id, len(frames), len(wav), cuts, [],
                        measurer.name if (config.sync and measurer) else None)
  if cuts and config.scene_policy == "drop":
    result.segments.append(SegmentDecision(0, len(frames), reason="scene_cut",
                                           detail=f"cuts at frames {cuts}"))
    return result
  found = faces.face_found(boxes, scores)
  for start, end in scene_cuts.shots_from_cuts(cuts, len(frames)):
    seg = SegmentDecision(start, end)
    result.segments.append(seg)
    if end - start < config.min_frames:
      seg.reason, seg.detail = "too_short", f"{end - start} frames < {config.min_frames}"
      continue
    _face_step(seg, boxes, scores, config)
    if seg.reason == "kept" and config.sync:
      if found[start:end].any():
        _sync_step(seg, frames, wav, boxes, found, config, measurer)
      else:
        seg.reason, seg.detail = "sync_failed", "no frame of the shot has a face box"
    if seg.reason == "kept":
      _finish(seg, len(wav), config)
  return result


def apply_segment(frames: np.ndarray, wav: np.ndarray, segment: SegmentDecision,
                  boxes: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
  """Curated `(frames, wav[, boxes])` of a kept segment (views into the inputs)."""
  if not segment.keep or segment.span is None:
    raise ValueError(f"segment {segment.start}-{segment.end} was dropped ({segment.reason})")
  return sync_lib.apply_span(frames, wav, segment.span, boxes)


def segment_clip_id(clip_id: str, index: int, num_segments: int) -> str:
  """Id of a curated shot: the clip's id, with `#<shot index>` when the clip was split."""
  return clip_id if num_segments == 1 else f"{clip_id}#{index}"
