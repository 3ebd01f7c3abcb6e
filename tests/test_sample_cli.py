"""`python -m diff2lip_jax.sample`: one pair, filelists, and a clear failure for each bad input."""
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import face_detection, video_io
from diff2lip_jax import checkpoints, sample
from tests.inference_helpers import (StubDetector, face_clip, random_params, write_audio_only,
                                     tiny_config, write_face_video, write_wav)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("inputs")
  clip = face_clip(21, 30)
  write_face_video(root / "face.mp4", clip)
  write_wav(root / "speech.wav", face_clip(22, 20).wav)
  (root / "sub").mkdir()
  shutil.copy(root / "face.mp4", root / "sub" / "other.mp4")
  return root


def _run(checkpoint, tmp_path, *args):
  argv = ["--checkpoint", str(checkpoint), "--quiet", "--preset", "ultrafast",
          *map(str, args)]
  return sample.main(argv)


def test_one_pair_writes_a_playable_video(tiny_checkpoint, inputs, tmp_path, capsys):
  out = tmp_path / "nested" / "out.mp4"
  code = _run(tiny_checkpoint, tmp_path, "--video", inputs / "face.mp4", "--audio",
              inputs / "speech.wav",
              "--out", out, "--seed", 3)
  assert code == 0, capsys.readouterr().err
  frames, info = video_io.read_video(out)
  # 20 frames of speech (0.8 s) give 20 frames: the last windows are padded, none dropped.
  assert info.has_audio and info.source_fps == 25.0 and len(frames) == 20
  samples, rate = video_io.read_audio_track(out)
  assert abs(len(samples) / rate - 0.8) < 0.01  # the whole speech track is kept
  captured = capsys.readouterr()
  assert "wrote" in captured.out
  assert "video is longer than the speech (0.80 s)" in captured.err
  assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4"]


def test_filelist_continues_past_a_bad_pair(tiny_checkpoint, inputs, tmp_path, capsys):
  filelist = tmp_path / "pairs.txt"
  filelist.write_text("# audio video\nspeech.wav face\n\nmissing sub/other\n"
                      "sub/other.mp4 face.mp4\nonly_one_field\n")
  out_dir = tmp_path / "out"
  code = _run(tiny_checkpoint, tmp_path, "--filelist", filelist, "--root", inputs,
              "--out_dir", out_dir,
              "--mode", "reconstruction")
  assert code == 1
  assert sorted(p.name for p in out_dir.iterdir()) == [
      "failures.txt", "speech_face.mp4", "sub.other_face.mp4"]
  failures = (out_dir / "failures.txt").read_text().splitlines()
  assert len(failures) == 2
  assert failures[0].startswith("line 4: missing sub/other") and "not found" in failures[0]
  assert failures[1].startswith("line 6: only_one_field") and "malformed" in failures[1]
  assert "4 pairs: 2 written, 2 failed, 0 skipped" in capsys.readouterr().out
  code = _run(tiny_checkpoint, tmp_path, "--filelist", filelist, "--root", inputs,
              "--out_dir", out_dir,
              "--skip_existing")
  assert code == 1 and "0 written, 2 failed, 2 skipped" in capsys.readouterr().out


def _no_audio(root):
  return write_face_video(root / "no_audio.mp4", face_clip(23, 10), with_audio=False)


def _audio_only(root):
  return write_audio_only(root / "voice.m4a")


def _truncated(root):
  data = (root / "face.mp4").read_bytes()
  (root / "truncated.mp4").write_bytes(data[:len(data) // 2])
  return root / "truncated.mp4"


def _garbage(root):
  (root / "garbage.mp4").write_text("not a video")
  return root / "garbage.mp4"


BAD_INPUTS = {
    # name: (make video, make audio, extra args, message)
    "unreadable video": (_garbage, None, [], "garbage.mp4: cannot be opened"),
    "truncated video": (_truncated, None, [], "truncated.mp4: .*truncated"),
    "no video stream": (_audio_only, None, [], "voice.m4a: has no video stream"),
    "no audio stream": (None, _no_audio, [], "no_audio.mp4: has no audio stream"),
    "zero-length audio": (None, lambda r: write_wav(r / "empty.wav", np.zeros(0)), [],
                          "empty.wav: audio stream is empty"),
    "audio under 0.2 s": (None, lambda r: write_wav(r / "blip.wav", np.ones(1600) * 0.1), [],
                          "blip.wav: the audio lasts 0.100 s; at least 0.2 s"),
    "missing video": (lambda r: r / "nope.mp4", None, [], "not found: .*nope.mp4"),
    "box outside the frame": (None, None, ["--crop", "box", "0,0,200,90"],
                              "crop box .* lies outside the 96x96 frames"),
    "bad box": (None, None, ["--crop", "box", "10,10,5"], "four integers"),
    "s3fd without weights": (None, None, ["--crop", "s3fd"], "S3FD needs its weights file"),
    "missing s3fd weights": (None, None, ["--crop", "s3fd", "--s3fd_weights", "none.pth"],
                             "none.pth"),
    "no face in some frames": (None, None, ["--crop", "s3fd", "--s3fd_weights", "stub.pth",
                                            "--no_face", "error"],
                               r"no face detected in 2 of .*0-based indices: 4, 9\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_fail_clearly_and_write_nothing(tiny_checkpoint, case, inputs, tmp_path, capsys,
                                                   monkeypatch):
  make_video, make_audio, extra, message = BAD_INPUTS[case]
  root = tmp_path / "in"
  shutil.copytree(inputs, root)
  video = make_video(root) if make_video else root / "face.mp4"
  audio = make_audio(root) if make_audio else root / "speech.wav"
  monkeypatch.delenv(face_detection.S3FD_WEIGHTS_ENV, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/diff2lip/s3fd.pth
  if "stub.pth" in extra:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stub.pth").write_bytes(b"")  # only its existence is checked before loading
    monkeypatch.setattr(face_detection.FaceDetector, "from_checkpoint",
                        classmethod(lambda cls, path, **kw: StubDetector(missing=(4, 9))))
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  code = _run(tiny_checkpoint, tmp_path, "--video", video, "--audio", audio,
              "--out", out_dir / "o.mp4", *extra)
  err = capsys.readouterr().err
  assert code == 1
  assert err.startswith("error: ") and "Traceback" not in err
  assert __import__("re").search(message, err), err
  assert list(out_dir.iterdir()) == []


def test_checkpoint_errors(inputs, tmp_path, capsys):
  args = ["--video", inputs / "face.mp4", "--audio", inputs / "speech.wav",
          "--out", tmp_path / "o.mp4"]
  assert _run(tmp_path / "nothing", tmp_path, *args) == 1
  assert "does not exist" in capsys.readouterr().err
  empty = tmp_path / "empty_ckpt"
  empty.mkdir()
  assert _run(empty, tmp_path, *args) == 1
  assert "no complete checkpoint step" in capsys.readouterr().err
  config = tiny_config()
  params = random_params(config.model)
  config.model.num_res_blocks = 2  # config and weights disagree
  checkpoints.save_inference_checkpoint(tmp_path / "mismatch", params, config)
  assert _run(tmp_path / "mismatch", tmp_path, *args) == 1
  err = capsys.readouterr().err
  assert "do not match the model" in err and "missing: " in err
  assert not (tmp_path / "o.mp4").exists()


def test_command_line_usage_errors_exit_2(inputs, tmp_path):
  with pytest.raises(SystemExit) as exit_info:
    sample.main(["--checkpoint", "x", "--video", "v.mp4"])
  assert exit_info.value.code == 2
  with pytest.raises(SystemExit):
    sample.main(["--checkpoint", "x", "--video", "v", "--audio", "a", "--out", "o.avi_"])


def test_module_entry_point_exit_status(tiny_checkpoint, inputs, tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "diff2lip_jax.sample", "--checkpoint", tiny_checkpoint,
       "--video", str(inputs / "speech.wav"), "--audio", str(inputs / "speech.wav"),
       "--out", str(tmp_path / "o.mp4")],
      capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 1
  assert "speech.wav: has no video stream" in result.stderr
  assert "Traceback" not in result.stderr and not (tmp_path / "o.mp4").exists()


def test_sampler_flags_reach_the_sampler(tiny_checkpoint, inputs, tmp_path, capsys):
  # Inputs are checked before the model loads: a crop box outside the frames fails after it.
  code = sample.main(["--checkpoint", tiny_checkpoint, "--video", str(inputs / "face.mp4"),
                      "--audio", str(inputs / "speech.wav"), "--out", str(tmp_path / "o.mp4"),
                      "--crop", "box", "0,0,200,90",
                      "--ddpm", "--respacing", "5", "--dtype", "bfloat16", "--seed", "11",
                      "--batch_size", "4"])
  err = capsys.readouterr().err
  assert code == 1 and "outside the 96x96 frames" in err
  for setting in ("'respacing': '5'", "'sampler': 'ddpm'", "'seed': 11", "'batch_size': 4",
                  "'dtype': 'bfloat16'"):
    assert setting in err


def test_training_workdir_checkpoints_are_accepted(tiny_checkpoint, inputs, tmp_path, capsys):
  workdir = tmp_path / "run"
  params, config = checkpoints.load_inference_checkpoint(tiny_checkpoint)
  checkpoints.save_inference_checkpoint(workdir / "checkpoints", params, config, step=250)
  out = tmp_path / "w.mp4"
  code = sample.main(["--checkpoint", str(workdir), "--quiet", "--video",
                      str(inputs / "face.mp4"), "--audio", str(inputs / "speech.wav"),
                      "--out", str(out), "--crop", "box", "20,0,76,68", "--paste", "box"])
  assert code == 0, capsys.readouterr().err
  assert video_io.read_video(out)[0].shape == (20, 96, 96, 3)


def test_converted_pytorch_checkpoint_gives_the_same_video(tiny_checkpoint, inputs, tmp_path,
                                                           capsys):
  torch = pytest.importorskip("torch")
  from diff2lip_jax import convert
  params, _ = checkpoints.load_inference_checkpoint(tiny_checkpoint)
  state = {k: torch.from_numpy(np.ascontiguousarray(v))
           for k, v in convert.torch_state_dict_from_params(params).items()}
  torch.save(state, tmp_path / "model.pt")
  config_file = pathlib.Path(__file__).resolve().parents[1] / "configs" / "synthetic.py"
  assert convert.main(["--torch_checkpoint", str(tmp_path / "model.pt"), "--config",
                       str(config_file), "--out", str(tmp_path / "converted")]) == 0
  outputs = []
  for name, checkpoint in (("ours", tiny_checkpoint), ("converted", tmp_path / "converted")):
    outputs.append(tmp_path / f"{name}.mp4")
    code = _run(checkpoint, tmp_path, "--video", inputs / "face.mp4", "--audio",
                inputs / "speech.wav", "--out", outputs[-1], "--respacing", "ddim2",
                "--batch_size", "8")
    assert code == 0, capsys.readouterr().err
  np.testing.assert_array_equal(video_io.read_video(outputs[0])[0],
                                video_io.read_video(outputs[1])[0])
