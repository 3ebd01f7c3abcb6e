"""The trainer's image grids and demo video: drawn by inference.Diff2LipSampler, as before."""
import numpy as np
import pytest

from data_pipelines import audio, synthetic, video_io
from diff2lip_jax import checkpoints, inference
from diff2lip_jax.training import reporting
from diff2lip_jax.training.data import EVAL_SEED_OFFSET
from diff2lip_jax.training.reporting import MASKED_PIXEL, RunLogger
from tests.inference_helpers import RESPACING, reference_crops


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
  return checkpoints.load_inference_checkpoint(tiny_checkpoint)


@pytest.fixture()
def run_setup(checkpoint):
  params, config = checkpoint
  config = config.copy_and_resolve_references()
  config.train.sample_respacing = RESPACING
  return params, config


def _window(config, seed: int = 3) -> dict[str, np.ndarray]:
  """One training window as the input pipeline gives it: [-1, 1] images, per-frame mels."""
  frames = int(config.model.nframes)
  clip = synthetic.generate_clip(seed, num_frames=frames + 8, image_size=32)
  to_range = lambda a: a[None].astype(np.float32) / 127.5 - 1.0
  return {"image": to_range(clip.frames[:frames]), "ref_img": to_range(clip.frames[8:8 + frames]),
          "indiv_mels": inference.mel_windows(clip.mel, 0, frames)[None]}


def test_grid_is_the_samplers_generation_and_the_reference_computation(run_setup, tmp_path):
  params, config = run_setup
  logger = RunLogger(str(tmp_path), config, None, sample_shards="")
  batch = _window(config)
  grid = logger.grid(params, batch)
  size, n = 32, int(config.model.nframes)
  assert grid.shape == (n * size, 4 * size, 3) and grid.dtype == np.uint8
  masked, refs, generated, truth = (grid[:, i * size:(i + 1) * size].reshape(n, size, size, 3)
                                    for i in range(4))
  frames = inference.to_uint8(batch["image"][0])
  np.testing.assert_array_equal(truth, frames)
  np.testing.assert_array_equal(refs, inference.to_uint8(batch["ref_img"][0]))
  np.testing.assert_array_equal(masked[:, :16], frames[:, :16])
  assert (masked[:, 16:] == MASKED_PIXEL).all()
  sampler = inference.Diff2LipSampler(params, config, respacing=RESPACING,
                                      seed=int(config.sampling.seed), batch_size=n)
  np.testing.assert_array_equal(generated, sampler.generate(frames, refs, batch["indiv_mels"][0]))
  # The computation the trainer's grids ran before the sampler took them over, bit for bit.
  np.testing.assert_array_equal(generated, reference_crops(
      params, config, frames, refs, batch["indiv_mels"][0], RESPACING,
      seed=int(config.sampling.seed), batch_size=n))
  logger.close()


def test_demo_video_frames_zero_means_no_demo_video(run_setup, tmp_path, monkeypatch):
  params, config = run_setup
  config.data.synthetic_clips = 8
  config.train.demo_video_frames = 0
  logger = RunLogger(str(tmp_path), config, None, sample_shards="")
  assert logger.demo_video(7, params) is None
  monkeypatch.setattr(logger, "grid", lambda params: np.zeros((5 * 32, 128, 3), np.uint8))
  logger.samples(7, params, demo_video=True)  # the end of a run: grid, and no demo
  assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["grid_0000007.png"]
  from PIL import Image
  with Image.open(tmp_path / "samples" / "grid_0000007.png") as png:  # 4x, under the labels
    assert png.size == (512, reporting.LABEL_BAR_HEIGHT + 5 * 32 * 4)
  config.train.demo_video_frames = 12
  path = logger.demo_video(8, params)
  frames, info = video_io.read_video(path)
  # Input | generated side by side, for the frames with a full mel window of 12 frames' speech,
  # upscaled 8x (64 -> 512 px wide) under a label bar, with the driving speech as sound.
  covered = inference.count_mel_windows(audio.melspectrogram(np.zeros(12 * 640, np.float32)))
  bar = reporting.LABEL_BAR_HEIGHT
  assert frames.shape == (covered, bar + 32 * 8, 64 * 8, 3) and 0 < covered < 12
  assert info.has_audio
  labels = frames[:, :bar].astype(int)
  assert (labels.max(axis=-1) > 200).sum(axis=(1, 2)).min() > 20  # white text in every frame
  face = synthetic.generate_clip(int(config.data.synthetic_seed) + 2 * EVAL_SEED_OFFSET, 12,
                                 image_size=32)
  shown = frames[:, bar:, :256].reshape(covered, 32, 8, 32, 8, 3).mean(axis=(2, 4))
  assert np.abs(shown - face.frames[:covered]).mean() < 6  # the input panel, through H.264
  logger.close()


def test_labelled_panels_upscale_and_name_each_panel():
  left = np.zeros((2, 8, 8, 3), np.uint8)
  right = np.full((2, 8, 16, 3), 200, np.uint8)
  out = reporting.labelled_panels([left, right], ["in", "out"], min_width=100)
  bar = reporting.LABEL_BAR_HEIGHT
  assert out.shape == (2, bar + 8 * 5, 24 * 5, 3)      # factor ceil(100 / 24) = 5
  np.testing.assert_array_equal(out[:, bar:, :40], 0)
  np.testing.assert_array_equal(out[:, bar:, 40:], 200)
  # Each label is drawn over its own panel: bright text pixels in both halves of the bar.
  text = out[0, :bar].max(axis=-1) > 128
  assert text[:, :40].sum() > 5 and text[:, 40:].sum() > 5
  blank = reporting.labelled_panels([left, right], ["", ""], min_width=100)
  assert not (blank[0, :bar].max(axis=-1) > 128).any()
  grid = reporting.display_grid(np.zeros((3 * 32, 4 * 32, 3), np.uint8))
  assert grid.shape == (bar + 3 * 32 * 4, 512, 3)
  with pytest.raises(ValueError, match="labels"):
    reporting.labelled_panels([left], ["a", "b"])
