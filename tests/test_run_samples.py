"""The trainer's image grids and demo video: drawn by inference.Diff2LipSampler, as before."""
import numpy as np
import pytest

from data_pipelines import audio, synthetic, video_io
from diff2lip_jax import checkpoints, inference
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
  monkeypatch.setattr(logger, "grid", lambda params: np.zeros((32, 128, 3), np.uint8))
  logger.samples(7, params, demo_video=True)  # the end of a run: grid, and no demo
  assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["grid_0000007.png"]
  config.train.demo_video_frames = 12
  path = logger.demo_video(8, params)
  frames, info = video_io.read_video(path)
  # Input | generated side by side, for the frames with a full mel window of 12 frames' speech.
  covered = inference.count_mel_windows(audio.melspectrogram(np.zeros(12 * 640, np.float32)))
  assert frames.shape == (covered, 32, 64, 3) and 0 < covered < 12 and info.has_audio
  logger.close()
