"""What a person looks at during training besides the console (training/console.py): the
TensorBoard writer, image grids and demo videos."""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from diff2lip_jax import generation
from diff2lip_jax.diffusion import sampling
from diff2lip_jax.diffusion import create_diffusion


def _write_png(path: str, image: np.ndarray) -> None:
  from PIL import Image
  tmp = path + ".tmp.png"
  Image.fromarray(image).save(tmp)
  os.replace(tmp, path)


class RunLogger:
  """The TensorBoard writer (``writer``, None off process 0), PNG grids and mp4 demos."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict, model: Any,
               sample_shards: str):
    self.config, self.model, self.workdir = config, model, workdir
    self.sample_dir = os.path.join(workdir, "samples")
    self.is_main = jax.process_index() == 0
    self.writer = None
    if self.is_main:
      from tensorboardX import SummaryWriter
      os.makedirs(self.sample_dir, exist_ok=True)
      self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
    self._sample_shards = sample_shards
    self._sample_batch = None
    self._sampler = None

  def _get_sampler(self):
    if self._sampler is None:
      diffusion = create_diffusion(self.config.diffusion,
                                   timestep_respacing=self.config.train.sample_respacing)
      self._sampler = sampling.make_sampler(self.model, diffusion)
    return self._sampler

  def _fixed_batch(self) -> dict[str, np.ndarray]:
    if self._sample_batch is None:
      from diff2lip_jax.training import data
      config = self.config.copy_and_resolve_references()
      with config.unlocked():
        config.train.batch_size = 1
        config.data.pipeline.worker_count = 0
      iterator = data.train_iterator(config, self._sample_shards, seed_offset=12345)
      self._sample_batch = next(iterator)
    return self._sample_batch

  def samples(self, step: int, params: Any, demo_video: bool = False) -> None:
    """Grid: masked input | reference | generated | ground truth, one row per frame."""
    batch = self._fixed_batch()
    frames = generation.to_uint8(batch["image"][0])
    refs = generation.to_uint8(batch["ref_img"][0])
    mels = batch["indiv_mels"][0]
    size, n = frames.shape[1], frames.shape[0]
    sampler = self._get_sampler()
    mask = np.asarray(sampling.lower_half_mask(n, size))
    noise = np.broadcast_to(generation.shared_noise(int(self.config.sampling.seed), size),
                            frames.shape).astype(np.float32)
    img = generation.to_model_range(frames)
    cond = sampling.masked_condition(img, mask, noise)
    x0 = np.asarray(sampler(params, noise, cond, mask, generation.to_model_range(refs), mels,
                            None))
    generated = generation.to_uint8(x0 * mask + img * (1 - mask))
    masked_input = generation.to_uint8(img * (1 - mask))
    grid = generation.image_grid([masked_input, refs, generated, frames])
    _write_png(os.path.join(self.sample_dir, f"grid_{step:07d}.png"), grid)
    self.writer.add_image("samples/masked|reference|generated|truth", grid, step,
                          dataformats="HWC")
    self.writer.flush()
    if demo_video and self.config.data.synthetic_clips:
      path = self.demo_video(step, params)
      logging.info("demo video: %s", path)

  def demo_video(self, step: int, params: Any) -> str:
    """A held-out synthetic face driven by another clip's speech, written as mp4 with audio."""
    from data_pipelines import audio, synthetic, video_io
    from diff2lip_jax.training.data import EVAL_SEED_OFFSET
    size = int(self.config.model.image_size)
    frames = int(self.config.train.demo_video_frames)
    seed = int(self.config.data.synthetic_seed) + 2 * EVAL_SEED_OFFSET
    face = synthetic.generate_clip(seed, num_frames=frames, image_size=size)
    speech = synthetic.generate_clip(seed + 1, num_frames=frames, image_size=size)
    out = generation.lip_sync_crops(self._get_sampler(), params, face.frames,
                                    audio.melspectrogram(speech.wav),
                                    seed=int(self.config.sampling.seed),
                                    batch_size=int(self.config.sampling.batch_size))
    side_by_side = np.concatenate([face.frames[:len(out)], out], axis=2)
    path = os.path.join(self.sample_dir, f"demo_{step:07d}.mp4")
    video_io.write_video(path, side_by_side, fps=25, audio=speech.wav[:len(out) * 640],
                         audio_sr=16000)
    return path

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
