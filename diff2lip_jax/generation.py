"""Lip-synced face crops for a whole clip: chunked calls of a jitted sampler.

Shared by the trainer's samples, the lip-sync score and the sampling CLI. Follows the
reference inference: per-frame mel windows (frames whose window runs past the audio are
dropped), one noise image for every frame, DDIM, and ``sample*mask + (1-mask)*frame``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import audio
from diff2lip_jax.diffusion import sampling


def to_model_range(frames_uint8: np.ndarray) -> np.ndarray:
  return frames_uint8.astype(np.float32) / 127.5 - 1.0


def to_uint8(images: np.ndarray) -> np.ndarray:
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def shared_noise(seed: int, image_size: int) -> np.ndarray:
  """The one ``[S, S, 3]`` noise image every frame starts from (reference ``sampling_seed``)."""
  return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (image_size, image_size, 3)))


def lip_sync_crops(sampler: Callable[..., Any], params: Any, frames: np.ndarray, mel: np.ndarray,
                   *, ref_frames: np.ndarray | None = None, seed: int = 7, batch_size: int = 16,
                   face_hide_percentage: float = 0.5, rng_seed: int = 0,
                   progress: Callable[[int], None] | None = None) -> np.ndarray:
  """Regenerates the lower half of each face crop so it follows ``mel``.

  Args:
    sampler: ``sampling.make_sampler(...)`` result.
    frames: ``[T, S, S, 3]`` uint8 face crops (the input frames).
    mel: ``[M, 80]`` mel spectrogram of the driving audio (80 rows per second).
    ref_frames: ``[T, S, S, 3*nrefer]`` uint8 identity references (default: the frames
      themselves, the reference's ``cross`` mode).
    batch_size: frames per sampler call; the last chunk is padded so nothing recompiles.
    progress: called with the number of frames finished after each chunk.
  Returns:
    ``[N, S, S, 3]`` uint8 with ``N = min(T, frames with a full mel window)``.
  """
  windows = audio.frame_mel_windows(mel, len(frames))
  count = min(len(frames), len(windows))
  if count == 0:
    raise ValueError(f"no frame has a full 16-step mel window: audio has {mel.shape[0]} mel "
                     "steps (need at least 16, i.e. 0.2 s of audio)")
  refs = frames if ref_frames is None else ref_frames
  size = frames.shape[1]
  noise = np.broadcast_to(shared_noise(seed, size), (batch_size, size, size, 3))
  mask = np.asarray(sampling.lower_half_mask(batch_size, size, face_hide_percentage))
  rng = jax.random.PRNGKey(rng_seed)
  out = np.empty((count, size, size, 3), np.uint8)
  for start in range(0, count, batch_size):
    stop = min(start + batch_size, count)
    pad = batch_size - (stop - start)
    chunk = lambda a: np.concatenate([a[start:stop], np.repeat(a[stop - 1:stop], pad, 0)], 0)
    img = to_model_range(chunk(frames))
    cond = sampling.masked_condition(img, mask, noise)
    rng, key = jax.random.split(rng)
    x0 = sampler(params, jnp.asarray(noise), jnp.asarray(cond), jnp.asarray(mask),
                 jnp.asarray(to_model_range(chunk(refs))), jnp.asarray(chunk(windows)), key)
    shown = np.asarray(x0) * mask + img * (1.0 - mask)
    out[start:stop] = to_uint8(shown[:stop - start])
    if progress is not None:
      progress(stop - start)
  return out


def image_grid(rows: Iterable[np.ndarray]) -> np.ndarray:
  """Stacks ``[N, S, S, 3]`` uint8 panels: one grid row per frame, one column per panel."""
  columns = [np.concatenate(list(panel), axis=0) for panel in rows]
  return np.concatenate(columns, axis=1)
