"""Output safety: inputs never overwritten, --overwrite, partial files, SIGTERM clean-up."""
import hashlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from diff2lip_jax import sample
from diff2lip_jax.inference import filelist, outputs
from tests.inference_helpers import face_clip, write_face_video, write_wav


def _dead_pid() -> int:
  child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, timeout=60, check=True)
  return int(child.stdout)


def _digest(path) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("inputs")
  write_face_video(root / "face.mp4", face_clip(21, 30))
  write_wav(root / "speech.wav", face_clip(22, 20).wav)
  return root


def test_an_input_is_refused_as_output_by_identity_not_name(tmp_path):
  source = tmp_path / "face.mp4"
  source.write_bytes(b"video")
  os.link(source, tmp_path / "hard.mp4")
  (tmp_path / "soft.mp4").symlink_to(source)
  for alias in ("face.mp4", "hard.mp4", "soft.mp4", "./sub/../face.mp4"):
    (tmp_path / "sub").mkdir(exist_ok=True)
    with pytest.raises(outputs.OutputPathError, match="is the input .*same file"):
      outputs.check_output(tmp_path / alias, [source, tmp_path / "a.wav"], overwrite=True)
  assert source.read_bytes() == b"video"
  # A different file of the same name elsewhere is no input; it exists, so needs --overwrite.
  other = tmp_path / "sub" / "face.mp4"
  other.write_bytes(b"old output")
  with pytest.raises(outputs.OutputPathError, match="exists; pass --overwrite"):
    outputs.check_output(other, [source])
  assert outputs.check_output(other, [source], overwrite=True) == other
  assert outputs.check_output(tmp_path / "new.mp4", [source]) == tmp_path / "new.mp4"


def test_paths_through_a_file_and_directories_are_refused(tmp_path):
  (tmp_path / "file.txt").write_text("x")
  with pytest.raises(outputs.OutputPathError, match="file.txt is a file, not a directory"):
    outputs.check_output(tmp_path / "file.txt" / "deeper" / "o.mp4", [])
  with pytest.raises(outputs.OutputPathError, match="file.txt is a file, not a directory"):
    outputs.make_parent(tmp_path / "file.txt" / "o.mp4")
  with pytest.raises(outputs.OutputPathError, match="is a directory"):
    outputs.check_output(tmp_path, [])
  (tmp_path / "keep").mkdir()
  created = outputs.make_parent(tmp_path / "keep" / "a" / "b" / "o.mp4")
  assert created == [tmp_path / "keep" / "a", tmp_path / "keep" / "a" / "b"]
  outputs.remove_empty(created)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "keep"]


def test_stale_partials_of_dead_processes_are_removed_live_ones_kept(tmp_path):
  dead, alive = _dead_pid(), os.getpid()
  stale_file = tmp_path / f".out.{dead}.0123abcd.partial.mp4"
  stale_cache = tmp_path / f"{outputs.FRAME_CACHE_PREFIX}{dead}_x1y2z3w4"
  live_file = tmp_path / f".out.{alive}.0123abcd.partial.mp4"
  unrelated = [tmp_path / f".notes.{dead}.partial", tmp_path / "diff2lip_frames_ab12cd_e"]
  stale_file.write_bytes(b"half")
  stale_cache.mkdir()
  (stale_cache / "frames.raw").write_bytes(b"0" * 10)
  live_file.write_bytes(b"writing")
  for path in unrelated:
    path.write_bytes(b"")
  lines = outputs.remove_stale([tmp_path])
  assert sorted(lines) == sorted(f"removed {p}, left by an interrupted run"
                                 for p in (stale_file, stale_cache))
  assert sorted(tmp_path.iterdir()) == sorted([live_file, *unrelated])


def test_filelist_forms_tab_csv_and_whitespace(tmp_path):
  (tmp_path / "tab.txt").write_text("# audio\tvideo\nmy speech.wav\tmy face.mp4\n"
                                    "a.wav b.mp4\n\n")
  (tmp_path / "list.csv").write_text('"my speech.wav","my face.mp4"\n# c,d\nx.wav, y\n')
  tab = filelist.read_filelist(tmp_path / "tab.txt")
  assert [e.fields for e in tab] == [("my speech.wav", "my face.mp4"), ("a.wav", "b.mp4")]
  assert [e.number for e in tab] == [2, 3]
  assert tab[0].output_name == "my speech_my face.mp4"
  rows = filelist.read_filelist(tmp_path / "list.csv")
  assert [e.fields for e in rows] == [("my speech.wav", "my face.mp4"), ("x.wav", "y")]


def test_filelist_output_collisions_are_listed(tmp_path):
  (tmp_path / "pairs.txt").write_text("a/b.wav v.mp4\na.b.wav v\nc.wav v.mp4\nc.wav v.mp4\n"
                                      "d.wav v.mp4\n")
  clashes = filelist.collisions(filelist.read_filelist(tmp_path / "pairs.txt"))
  assert clashes == ["a.b_v.mp4: lines 1, 2", "c_v.mp4: lines 3, 4"]


def _sample(*args):
  return sample.main(["--quiet", "--preset", "ultrafast", *map(str, args)])


def test_cli_refuses_bad_outputs_before_loading_the_model(inputs, tmp_path, capsys):
  """A missing checkpoint is never reached: the output checks come first."""
  video, audio = inputs / "face.mp4", inputs / "speech.wav"
  before = _digest(video)
  os.link(video, tmp_path / "same.mp4")
  (tmp_path / "exists.mp4").write_bytes(b"keep me")
  (tmp_path / "file").write_text("x")
  cases = {tmp_path / "same.mp4": "is the input", video: "is the input",
           tmp_path / "exists.mp4": "exists; pass --overwrite",
           tmp_path / "file" / "o.mp4": "file is a file, not a directory"}
  for out, message in cases.items():
    code = _sample("--checkpoint", tmp_path / "no_checkpoint", "--video", video, "--audio",
                   audio, "--out", out)
    err = capsys.readouterr().err
    assert code == 1 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
  assert _digest(video) == before and (tmp_path / "exists.mp4").read_bytes() == b"keep me"
  code = _sample("--checkpoint", tmp_path / "no_checkpoint", "--video", video, "--audio",
                 audio, "--out", tmp_path / "exists.mp4", "--overwrite")
  assert code == 1 and "does not exist" in capsys.readouterr().err  # reached the checkpoint


def test_cli_filelist_collisions_refused_up_front(inputs, tmp_path, capsys):
  pairs = tmp_path / "pairs.txt"
  pairs.write_text("speech.wav face\nspeech face.mp4\n")
  code = _sample("--checkpoint", tmp_path / "none", "--filelist", pairs, "--root", inputs,
                 "--out_dir", tmp_path / "out")
  err = capsys.readouterr().err
  assert code == 1 and "speech_face.mp4: lines 1, 2" in err and "Traceback" not in err
  assert not (tmp_path / "out").exists()


def test_sigterm_mid_run_removes_partial_output_and_frame_cache(tiny_checkpoint, inputs,
                                                                 tmp_path):
  private_tmp, out_dir = tmp_path / "tmp", tmp_path / "out"
  private_tmp.mkdir()
  out_dir.mkdir()
  speech = write_wav(tmp_path / "long.wav", face_clip(5, 100).wav)  # 4 s: the video loops
  command = [sys.executable, "-m", "diff2lip_jax.sample", "--checkpoint", tiny_checkpoint,
             "--video", str(inputs / "face.mp4"), "--audio", str(speech), "--out",
             str(out_dir / "o.mp4"), "--loop_video", "--quiet", "--preset", "ultrafast",
             "--batch_size", "4"]
  env = {**os.environ, "TMPDIR": str(private_tmp), "JAX_PLATFORMS": "cpu"}
  process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
  try:
    deadline = time.monotonic() + 240
    while not list(out_dir.glob(".o.*.partial.mp4")):
      assert process.poll() is None, process.communicate()
      assert time.monotonic() < deadline, "the run never started writing"
      time.sleep(0.2)
    assert [p.name for p in private_tmp.iterdir() if p.name.startswith("diff2lip_frames_")]
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=240)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait(timeout=60)
  assert process.returncode == 143, err
  assert "interrupted by SIGTERM" in err and "Traceback" not in err, err
  assert list(out_dir.iterdir()) == []
  assert list(private_tmp.iterdir()) == []


def test_evaluate_and_lipsync_score_user_errors_are_one_line(inputs, tmp_path, capsys):
  from diff2lip_jax import evaluate
  from diff2lip_jax.evaluation import lipsync_score
  (tmp_path / "file").write_text("x")
  video = str(inputs / "face.mp4")
  runs = [(evaluate.main, ["--pairs", str(tmp_path / "missing.txt")], "missing.txt"),
          (evaluate.main, ["--generated", video, "--out", video], "is the input"),
          (evaluate.main, ["--generated", video, "--out", str(tmp_path / "file" / "r.json")],
           "is a file, not a directory"),
          (lipsync_score.main, ["--checkpoint", str(tmp_path / "none")], "does not exist"),
          (lipsync_score.main, ["--checkpoint", str(tmp_path / "none"), "--out",
                                str(tmp_path / "file" / "r.json")], "is a file")]
  for main, argv, message in runs:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
