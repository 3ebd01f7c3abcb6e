"""What a person looks at during training besides the console (training/console.py): the
TensorBoard writer, image grids and demo videos."""
from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Sequence

import jax
import ml_collections
import numpy as np

from diff2lip_jax.inference import Diff2LipSampler, to_uint8

# Shown in the masked-input panel where the model sees noise: the model's 0.0 as a pixel.
MASKED_PIXEL = 128
# Grids and demo videos are upscaled (nearest neighbour: the pixels the model made, no
# invented detail) to at least this width: 32-pixel crops are unreadable at 1:1.
DISPLAY_MIN_WIDTH = 512
LABEL_BAR_HEIGHT = 28
LABEL_BAR_COLOUR = (24, 24, 24)
GRID_LABELS = ("input (masked)", "reference", "generated", "truth")
DEMO_LABELS = ("input", "generated")


def image_grid(panels: Iterable[np.ndarray]) -> np.ndarray:
  """Stacks ``[N, S, S, 3]`` uint8 panels: one grid row per frame, one column per panel."""
  columns = [np.concatenate(list(panel), axis=0) for panel in panels]
  return np.concatenate(columns, axis=1)


def upscale(images: np.ndarray, factor: int) -> np.ndarray:
  """Nearest-neighbour upscaling of ``[..., H, W, C]`` to ``[..., H*factor, W*factor, C]``."""
  return np.repeat(np.repeat(images, factor, axis=-3), factor, axis=-2)


def label_bar(labels: Sequence[str], widths: Sequence[int],
              height: int = LABEL_BAR_HEIGHT) -> np.ndarray:
  """``[height, sum(widths), 3]`` uint8: a dark bar with each label centred over its column.

  Drawn with PIL's built-in font (no font file, no download): the scalable one when PIL has
  FreeType, else its small bitmap font.
  """
  from PIL import Image, ImageDraw, ImageFont
  try:
    font = ImageFont.load_default(size=max(int(height * 0.6), 8))
  except (ImportError, TypeError, ValueError):  # PIL without FreeType (or < 10.1)
    font = ImageFont.load_default()
  bar = Image.new("RGB", (int(sum(widths)), int(height)), LABEL_BAR_COLOUR)
  draw = ImageDraw.Draw(bar)
  left_edge = 0
  for label, width in zip(labels, widths):
    x0, y0, x1, y1 = draw.textbbox((0, 0), label, font=font)
    draw.text((left_edge + (width - (x1 - x0)) // 2 - x0, (height - (y1 - y0)) // 2 - y0),
              label, fill=(255, 255, 255), font=font)
    left_edge += width
  return np.asarray(bar)


def labelled_panels(panels: Sequence[np.ndarray], labels: Sequence[str],
                    min_width: int = DISPLAY_MIN_WIDTH) -> np.ndarray:
  """Panels side by side, upscaled by the smallest integer factor that makes them at least
  ``min_width`` pixels wide together, under a bar naming each panel.

  Args:
    panels: uint8 ``[..., H, W_i, 3]`` with equal leading dims and ``H`` (an image, or a
      video ``[T, H, W_i, 3]``).
    labels: one name per panel.
  Returns:
    uint8 ``[..., LABEL_BAR_HEIGHT + H*k, sum(W_i)*k, 3]`` with ``k`` the upscaling factor.
  """
  if len(panels) != len(labels):
    raise ValueError(f"{len(panels)} panels but {len(labels)} labels")
  factor = max(1, -(-int(min_width) // sum(p.shape[-2] for p in panels)))
  body = np.concatenate([upscale(np.asarray(p, np.uint8), factor) for p in panels], axis=-2)
  bar = label_bar(labels, [p.shape[-2] * factor for p in panels])
  bar = np.broadcast_to(bar, body.shape[:-3] + bar.shape)
  return np.concatenate([bar, body], axis=-3)


def display_grid(grid: np.ndarray, labels: Sequence[str] = GRID_LABELS) -> np.ndarray:
  """:meth:`RunLogger.grid`'s ``[F*S, P*S, 3]`` grid, upscaled and labelled column by column."""
  columns = np.split(grid, len(labels), axis=1)
  return labelled_panels(columns, labels)


def _pixels(images: np.ndarray) -> np.ndarray:
  """Batch images as uint8 (the pipeline gives [-1, 1] floats, or uint8 pixels)."""
  images = np.asarray(images)
  return images if images.dtype == np.uint8 else to_uint8(images)


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

  def sampler(self, params: Any, batch_size: int) -> Diff2LipSampler:
    """The face-crop sampler of grids and demos: DDIM (eta 0) with ``train.sample_respacing``,
    starting from the noise image of ``sampling.seed``."""
    return Diff2LipSampler(params, self.config, respacing=str(self.config.train.sample_respacing),
                           use_ddim=True, eta=0.0, clip_denoised=True,
                           seed=int(self.config.sampling.seed), batch_size=batch_size,
                           check=False)

  def _fixed_batch(self) -> dict[str, np.ndarray]:
    if self._sample_batch is None:
      from diff2lip_jax.training import data
      config = self.config.copy_and_resolve_references()
      with config.unlocked():
        config.train.batch_size = 1
        config.data.pipeline.worker_count = 0
      iterator = data.train_iterator(config, self._sample_shards, seed_offset=12345,
                                     process_local=True)
      self._sample_batch = next(iterator)
    return self._sample_batch

  def grid(self, params: Any, batch: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """uint8 grid: masked input | reference | generated | truth, one row per frame.

    ``batch``: a training batch (``image``, ``ref_img`` ``[B, F, S, S, C]``, ``indiv_mels``
    ``[B, F, 80, 16]``) whose first window is shown; default the run's fixed sample window.
    """
    batch = self._fixed_batch() if batch is None else batch
    frames, refs = _pixels(batch["image"][0]), _pixels(batch["ref_img"][0])
    sampler = self.sampler(params, batch_size=len(frames))
    generated = sampler.generate(frames, refs, batch["indiv_mels"][0])
    mask = sampler.mask[:len(frames)] > 0
    masked_input = np.where(mask, np.uint8(MASKED_PIXEL), frames)
    return image_grid([masked_input, refs[..., :3], generated, frames])

  def samples(self, step: int, params: Any, demo_video: bool = False) -> None:
    """Writes the grid (PNG and TensorBoard, upscaled and labelled: :func:`display_grid`) and,
    if asked, the demo video."""
    grid = display_grid(self.grid(params))
    _write_png(os.path.join(self.sample_dir, f"grid_{step:07d}.png"), grid)
    self.writer.add_image("samples/masked|reference|generated|truth", grid, step,
                          dataformats="HWC")
    self.writer.flush()
    if demo_video:
      path = self.demo_video(step, params)
      if path is not None:
        logging.info("demo video: %s", path)

  def demo_video(self, step: int, params: Any) -> str | None:
    """A held-out synthetic face driven by another clip's speech, written as mp4 with audio.

    Side by side under a label bar: the input face | the generated one, upscaled to at least
    ``DISPLAY_MIN_WIDTH`` pixels wide (:func:`labelled_panels`), with the driving speech as
    its sound track. Returns the path, or None when there is no demo
    (``train.demo_video_frames`` = 0, or no synthetic data).
    """
    from data_pipelines import audio, synthetic, video_io
    from diff2lip_jax.training.data import EVAL_SEED_OFFSET
    frames = int(self.config.train.get("demo_video_frames", 0) or 0)
    if frames <= 0 or not self.config.data.get("synthetic_clips"):
      return None
    size = int(self.config.model.image_size)
    seed = int(self.config.data.synthetic_seed) + 2 * EVAL_SEED_OFFSET
    face = synthetic.generate_clip(seed, num_frames=frames, image_size=size)
    speech = synthetic.generate_clip(seed + 1, num_frames=frames, image_size=size)
    sampler = self.sampler(params, batch_size=int(self.config.sampling.batch_size))
    out = sampler.lip_sync_crops(face.frames, audio.melspectrogram(speech.wav))
    side_by_side = labelled_panels([face.frames[:len(out)], out], DEMO_LABELS)
    path = os.path.join(self.sample_dir, f"demo_{step:07d}.mp4")
    video_io.write_video(path, side_by_side, fps=25, audio=speech.wav[:len(out) * 640],
                         audio_sr=16000)
    return path

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
