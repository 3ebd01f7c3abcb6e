"""Metrics of one generated clip: PSNR/SSIM, LSE (syncnet_python), FID features, expert scores.

Per clip, everything is computed from the clip's decoded 25 fps frames (one clip in memory at
a time: test clips are seconds long) and the generated video's own audio track (the driving
audio a lip-sync model writes into its output):
  crops        the `--crop` boxes of the generated video's frames (fixed VoxCeleb2 box, a
               fixed box, or S3FD detections); ground-truth/real frames are cropped with the
               same boxes (the generated video is that footage with a new mouth);
  psnr, ssim   96x96 face crops (or whole frames, region "full") of the generated video vs.
               its ground truth, first N common frames, PSNR capped at 100 dB;
  lse_d, lse_c syncnet_python's SyncNet (`evaluation.lse`) on 224x224 crops: lse_crop
               "track" applies run_pipeline's `crop_video` geometry to the boxes
               (`data_pipelines.face_tracks`; with `--crop s3fd` this is the published
               pipeline up to its XVID round trip), "frame" resizes whole frames (Wav2Lip's
               LRS evaluation);
  fid features FID Inception (`evaluation.fid`) of 128x128 face crops of the generated frames
               and of the real video's frames (accumulated by the caller);
  wav2lip_expert_lse_d/_c/_offset  the same offset search with the Wav2Lip-style expert on
               96x96 crops (its own scale; not the published LSE);
  sync_r       synthetic-face videos only (data_pipelines.synthetic).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np

from data_pipelines import audio, crops, face_crops, face_tracks, video_io
from diff2lip_jax.evaluation import evaluate as expert_lib
from diff2lip_jax.evaluation import fid as fid_lib
from diff2lip_jax.evaluation import lse
from diff2lip_jax.evaluation.filelists import EvalItem

FPS = 25.0
EXPERT_CROP = 96    # the Wav2Lip expert's input size; PSNR/SSIM use this crop too
FID_CROP = 128      # Diff2Lip's face resolution (the Inception resizes to 299x299)
IMAGE_BATCH = 16    # PSNR/SSIM frames per jitted call (fixed: one compilation)
PSNR_CAP = 100.0    # identical frames have infinite PSNR; capped so means stay finite
LSE_CROPS = ("track", "frame")


@dataclasses.dataclass
class MetricSuite:
  """The crop and the loaded metric networks (None: that metric is skipped)."""
  crop: face_crops.CropSpec
  detector: Any = None
  syncnet_v2: lse.SyncNetV2Scorer | None = None
  inception: fid_lib.InceptionFeatures | None = None
  fid_dims: int = fid_lib.DEFAULT_DIMS
  expert: expert_lib.SyncNetScorer | None = None
  synthetic: bool = False
  region: str = "face"
  vshift: int = lse.VSHIFT
  lse_crop: str = "track"
  image_metrics: Callable | None = None

  def skipped(self) -> dict[str, str]:
    """`{metric group: the flag that enables it}` for the metrics this suite does not compute."""
    out = {}
    if self.syncnet_v2 is None:
      out["lse"] = "--syncnet_v2 syncnet_v2.model"
    if self.inception is None:
      out["fid"] = "--fid_weights pt_inception-2015-12-05-6726825d.pth"
    if self.expert is None:
      out["wav2lip_expert"] = "--syncnet lipsync_expert.pth"
    if not self.synthetic:
      out["sync_r"] = "--synthetic"
    return out


@dataclasses.dataclass
class ClipResult:
  """`record`: JSON-able metrics; FID features `[T, D]` float32 (None without FID)."""
  record: dict[str, Any]
  fid_generated: np.ndarray | None = None
  fid_real: np.ndarray | None = None


def frames_and_boxes(path: str, suite: MetricSuite) -> tuple[np.ndarray, np.ndarray]:
  """`(frames [T, H, W, 3] uint8, boxes [T, 4] int64)` of a video at 25 fps."""
  boxes = None
  if suite.crop.needs_detector:   # a first pass finds the faces of every frame
    from diff2lip_jax.inference.scan import scan_video  # pylint: disable=import-outside-toplevel
    scan = scan_video(path, suite.crop, detector=suite.detector)
    boxes = face_crops.frame_boxes(suite.crop, scan.frame_size, scan.count, scan.detections,
                                   source=path)
  frames, _ = video_io.read_video(path, fps=FPS)
  if not len(frames):
    raise ValueError(f"{path}: the video has no frames")
  if boxes is None:
    boxes = face_crops.frame_boxes(suite.crop, frames.shape[1:3], len(frames), source=path)
  count = min(len(frames), len(boxes))
  return frames[:count], boxes[:count]


def common_frames(frames: np.ndarray, other: np.ndarray, other_path: str
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Both clips cut to their common length and (for 1-pixel even-size padding) size."""
  count = min(len(frames), len(other))
  if not count:
    raise ValueError(f"{other_path}: the video has no frames")
  (h, w), (oh, ow) = frames.shape[1:3], other.shape[1:3]
  if abs(oh - h) > 1 or abs(ow - w) > 1:
    raise ValueError(f"{other_path}: frames are {ow}x{oh}, the generated ones {w}x{h}; compare "
                     "with the footage that was lip-synced")
  h, w = min(h, oh), min(w, ow)
  return frames[:count, :h, :w], other[:count, :h, :w]


def psnr_ssim(a: np.ndarray, b: np.ndarray, metrics: Callable) -> tuple[float, float]:
  """Mean PSNR (capped) and SSIM of `[T, H, W, 3]` uint8 frame pairs, in fixed-size batches."""
  psnr, ssim = [], []
  for start in range(0, len(a), IMAGE_BATCH):
    part_a, part_b = a[start:start + IMAGE_BATCH], b[start:start + IMAGE_BATCH]
    valid, pad = len(part_a), IMAGE_BATCH - len(part_a)
    if pad:
      part_a = np.concatenate([part_a, np.repeat(part_a[-1:], pad, 0)])
      part_b = np.concatenate([part_b, np.repeat(part_b[-1:], pad, 0)])
    p, s = metrics(part_a, part_b)
    psnr.append(np.asarray(p)[:valid])
    ssim.append(np.asarray(s)[:valid])
  return (float(np.mean(np.minimum(np.concatenate(psnr), PSNR_CAP))),
          float(np.mean(np.concatenate(ssim))))


def _image_scores(frames, boxes, reference: np.ndarray, reference_path: str,
                  suite: MetricSuite) -> dict[str, Any]:
  generated, truth = common_frames(frames, reference, reference_path)
  if suite.region == "face":
    generated = crops.crop_uint8(generated, boxes[:len(generated)], EXPERT_CROP)
    truth = crops.crop_uint8(truth, boxes[:len(truth)], EXPERT_CROP)
  metrics = suite.image_metrics or expert_lib.image_metrics()
  psnr, ssim = psnr_ssim(generated, truth, metrics)
  return {"compared_frames": int(len(generated)), "psnr": psnr, "ssim": ssim}


def lse_crops(frames: np.ndarray, boxes: np.ndarray, mode: str) -> np.ndarray:
  """`[T, 224, 224, 3]` uint8 crops for syncnet_python's SyncNet (see the module docstring)."""
  if mode == "track":
    return face_tracks.syncnet_face_crops(frames, boxes)
  if mode == "frame":
    height, width = frames.shape[1:3]
    whole = np.tile(np.asarray([0, 0, width, height], np.int64), (len(frames), 1))
    return crops.crop_uint8(frames, whole, face_tracks.CROP_SIZE, "bilinear")
  raise ValueError(f"lse_crop must be one of {LSE_CROPS}, got {mode!r}")


def _audio_scores(path: str, frames, boxes, suite: MetricSuite) -> dict[str, Any]:
  if suite.syncnet_v2 is None and suite.expert is None and not suite.synthetic:
    return {}
  samples, rate = video_io.read_audio_track(path)
  wav = audio.resample(samples, rate, audio.SAMPLE_RATE)
  out: dict[str, Any] = {}
  if suite.syncnet_v2 is not None:
    scores = lse.lse_scores(lse_crops(frames, boxes, suite.lse_crop), wav,
                            scorer=suite.syncnet_v2, vshift=suite.vshift)
    out.update(lse_d=scores["lse_d"], lse_c=scores["lse_c"], lse_offset=scores["offset"],
               lse_windows=scores["num_windows"])
  face = crops.crop_uint8(frames, boxes, EXPERT_CROP) if (suite.expert or suite.synthetic) \
      else None
  if suite.expert is not None:
    scores = suite.expert.score(face, wav, suite.vshift)
    out.update({f"wav2lip_expert_{k}": scores[k] for k in ("lse_d", "lse_c", "offset")})
  if suite.synthetic:
    from data_pipelines import synthetic  # pylint: disable=import-outside-toplevel
    measured = synthetic.measure_mouth_opening(face)
    truth = synthetic.mouth_opening_from_audio(wav, len(face))
    out["sync_r"] = expert_lib.pearson(measured, truth)
  return out


def evaluate_clip(item: EvalItem, suite: MetricSuite, *, fid: bool = True,
                  others: bool = True) -> ClipResult:
  """Metrics of one item. A resumed run may need only the FID features (`others=False`: the
  statistics file is older than the results) or all but them (`fid=False`: they are counted).

  Raises:
    ValueError, OSError: unreadable or mismatched videos, too short clips, no face.
  """
  started = time.time()
  frames, boxes = frames_and_boxes(item.generated, suite)
  record: dict[str, Any] = {"frames": int(len(frames))}
  loaded: dict[str, np.ndarray] = {}

  def other(path: str) -> np.ndarray:
    if path not in loaded:
      loaded[path] = video_io.read_video(path, fps=FPS)[0]
    return loaded[path]

  result = ClipResult(record)
  if fid and suite.inception is not None:
    result.fid_generated = suite.inception(crops.crop_uint8(frames, boxes, FID_CROP),
                                           suite.fid_dims)
    if item.real:
      _, real = common_frames(frames, other(item.real), item.real)
      result.fid_real = suite.inception(crops.crop_uint8(real, boxes[:len(real)], FID_CROP),
                                        suite.fid_dims)
  if suite.inception is not None:
    record["fid_frames"] = int(len(frames))
  if others:
    if item.reference:
      record.update(_image_scores(frames, boxes, other(item.reference), item.reference, suite))
    record.update(_audio_scores(item.generated, frames, boxes, suite))
  record["seconds"] = round(time.time() - started, 3)
  return result
