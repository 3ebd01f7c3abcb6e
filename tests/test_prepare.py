"""Preprocessing CLI: videos -> shards -> Grain batches, bad inputs, resuming, workers, --help."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import released
from data_pipelines import audio, input_pipeline, prepare, shards, synthetic, video_io
from data_pipelines.face_crops import CropSpec

NUM_FRAMES = 40
FULL_SIZE = 160  # synthetic full frames whose VoxCeleb2 crop is the 128x128 face crop


def _read_clips(out_dir) -> dict[str, shards.ParsedClip]:
  source = shards.open_data_source(shards.find_shard_files(out_dir))
  return {c.clip_id: c for c in (shards.parse_clip(source[i]) for i in range(len(source)))}


def _failures(out_dir) -> dict[str, str]:
  lines = pathlib.Path(out_dir, prepare.FAILURES).read_text(encoding="utf-8").splitlines()
  return {entry["clip_id"]: entry["reason"] for entry in map(json.loads, lines)}


@pytest.fixture(scope="module")
def synthetic_videos(tmp_path_factory):
  """Two synthetic mp4 clips (H.264 + AAC) with their ground truth."""
  root = tmp_path_factory.mktemp("synthetic")
  synthetic.write_dataset(root, 2, seed=0, min_frames=NUM_FRAMES, max_frames=NUM_FRAMES,
                          file_format="mp4", full_frame_size=FULL_SIZE)
  truth = {f"clip_{i:05d}": synthetic.generate_clip(synthetic.clip_seed(0, i), NUM_FRAMES)
           for i in range(2)}
  return root, truth


@pytest.fixture(scope="module")
def prepared(synthetic_videos, tmp_path_factory):
  videos, truth = synthetic_videos
  out = tmp_path_factory.mktemp("prepared")
  summary = prepare.prepare(str(videos), str(out), num_workers=0, progress=False)
  return out, summary, truth


def _best_lag(measured: np.ndarray, reference: np.ndarray, max_lag: int = 3) -> int:
  scores = {lag: np.corrcoef(measured[max_lag + lag:len(measured) - max_lag + lag],
                             reference[max_lag:len(reference) - max_lag])[0, 1]
            for lag in range(-max_lag, max_lag + 1)}
  return max(scores, key=scores.get)


def test_records_match_the_synthetic_ground_truth(prepared):
  out, summary, truth = prepared
  assert summary["written"] == 2 and summary["failed"] == 0
  clips = _read_clips(out)
  assert sorted(clips) == sorted(truth)
  for clip_id, clip in clips.items():
    expected = truth[clip_id]
    assert clip.num_frames == NUM_FRAMES and clip.fps == 25.0
    # Boxes: the reference VoxCeleb2 crop of a 160x160 frame (x: int(160 * 1.8 / 8) = 36,
    # bottom: 160 - int(160 * 2.36 / 8) = 113).
    np.testing.assert_array_equal(clip.boxes, np.tile([36, 0, 124, 113], (NUM_FRAMES, 1)))
    frames = clip.frames(0, NUM_FRAMES, image_size=128)
    assert np.abs(frames.astype(np.float32) - expected.frames).mean() < 6  # H.264 + resize + JPEG
    # Time alignment of frames: the mouth seen in frame k is the ground-truth opening of frame k.
    opening = synthetic.measure_mouth_opening(frames)
    assert np.corrcoef(opening, expected.mouth_opening)[0, 1] > 0.9
    assert _best_lag(opening, expected.mouth_opening) == 0
    # Audio: the AAC round trip keeps the spectrogram, and its rows stay aligned with time.
    assert clip.mel.shape == expected.mel.shape
    assert np.abs(clip.mel - expected.mel).mean() < 0.1
    level = clip.mel.mean(axis=1)[np.rint((np.arange(NUM_FRAMES) + 0.5) * 3.2).astype(int)]
    assert _best_lag(level, expected.mouth_opening) == 0


def test_round_trip_to_training_batches(prepared):
  out, _, truth = prepared
  clips = _read_clips(out)
  ids = sorted(clips)  # one shard, written in input order
  iterator = input_pipeline.create_train_iterator(released.get_config().data.pipeline, out,
                                                  seed=0, batch_size=8, shard_index=0,
                                                  shard_count=1)
  batch = next(iterator)
  assert batch["image"].shape == (8, 5, 128, 128, 3) and batch["image"].dtype == np.float32
  assert batch["ref_img"].shape == (8, 5, 128, 128, 3)
  assert batch["indiv_mels"].shape == (8, 5, 80, 16) and batch["mel"].shape == (8, 80, 16)
  assert -1 <= batch["image"].min() < 0 < batch["image"].max() <= 1
  assert -4 <= batch["mel"].min() and batch["mel"].max() <= 4
  for b in range(8):
    expected = truth[ids[batch["clip_index"][b]]]
    start = int(batch["frame_index"][b])
    pixels = np.rint((batch["image"][b] + 1) * 127.5).astype(np.uint8)
    measured = synthetic.measure_mouth_opening(pixels)
    reference = synthetic.measure_mouth_opening(expected.frames[start:start + 5])
    np.testing.assert_allclose(measured, reference, atol=0.02)
    mel = clips[ids[batch["clip_index"][b]]].mel
    np.testing.assert_array_equal(batch["mel"][b], audio.sync_mel_window(mel, start))


def _write(path, frames, wav=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  video_io.write_video(path, frames, fps=25.0, audio=wav, audio_sr=16000, preset="ultrafast")


@pytest.fixture(scope="module")
def bad_inputs(synthetic_videos, tmp_path_factory):
  """A tree with one good clip, a non-ASCII one, and one file for each failure mode."""
  videos, truth = synthetic_videos
  root = tmp_path_factory.mktemp("mixed")
  clip = truth["clip_00000"]
  shutil.copy(videos / "clip_00000.mp4", root / "good.mp4")
  (root / "vidéo").mkdir()
  shutil.copy(videos / "clip_00001.mp4", root / "vidéo" / "клип ü.mp4")
  data = (videos / "clip_00000.mp4").read_bytes()
  (root / "truncated.mp4").write_bytes(data[:len(data) // 2])
  (root / "garbage.mp4").write_text("this is not a video")
  _write(root / "no_audio.mp4", clip.frames[:20])
  _write(root / "silent.mp4", clip.frames[:20], np.zeros(12800, np.float32))
  _write(root / "short.mp4", clip.frames[:8], clip.wav[:5120])
  _write(root / "no_face.mp4", np.full((40, FULL_SIZE, FULL_SIZE, 3), 90, np.uint8),
         clip.wav[:40 * 640])  # speech over a blank picture: no mouth to learn from
  return root


EXPECTED_REASONS = {"truncated": "truncated", "garbage": "cannot be opened",
                    "no_audio": "no audio stream", "silent": "silent audio",
                    "short": "too short", "no_face": "no face found"}


def test_bad_inputs_are_skipped_with_reasons_and_resuming_skips_finished_clips(bad_inputs,
                                                                                tmp_path):
  out = tmp_path / "out"
  summary = prepare.prepare(str(bad_inputs), str(out), num_workers=0, progress=False)
  assert (summary["written"], summary["failed"]) == (2, 6)
  assert sorted(_read_clips(out)) == ["good", "vidéo/клип ü"]
  failures = _failures(out)
  assert failures.keys() == EXPECTED_REASONS.keys()
  for clip_id, fragment in EXPECTED_REASONS.items():
    assert fragment in failures[clip_id], failures[clip_id]
  # Second run: everything is finished (written or failed), nothing is redone.
  again = prepare.prepare(str(bad_inputs), str(out), num_workers=0, progress=False)
  assert (again["already_done"], again["written"], again["failed"], again["shards"]) == (8, 0, 0, [])
  # A new video is processed into a new shard; the old shard stays untouched.
  shutil.copy(bad_inputs / "good.mp4", bad_inputs / "new.mp4")
  try:
    third = prepare.prepare(str(bad_inputs), str(out), num_workers=0, progress=False)
  finally:
    (bad_inputs / "new.mp4").unlink()
  assert third["written"] == 1 and [os.path.basename(p) for p in third["shards"]] == [
      "clips-r002-00000.tfrecord"]
  assert sorted(_read_clips(out)) == ["good", "new", "vidéo/клип ü"]
  # Failed clips are retried on request; the silent one is kept with --keep_silent.
  retry = prepare.prepare(str(bad_inputs), str(out), prepare.PrepareOptions(keep_silent=True),
                          num_workers=0, progress=False, retry_failed=True)
  assert (retry["written"], retry["failed"]) == (1, 5)
  assert "silent" in _read_clips(out) and "silent" not in _failures(out)


def test_deleted_shards_and_interrupted_runs_are_redone(synthetic_videos, tmp_path):
  videos, _ = synthetic_videos
  out = tmp_path / "out"
  prepare.prepare(str(videos), str(out), num_workers=0, progress=False, clips_per_shard=1)
  shard_files = shards.find_shard_files(out)
  assert len(shard_files) == 2
  os.remove(shard_files[1])
  (out / f"{shards.TMP_PREFIX}123-clips-r000-00009.tfrecord").write_bytes(b"partial")
  summary = prepare.prepare(str(videos), str(out), num_workers=0, progress=False)
  assert summary["written"] == 1 and summary["already_done"] == 1
  assert sorted(_read_clips(out)) == ["clip_00000", "clip_00001"]
  assert not [n for n in os.listdir(out) if n.startswith(shards.TMP_PREFIX)]
  with pytest.raises(ValueError, match="prepared with"):
    prepare.prepare(str(videos), str(out), prepare.PrepareOptions(image_size=64),
                    num_workers=0, progress=False)


def test_filelist_box_crop_and_worker_processes(synthetic_videos, tmp_path):
  videos, truth = synthetic_videos
  filelist = tmp_path / "list.txt"
  # Reference filelist style: "video audio" pairs without extension, relative to --root.
  filelist.write_text("# comment\nclip_00000 clip_00000\n\nclip_00001 clip_00001\n")
  out = tmp_path / "out"
  common = ["--input", str(filelist), "--root", str(videos), "--crop", "box", "--quiet"]
  assert prepare.main(common + ["--out_dir", str(out), "--box", "36,0,124,113", "--num_workers",
                                "2", "--format", "arrayrecord", "--size", "64"]) == 0
  clips = _read_clips(out)
  assert sorted(clips) == ["clip_00000", "clip_00001"]
  assert shards.find_shard_files(out)[0].endswith(".array_record")
  frames = clips["clip_00000"].frames(0, NUM_FRAMES, image_size=64)
  opening = synthetic.measure_mouth_opening(frames)
  assert np.corrcoef(opening, truth["clip_00000"].mouth_opening)[0, 1] > 0.9
  # A box outside the frame fails each clip with the crop's message, the run still finishes.
  bad_out = tmp_path / "bad"
  prepare.main(common + ["--box", "0,0,500,100", "--out_dir", str(bad_out), "--num_workers", "0"])
  reasons = _failures(bad_out)
  assert len(reasons) == 2 and all("crop box (0, 0, 500, 100) lies outside the 160x160 frames"
                                    in r for r in reasons.values())


def test_s3fd_needs_weights_and_help_explains_every_flag(tmp_path):
  with pytest.raises(FileNotFoundError, match="s3fd_weights"):
    prepare.prepare(str(tmp_path), str(tmp_path / "o"), prepare.PrepareOptions(crop=CropSpec("s3fd")))
  with pytest.raises(SystemExit):
    prepare.main(["--input", "x", "--out_dir", "y", "--box", "1,2,3"])
  for crop in (["--crop", "box"], ["--crop", "box", "--box", "5,0,5,10"]):  # no box, empty box
    with pytest.raises(SystemExit):
      prepare.main(["--input", "x", "--out_dir", "y"] + crop)
  parser = prepare.build_parser()
  flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
  assert all(a.help and len(a.help) > 10 for a in flags)
  result = subprocess.run([sys.executable, "-m", "data_pipelines.prepare", "--help"],
                          capture_output=True, text=True, check=True, timeout=60)
  for action in flags:
    assert action.option_strings[0] in result.stdout
  assert "silent audio" in result.stdout and "Resuming" in result.stdout


class _StubDetector:
  """Stands in for S3FD (its weights are user-supplied): one face box, none in `missing` frames."""

  def __init__(self, missing=()):
    self.missing, self.seen = set(missing), 0

  def detect(self, frames, batch_size=16):
    out = []
    for _ in frames:
      found = self.seen not in self.missing
      out.append(np.array([[40.0, 10.0, 120.0, 100.0, 0.99]] if found else np.zeros((0, 5))))
      self.seen += 1
    return out


def test_face_detector_boxes_and_missing_face_policy(synthetic_videos):
  videos, _ = synthetic_videos
  path = str(videos / "clip_00000.mp4")
  options = prepare.PrepareOptions(crop=CropSpec("s3fd", pads=(0, 10, 0, 0)))
  record = shards.parse_clip(prepare.process_video(path, "c", options, _StubDetector()))
  # Detection (40, 10, 120, 100) plus 10 px at the bottom, constant so smoothing keeps it.
  np.testing.assert_array_equal(record.boxes, np.tile([40, 10, 120, 110], (NUM_FRAMES, 1)))
  with pytest.raises(ValueError, match="no face detected in 1 of 40 frames.*3"):
    prepare.process_video(path, "c", options, _StubDetector(missing=[3]))
  filled = prepare.PrepareOptions(crop=CropSpec("s3fd", no_face="nearest"))
  assert shards.parse_clip(prepare.process_video(path, "c", filled, _StubDetector([3]))).num_frames == 40


def test_no_face_check_names_the_frames_and_can_be_disabled(synthetic_videos, tmp_path):
  _, truth = synthetic_videos
  blank = tmp_path / "in" / "blank.mp4"
  _write(blank, np.full((60, FULL_SIZE, FULL_SIZE, 3), 90, np.uint8),
         truth["clip_00000"].wav[:60 * 640])
  from data_pipelines import face_check, face_detection
  detector = face_detection.create_detector("hog")
  with pytest.raises(face_check.NoFaceInClipError, match=r"3 sampled frames .*0, 25, 50"):
    prepare.process_video(str(blank), "b", prepare.PrepareOptions(), face_checker=detector)
  kept = prepare.process_video(str(blank), "b", prepare.PrepareOptions(), face_checker=None)
  assert shards.parse_clip(kept).num_frames == 60
  assert prepare.main(["--input", str(blank.parent), "--out_dir", str(tmp_path / "o"),
                       "--quiet", "--num_workers", "0", "--face_check", "none"]) == 0
  assert sorted(_read_clips(tmp_path / "o")) == ["blank"]


def test_user_errors_are_one_line_without_a_traceback(tmp_path, capsys):
  (tmp_path / "file").write_text("x")
  cases = {("--input", str(tmp_path / "missing"), "--out_dir", str(tmp_path / "o")):
               "is neither a directory nor a filelist",
           ("--input", str(tmp_path), "--out_dir", str(tmp_path / "file")): "is a file",
           ("--input", str(tmp_path), "--out_dir", str(tmp_path / "o2"), "--crop", "s3fd"):
               "needs --s3fd_weights"}
  for argv, message in cases.items():
    assert prepare.main([*argv, "--quiet", "--num_workers", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
  result = subprocess.run([sys.executable, "-m", "data_pipelines.prepare", "--input",
                           str(tmp_path / "missing"), "--out_dir", str(tmp_path / "o3")],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines() == [
      f"error: --input {str(tmp_path / 'missing')!r} is neither a directory nor a filelist"]
