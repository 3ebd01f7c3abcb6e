"""Synthetic talking faces: determinism, audio-driven mouth, measurable opening, writers."""
import json
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import soundfile

from data_pipelines import audio, shards, synthetic, video_io

SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps


def test_clip_is_deterministic_and_seed_dependent():
  first = synthetic.generate_clip(7, num_frames=20)
  again = synthetic.generate_clip(7, num_frames=20)
  for name in ("frames", "wav", "mel", "mouth_opening", "face_box", "mouth_box"):
    np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
  other = synthetic.generate_clip(8, num_frames=20)
  assert not np.array_equal(first.frames, other.frames)
  assert not np.array_equal(first.wav, other.wav)


def test_clip_shapes_and_layout():
  clip = synthetic.generate_clip(3, num_frames=30)
  assert clip.frames.shape == (30, 128, 128, 3) and clip.frames.dtype == np.uint8
  assert clip.wav.shape == (30 * SAMPLES_PER_FRAME,) and clip.wav.dtype == np.float32
  np.testing.assert_array_equal(clip.mel, audio.melspectrogram(clip.wav))
  assert clip.mel.shape == (1 + 30 * SAMPLES_PER_FRAME // 200, 80)
  for name in ("face_box", "mouth_box"):
    assert getattr(clip, name).shape == (30, 4)
  np.testing.assert_array_equal(clip.mouth_opening,
                                synthetic.mouth_opening_from_audio(clip.wav, 30))
  # VoxCeleb2-like crop: the face fills the frame and the mouth is in the regenerated half.
  face_width = clip.face_box[:, 2] - clip.face_box[:, 0]
  assert face_width.min() > 0.55 * 128 and clip.face_box[:, 3].max() <= 128 + 4
  assert clip.mouth_box[:, 1].min() > 64 and clip.mouth_box[:, 3].max() < 0.9 * 128
  record = clip.to_dict()
  assert record["gt"]["mouth_opening"] is clip.mouth_opening
  assert record["boxes"].shape == (30, 4)


def test_identities_vary():
  clips = [synthetic.generate_clip(seed, num_frames=2) for seed in range(12)]
  skins = np.array([c.identity["skin"] for c in clips])
  assert np.ptp(skins.mean(axis=1)) > 60  # light and dark skin tones
  assert len({c.identity["hair_style"] for c in clips}) >= 3
  assert len({round(c.identity["f0"]) for c in clips}) == 12


def test_opening_follows_audio_energy():
  wav = np.zeros(40 * SAMPLES_PER_FRAME, np.float32)
  t = np.arange(10 * SAMPLES_PER_FRAME) / 16000
  wav[20 * SAMPLES_PER_FRAME:30 * SAMPLES_PER_FRAME] = 0.5 * np.sin(2 * np.pi * 300 * t)
  opening = synthetic.mouth_opening_from_audio(wav, 40)
  np.testing.assert_array_equal(opening[:18], 0)
  np.testing.assert_allclose(opening[21:29], 1.0)
  np.testing.assert_array_equal(opening[32:], 0)
  # Steady sine of RMS 10^(-34/20): half way between -50 dB and -18 dB.
  amplitude = np.sqrt(2) * 10 ** (-34 / 20)
  steady = amplitude * np.sin(2 * np.pi * 300 * np.arange(20 * SAMPLES_PER_FRAME) / 16000)
  np.testing.assert_allclose(synthetic.mouth_opening_from_audio(steady, 20)[2:-2], 0.5,
                             atol=2e-3)


def test_measured_opening_correlates_with_ground_truth():
  measured, truth = [], []
  for seed in range(6):
    clip = synthetic.generate_clip(100 + seed, num_frames=50, noise_std=0.0)
    estimate = synthetic.measure_mouth_opening(clip.frames)
    assert np.corrcoef(estimate, clip.mouth_opening)[0, 1] > 0.9
    measured.append(estimate)
    truth.append(clip.mouth_open_px / 128)
  assert np.corrcoef(np.concatenate(measured), np.concatenate(truth))[0, 1] > 0.9
  noisy = synthetic.generate_clip(200, num_frames=50)  # default sensor noise
  assert np.corrcoef(synthetic.measure_mouth_opening(noisy.frames), noisy.mouth_opening)[0, 1] > 0.9


def test_driving_audio_controls_the_mouth():
  silence = synthetic.generate_clip(9, wav=np.zeros(20 * SAMPLES_PER_FRAME, np.float32))
  assert silence.num_frames == 20
  np.testing.assert_array_equal(silence.mouth_opening, 0)
  closed = synthetic.measure_mouth_opening(silence.frames)
  t = np.arange(20 * SAMPLES_PER_FRAME) / 16000
  loud = synthetic.generate_clip(9, wav=0.3 * np.sin(2 * np.pi * 200 * t))
  np.testing.assert_allclose(loud.mouth_opening, 1.0)
  opened = synthetic.measure_mouth_opening(loud.frames)
  assert closed.max() < 0.02 and opened.min() > 0.06  # crop-height fractions


def test_full_frames_crop_back_to_face():
  clip = synthetic.generate_clip(5, num_frames=3, full_frame_size=224, noise_std=0.0)
  assert clip.full_frames.shape == (3, 224, 224, 3)
  x0, y0, x1, y1 = clip.to_dict()["boxes"][0].astype(int)
  crop = PIL.Image.fromarray(clip.full_frames[0][y0:y1, x0:x1]).resize((128, 128),
                                                                      PIL.Image.BILINEAR)
  assert np.abs(np.asarray(crop, float) - clip.frames[0]).mean() < 3.0
  box = clip.full_face_box[0]
  assert x0 < box[0] < box[2] < x1


def test_dataset_clip_lengths_and_seeds():
  # Generation speed is measured by benchmarks/bench_input_pipeline.py, not asserted here.
  clips = list(synthetic.generate_dataset(4, seed=3, min_frames=20, max_frames=24, image_size=32))
  assert all(20 <= c.num_frames <= 24 for c in clips)
  assert [c.seed for c in clips] == [synthetic.clip_seed(3, i) for i in range(4)]


def _shard_contents(directory):
  source = shards.open_data_source(shards.find_shard_files(directory))
  return [shards.parse_clip(source[i]) for i in range(len(source))]


def test_write_synthetic_shards_once_atomically(tmp_path, monkeypatch):
  settings = dict(num_clips=5, seed=2, min_frames=10, max_frames=12, image_size=32)
  out = synthetic.write_synthetic_shards(tmp_path / "data" / "train", num_shards=2, **settings)
  assert out == tmp_path / "data" / "train" and os.listdir(tmp_path / "data") == ["train"]
  manifest = json.loads((out / shards.MANIFEST_FILE).read_text())
  assert manifest["settings"]["synthetic_clips"] == 5 and manifest["settings"]["num_shards"] == 2
  seeds = [synthetic.clip_seed(2, i) for i in range(5)]
  # Clip i is in shard i % 2, and the records hold exactly the generated clips.
  assert list(manifest["shards"].values()) == [[f"synthetic-{s}" for s in seeds[k::2]]
                                               for k in range(2)]
  parsed = _shard_contents(out)
  assert [c.clip_id for c in parsed] == [f"synthetic-{s}" for s in seeds[0::2] + seeds[1::2]]
  clip = synthetic.generate_clip(seeds[1], synthetic.clip_length(2, 1, 10, 12), image_size=32)
  np.testing.assert_array_equal(parsed[3].mel, clip.mel)
  np.testing.assert_array_equal(parsed[3].ground_truth["mouth_opening"], clip.mouth_opening)

  def fail(*args, **kwargs):
    raise RuntimeError("renderer exploded")

  monkeypatch.setattr(synthetic, "generate_dataset", fail)
  # A finished directory is reused as it is; other settings are refused.
  assert synthetic.write_synthetic_shards(out, num_shards=2, **settings) == out
  with pytest.raises(ValueError, match="made with"):
    synthetic.write_synthetic_shards(out, num_shards=3, **settings)
  # A failed write leaves nothing behind, not even its temporary directory.
  with pytest.raises(RuntimeError, match="exploded"):
    synthetic.write_synthetic_shards(tmp_path / "other", **settings)
  assert sorted(os.listdir(tmp_path)) == ["data"]


def test_write_synthetic_shards_handles_older_directories(tmp_path):
  settings = dict(num_clips=2, seed=0, min_frames=10, max_frames=10, image_size=32, num_shards=1)
  # Before manifests: DONE.json marked a finished directory (kept); without it, the directory
  # may be partial and is written again.
  legacy = tmp_path / "legacy"
  shards.write_shards(synthetic.generate_dataset(1, 9, 10, 10, image_size=32), legacy, 1)
  (legacy / synthetic.LEGACY_DONE_FILE).write_text("{}")
  assert len(_shard_contents(synthetic.write_synthetic_shards(legacy, **settings))) == 1
  (legacy / synthetic.LEGACY_DONE_FILE).unlink()
  rewritten = _shard_contents(synthetic.write_synthetic_shards(legacy, **settings))
  assert [c.clip_id for c in rewritten] == [f"synthetic-{synthetic.clip_seed(0, i)}"
                                            for i in range(2)]
  assert sorted(os.listdir(tmp_path)) == ["legacy"]  # the partial copy is gone
  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="not a synthetic shard directory"):
    synthetic.write_synthetic_shards(foreign, **settings)
  assert (foreign / "notes.txt").read_text() == "mine"


def test_write_mp4_dataset(tmp_path):
  manifest = synthetic.write_dataset(tmp_path, 2, seed=4, min_frames=25, max_frames=30)
  entries = [json.loads(line) for line in manifest.read_text().splitlines()]
  assert [e["clip"] for e in entries] == ["clip_00000", "clip_00001"]
  assert not any("error" in e for e in entries)
  entry = entries[1]
  frames, info = video_io.read_video(tmp_path / entry["video"])
  assert frames.shape == (entry["num_frames"], 128, 128, 3) and info.has_audio
  gt = np.load(tmp_path / entry["gt"])
  expected = synthetic.generate_clip(entry["seed"], entry["num_frames"])
  np.testing.assert_array_equal(gt["mouth_opening"], expected.mouth_opening)
  assert np.abs(frames.astype(float) - expected.frames).mean() < 3.0
  assert np.corrcoef(synthetic.measure_mouth_opening(frames), gt["mouth_opening"])[0, 1] > 0.9
  wav, rate = soundfile.read(tmp_path / entry["wav"], dtype="float32")
  assert rate == 16000 and np.abs(wav - expected.wav).max() < 1e-4
  assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]


def test_dataset_records_failures_and_workers_agree(tmp_path, monkeypatch):
  real = synthetic.generate_clip
  bad_seed = synthetic.clip_seed(0, 1)

  def flaky(seed, *args, **kwargs):
    if seed == bad_seed:
      raise RuntimeError("renderer exploded")
    return real(seed, *args, **kwargs)

  monkeypatch.setattr(synthetic, "generate_clip", flaky)
  manifest = synthetic.write_dataset(tmp_path / "serial", 3, min_frames=10, max_frames=12,
                                     file_format="npz")
  entries = [json.loads(line) for line in manifest.read_text().splitlines()]
  assert "renderer exploded" in entries[1]["error"]
  assert "error" not in entries[0] and "error" not in entries[2]
  monkeypatch.setattr(synthetic, "generate_clip", real)
  parallel = synthetic.write_dataset(tmp_path / "parallel", 3, min_frames=10, max_frames=12,
                                     file_format="npz", workers=2)
  for index in (0, 2):
    a = np.load(tmp_path / "serial" / f"clip_{index:05d}.npz")
    b = np.load(tmp_path / "parallel" / f"clip_{index:05d}.npz")
    np.testing.assert_array_equal(a["frames"], b["frames"])
  assert len(parallel.read_text().splitlines()) == 3


def test_cli(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    synthetic.main(["--help"])
  assert exit_info.value.code == 0 and "--num-clips" in capsys.readouterr().out
  result = subprocess.run(
      [sys.executable, "-m", "data_pipelines.synthetic", "--out", str(tmp_path), "--num-clips",
       "2", "--min-frames", "10", "--max-frames", "12", "--workers", "1"],
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert "wrote 2 clips" in result.stdout
  assert (tmp_path / "clip_00001.mp4").exists() and (tmp_path / "manifest.jsonl").exists()
