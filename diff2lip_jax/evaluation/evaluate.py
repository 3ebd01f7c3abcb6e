"""The Wav2Lip-style SyncNet expert's sync score, the offset search, PSNR/SSIM helpers.

`SyncNetScorer` runs the syncnet_python offset search (`sync_offset_confidence`: embeddings of
5-frame face windows and their 0.2 s audio windows, distances for audio offsets of
-vshift..vshift frames, averaged over frames; the smallest mean distance, the median minus it,
and the best shift, > 0: the audio leads the video) with the Wav2Lip-style expert
(a Wav2Lip lipsync_expert.pth or a `train_syncnet` workdir/export), whose embeddings are
L2-normalised: values are on that expert's scale, reported by `evaluate` as
`wav2lip_expert_lse_d` / `_c`, not the published LSE (that is `evaluation.lse`).
The command line is `evaluation.command` (`python -m diff2lip_jax.evaluate`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

FPS = 25.0
CROP_SIZE = 96  # the SyncNet expert's input size


def calc_pdist(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int) -> np.ndarray:
  """syncnet_python ``calc_pdist``: ``[T, 2*vshift+1]`` distances of frame i to audio i+j-vshift.

  The audio embeddings are zero-padded by ``vshift`` on both ends; distances are torch's
  ``pairwise_distance`` (``||a - b + 1e-6||``).
  """
  video_emb, audio_emb = np.asarray(video_emb, np.float64), np.asarray(audio_emb, np.float64)
  padded = np.pad(audio_emb, ((vshift, vshift), (0, 0)))
  windows = np.lib.stride_tricks.sliding_window_view(padded, len(video_emb), axis=0)
  windows = windows.transpose(2, 0, 1)[:, :2 * vshift + 1]  # [T, win, D]: row i -> padded[i+j]
  return np.linalg.norm(video_emb[:, None, :] - windows + 1e-6, axis=-1)


def sync_offset_confidence(video_emb: np.ndarray, audio_emb: np.ndarray,
                           vshift: int = 15) -> dict[str, float]:
  """``{"lse_d", "lse_c", "offset"}`` from per-frame embeddings (syncnet_python ``evaluate``)."""
  dists = calc_pdist(video_emb, audio_emb, vshift)
  mean_dist = dists.mean(axis=0)
  best = int(np.argmin(mean_dist))
  median = float(np.sort(mean_dist)[(len(mean_dist) - 1) // 2])  # torch.median: lower middle
  return {"lse_d": float(mean_dist[best]), "lse_c": median - float(mean_dist[best]),
          "offset": vshift - best}


class SyncNetScorer:
  """Jitted SyncNet expert embeddings of face-crop windows and mel windows."""

  def __init__(self, path: str, batch_size: int = 64):
    import jax
    from diff2lip_jax.models import syncnet
    from diff2lip_jax.syncnet.expert import load_syncnet_expert
    self.variables = load_syncnet_expert(path)
    model = syncnet.SyncNetColor()
    self.batch_size = batch_size
    self._face = jax.jit(lambda v, f: model.apply(v, syncnet.syncnet_face_input(f),
                                                  method=model.encode_face))
    self._audio = jax.jit(lambda v, m: model.apply(v, m, method=model.encode_audio))

  def _batched(self, fn, items: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(items), self.batch_size):
      part = items[start:start + self.batch_size]
      pad = self.batch_size - len(part)
      full = np.concatenate([part, np.repeat(part[-1:], pad, 0)]) if pad else part
      out.append(np.asarray(fn(self.variables, full))[:len(part)])
    return np.concatenate(out)

  def score(self, crops: np.ndarray, wav_16k: np.ndarray, vshift: int = 15) -> dict[str, Any]:
    """crops ``[T, 96, 96, 3]`` uint8 RGB faces, wav 16 kHz -> LSE-D, LSE-C, offset."""
    from data_pipelines import audio
    length = min(len(crops), int(math.floor(len(wav_16k) / 640)))  # 640 samples per frame
    windows = length - 5  # syncnet_python: range(0, lastframe), lastframe = length - 5
    if windows < 1:
      raise ValueError(f"LSE needs at least 6 frames of video and audio, got {length}")
    mel = audio.melspectrogram(wav_16k)
    faces = np.stack([crops[i:i + 5] for i in range(windows)]).astype(np.float32) / 255.0
    mels = np.stack([audio.sync_mel_window(mel, i) for i in range(windows)])[..., None]
    result = sync_offset_confidence(self._batched(self._face, faces),
                                    self._batched(self._audio, mels), vshift)
    return {**result, "sync_windows": windows}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson r of two series; 0 for fewer than 2 values or a constant series."""
  if len(a) < 2 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
    return 0.0
  return float(np.corrcoef(a, b)[0, 1])


def image_metrics() -> Callable:
  """Jitted `(a, b) -> (psnr [N], ssim [N])` of uint8 `[N, H, W, 3]` images (dm-pix SSIM:
  11x11 Gaussian window, sigma 1.5)."""
  import dm_pix
  import jax

  @jax.jit
  def metrics(a, b):
    a, b = a.astype("float32") / 255.0, b.astype("float32") / 255.0
    return dm_pix.psnr(a, b), dm_pix.ssim(a, b)
  return metrics
