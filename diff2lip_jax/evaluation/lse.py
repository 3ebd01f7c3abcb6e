"""LSE-D / LSE-C as published (joonson/syncnet_python, reported by Wav2Lip and Diff2Lip).

The procedure of syncnet_python's `SyncNetInstance.evaluate` (and Wav2Lip's
`evaluation/scores_LSE` copy of it), on 25 fps 224x224 face crops and 16 kHz audio:
  * MFCCs of the 16-bit audio (`data_pipelines.mfcc`, 100 frames/s, 4 per video frame);
  * `length = min(num_frames, floor(num_samples / 640))`; windows `v = 0 .. length - 6`
    (the original's `range(0, lastframe)`, `lastframe = length - 5`, so one possible window
    is never used);
  * lip embedding of frames `v .. v+4` (BGR, 0..255), audio embedding of MFCC frames
    `4v .. 4v+19` (`models.syncnet_v2`);
  * `dists[v, j] = ||lip[v] - audio_padded[v + j] + 1e-6||` for `j = 0 .. 2*vshift` with the
    audio embeddings zero-padded by `vshift` on both ends (torch `pairwise_distance`);
  * mean over windows; `min_dist` its minimum, `conf = median - min_dist`,
    `offset = vshift - argmin` (> 0: the audio leads the video).
LSE-D is `min_dist` and LSE-C is `conf` (Wav2Lip's `calculate_scores_*` print and average
exactly these two per video). `framewise_conf` is the original's median-filtered
per-window confidence at the best offset.

Crops: syncnet_python's `run_pipeline` crops faces with `data_pipelines.face_tracks`
(`syncnet_face_crops`); Wav2Lip's LRS evaluation resizes whole generated frames to 224x224
(`data_pipelines.crops.crop_and_resize(frames, full_frame_box, 224, "bilinear")`).
The original also round-trips frames through video/JPEG encoding; feed decoded frames.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any, Mapping

import jax
import numpy as np
import scipy.signal

from data_pipelines import mfcc as mfcc_lib
from diff2lip_jax.evaluation import batching
from diff2lip_jax.models.syncnet_v2 import CLIP_FRAMES, CROP_SIZE, SyncNetV2
from diff2lip_jax.porting.syncnet_v2 import load_syncnet_v2_variables

VSHIFT = 15               # run_syncnet / calculate_scores default offset search (+-15 frames)
BATCH_SIZE = 20           # the original's default (results do not depend on it)
MFCC_WINDOW = 20          # MFCC frames per 5-frame clip
PAIRWISE_EPS = 1e-6       # torch.nn.functional.pairwise_distance eps
FRAMEWISE_MEDFILT = 9

_MODEL = SyncNetV2()


@jax.jit
def _embed_lips(variables: Any, clips_bgr: jax.Array) -> jax.Array:
  return _MODEL.apply(variables, clips_bgr, method=SyncNetV2.embed_lips)


@jax.jit
def _embed_audio(variables: Any, mfcc_windows: jax.Array) -> jax.Array:
  return _MODEL.apply(variables, mfcc_windows, method=SyncNetV2.embed_audio)


def num_sync_windows(num_frames: int, num_samples: int) -> int:
  """Number of 5-frame windows syncnet_python scores: `min(T, floor(n / 640)) - 5`."""
  return min(int(num_frames), int(math.floor(num_samples / mfcc_lib.SAMPLES_PER_VIDEO_FRAME))) \
      - CLIP_FRAMES


def _check_crops(face_crops: np.ndarray) -> np.ndarray:
  crops = np.asarray(face_crops)
  if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
    raise ValueError(f"face crops must be [T, {CROP_SIZE}, {CROP_SIZE}, 3] (syncnet_python's "
                     f"224x224 crops, see data_pipelines.face_tracks.syncnet_face_crops), got "
                     f"{crops.shape}")
  if crops.dtype != np.uint8:
    if not np.issubdtype(crops.dtype, np.number) or not np.all(np.isfinite(crops)):
      raise ValueError(f"face crops must be uint8 (or finite 0..255 floats), got {crops.dtype}")
    if crops.min() < 0 or crops.max() > 255:
      raise ValueError("face crops must hold 0..255 pixel values; got values in "
                       f"[{crops.min()}, {crops.max()}]")
  return crops


class SyncNetV2Scorer(batching.BatchedNetwork):
  """syncnet_python's SyncNet with converted weights; embeds crops and audio in batches
  (jitted once per batch shape for the whole process, see `batching`)."""

  def __init__(self, weights: str | os.PathLike | Mapping[str, Any],
               batch_size: int = BATCH_SIZE, **placement: Any):
    """weights: a `syncnet_v2.model` file or converted `{"params", "batch_stats"}`;
    placement: `devices`, `fixed_batch` (see `batching.BatchedNetwork`)."""
    super().__init__(weights, load_syncnet_v2_variables, batch_size, **placement)

  def _batched(self, fn, make_batch, count: int) -> np.ndarray:
    out = [np.asarray(fn(self.variables, self.place(make_batch(indices))))[:valid]
           for indices, valid in self.batches(count)]
    return np.concatenate(out).astype(np.float32)

  def embed(self, face_crops: np.ndarray, wav_16k: np.ndarray,
            channel_order: str = "rgb") -> tuple[np.ndarray, np.ndarray]:
    """Per-window embeddings `(lip [W, 1024], audio [W, 1024])` float32.

    Args:
      face_crops: `[T, 224, 224, 3]` uint8 crops at 25 fps.
      wav_16k: `[n]` 16 kHz mono audio, int16 or float in [-1, 1].
      channel_order: "rgb" (flipped to the BGR the network was trained on) or "bgr".
    """
    if channel_order not in ("rgb", "bgr"):
      raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    crops = _check_crops(face_crops)
    pcm = mfcc_lib.to_pcm16(wav_16k)
    windows = num_sync_windows(len(crops), len(pcm))
    if windows < 1:
      raise ValueError(f"LSE needs at least {CLIP_FRAMES + 1} frames of video and audio; got "
                       f"{len(crops)} frames and {len(pcm) / mfcc_lib.SAMPLE_RATE:.3f} s of audio")
    if channel_order == "rgb":
      crops = crops[..., ::-1]
    cepstra = mfcc_lib.syncnet_mfcc(pcm).T.astype(np.float32)   # [13, M]
    step = mfcc_lib.MFCC_FRAMES_PER_VIDEO_FRAME
    lips = self._batched(_embed_lips, lambda idx: np.stack(
        [crops[v:v + CLIP_FRAMES] for v in idx]), windows)
    audio = self._batched(_embed_audio, lambda idx: np.stack(
        [cepstra[:, step * v:step * v + MFCC_WINDOW] for v in idx])[..., None], windows)
    return lips, audio


def offset_distances(lip_emb: np.ndarray, audio_emb: np.ndarray,
                     vshift: int = VSHIFT) -> np.ndarray:
  """`[W, 2*vshift + 1]`: entry `[v, j]` is the distance of lip window v to audio window
  `v + j - vshift` (zeros outside the clip), as syncnet_python's `calc_pdist`."""
  lip = np.asarray(lip_emb, np.float64)
  audio = np.asarray(audio_emb, np.float64)
  if lip.ndim != 2 or lip.shape != audio.shape:
    raise ValueError(f"lip and audio embeddings must both be [W, D]; got {lip.shape}, "
                     f"{audio.shape}")
  if vshift < 0:
    raise ValueError(f"vshift must be >= 0, got {vshift}")
  count = len(lip)
  padded = np.concatenate([np.zeros((vshift, lip.shape[1])), audio,
                           np.zeros((vshift, lip.shape[1]))])
  dists = np.empty((count, 2 * vshift + 1))
  for shift in range(2 * vshift + 1):
    dists[:, shift] = np.linalg.norm(lip - padded[shift:shift + count] + PAIRWISE_EPS, axis=1)
  return dists


def lse_from_embeddings(lip_emb: np.ndarray, audio_emb: np.ndarray,
                        vshift: int = VSHIFT) -> dict[str, Any]:
  """Offset search on per-window embeddings; see `lse_scores` for the returned keys."""
  dists = offset_distances(lip_emb, audio_emb, vshift)
  mean_dists = dists.mean(axis=0)
  best = int(np.argmin(mean_dists))
  median = float(np.median(mean_dists))
  min_dist = float(mean_dists[best])
  with warnings.catch_warnings():   # clips shorter than the kernel: zero-padded, as the original
    warnings.simplefilter("ignore", UserWarning)
    framewise = scipy.signal.medfilt(median - dists[:, best], kernel_size=FRAMEWISE_MEDFILT)
  return {"lse_d": min_dist, "lse_c": median - min_dist, "offset": vshift - best,
          "min_dist": min_dist, "conf": median - min_dist, "num_windows": len(dists),
          "mean_dists": mean_dists, "dists": dists, "framewise_conf": framewise}


def lse_scores(face_crops_224: np.ndarray, wav_16k: np.ndarray,
               weights: str | os.PathLike | Mapping[str, Any] | None = None, *,
               scorer: SyncNetV2Scorer | None = None, vshift: int = VSHIFT,
               channel_order: str = "rgb") -> dict[str, Any]:
  """LSE-D / LSE-C of one video, as syncnet_python computes them.

  Args:
    face_crops_224: `[T, 224, 224, 3]` uint8 face crops at 25 fps (RGB unless
      `channel_order="bgr"`).
    wav_16k: `[n]` the video's 16 kHz mono audio (int16, or float in [-1, 1]).
    weights: `syncnet_v2.model` path or converted variables (or pass `scorer`, which keeps
      the loaded weights for many videos).
    vshift: offsets searched, `-vshift..vshift` frames.
  Returns:
    `{"lse_d", "lse_c", "offset", "min_dist", "conf", "num_windows"}` (floats / ints) and the
    arrays `"mean_dists" [2*vshift+1]`, `"dists" [W, 2*vshift+1]`, `"framewise_conf" [W]`.
  """
  if scorer is None:
    if weights is None:
      raise ValueError("lse_scores needs the SyncNet weights: pass weights=path/to/"
                       "syncnet_v2.model (from joonson/syncnet_python) or scorer=...")
    scorer = SyncNetV2Scorer(weights)
  lips, audio = scorer.embed(face_crops_224, wav_16k, channel_order)
  return lse_from_embeddings(lips, audio, vshift)
