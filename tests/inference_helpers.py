"""Shared pieces of the inference tests: a tiny random checkpoint, synthetic videos, a stub S3FD."""
from __future__ import annotations

import pathlib

import flax
import numpy as np
import soundfile

from data_pipelines import crops, synthetic, video_io

FULL = 96          # full-frame side of the synthetic videos
RESPACING = "ddim2"
BATCH = 8


def tiny_config():
  from configs import synthetic as synthetic_config
  config = synthetic_config.get_config()  # 32x32 crops, 32 channels, one res block
  config.sampling.timestep_respacing = RESPACING
  config.sampling.batch_size = BATCH
  return config


def random_params(model_config, seed: int = 0) -> dict:
  """Random weights of the right shapes, drawn with NumPy (Flax's init compiles for ~20 s)."""
  from diff2lip_jax.models import param_shapes
  rng = np.random.default_rng(seed)
  flat = {}
  for path, shape in sorted(param_shapes(model_config).items()):
    if len(shape) > 1:
      flat[path] = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
    elif path[-1] == "scale":
      flat[path] = np.ones(shape, np.float32)
    else:
      flat[path] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
  return flax.traverse_util.unflatten_dict(flat)


def reference_crops(params, config, frames, refs, mels, respacing: str, seed: int,
                    batch_size: int) -> np.ndarray:
  """The reference inference written out over ``sampling.make_sampler`` (DDIM, eta 0): chunks of
  ``batch_size`` (the last padded with its last frame), the seed's noise image in every
  frame's masked half, ``to_uint8(x0*mask + img*(1-mask))``; what the trainer's grids and the
  lip-sync score computed before ``Diff2LipSampler`` took them over."""
  import jax
  from diff2lip_jax import sampling
  from diff2lip_jax.diffusion import create_diffusion
  from diff2lip_jax.models import create_model
  run = sampling.make_sampler(create_model(config.model),
                              create_diffusion(config.diffusion, timestep_respacing=respacing))
  size = frames.shape[1]
  noise = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (size, size, 3)))
  noise = np.broadcast_to(noise, (batch_size, size, size, 3))
  mask = np.asarray(sampling.lower_half_mask(batch_size, size))
  out = []
  for start in range(0, len(frames), batch_size):
    stop = min(start + batch_size, len(frames))
    chunk = lambda a: np.concatenate([a[start:stop], np.repeat(a[stop - 1:stop],
                                                               batch_size - (stop - start), 0)])
    img = chunk(frames).astype(np.float32) / 127.5 - 1.0
    ref = chunk(refs).astype(np.float32) / 127.5 - 1.0
    x0 = np.asarray(run(params, noise, sampling.masked_condition(img, mask, noise), mask, ref,
                        chunk(mels), None))
    shown = (x0 * mask + img * (1.0 - mask) + 1.0) * 127.5
    out.append(np.clip(np.round(shown), 0, 255).astype(np.uint8)[:stop - start])
  return np.concatenate(out)


def face_clip(seed: int, num_frames: int, full: int = FULL):
  return synthetic.generate_clip(seed, num_frames=num_frames, image_size=32,
                                 full_frame_size=full, noise_std=0.0)


def write_face_video(path, clip, frames=None, with_audio=True) -> pathlib.Path:
  frames = clip.full_frames if frames is None else frames
  wav = clip.wav[:int(len(frames) * 640)] if with_audio else None
  return video_io.write_video(path, frames, fps=25.0, audio=wav, audio_sr=16000,
                              preset="ultrafast")


def write_audio_only(path, samples: int = 8000, rate: int = 16000) -> pathlib.Path:
  """A silent AAC file with no video stream (e.g. ``voice.m4a``)."""
  import av
  with av.open(str(path), "w") as container:
    stream = container.add_stream("aac", rate=rate, layout="mono")
    frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp",
                                       layout="mono")
    frame.sample_rate, frame.pts = rate, 0
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  return pathlib.Path(path)


def write_wav(path, wav, rate: int = 16000) -> pathlib.Path:
  soundfile.write(str(path), np.asarray(wav, np.float32), rate)
  return pathlib.Path(path)


def mouth_region_mask(height: int, width: int, box, margin: int = 2) -> np.ndarray:
  """True outside the pasted rows of ``box`` (lower half), ``margin`` px away from them.

  The margin covers H.264's 2x2 chroma blocks: further away, a lossless re-encode of the
  input frames and the output agree exactly.
  """
  x1, y1, x2, y2 = box
  top = y1 + int((y2 - y1) * 0.5)
  keep = np.ones((height, width), bool)
  keep[max(top - margin, 0):y2 + margin, max(x1 - margin, 0):x2 + margin] = False
  return keep


def lossless_round_trip(frames: np.ndarray, directory) -> np.ndarray:
  """What the input frames become after the output's codec (crf 0), for exact comparisons."""
  path = video_io.write_video(pathlib.Path(directory) / "baseline.mp4", frames, crf=0,
                              preset="ultrafast")
  decoded, _ = video_io.read_video(path)
  path.unlink()
  return decoded


def voxceleb2_box(height: int, width: int):
  return crops.voxceleb2_crop_box(height, width)


class StubDetector:
  """Stands in for S3FD (weights are user-supplied): a fixed face box, none in ``missing``."""

  def __init__(self, box=(20, 4, 76, 68), missing=()):
    self.box, self.missing, self.seen = box, set(missing), 0

  def detect(self, frames, batch_size=16):
    out = []
    for _ in frames:
      found = self.seen not in self.missing
      out.append(np.array([list(self.box) + [0.99]], np.float64) if found
                 else np.zeros((0, 5)))
      self.seen += 1
    return out
