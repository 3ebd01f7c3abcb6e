"""`evaluate --filelist` at scale: test lists, streaming FID sums, resume, process split, table.

Networks: syncnet_python's SyncNet and pytorch-fid's Inception with the deterministic weights
of the parity tests (tests/goldens manifests), written as the users' torch files; synthetic
face videos.
"""
import json
import pathlib

import jax
import numpy as np
import pytest

from data_pipelines import face_crops, video_io
from diff2lip_jax.evaluation import clip_metrics, command, fid, fid_stream, filelists, lse
from diff2lip_jax.evaluation import results_log
from diff2lip_jax.porting import inception_fid as convert_inception
from tests.inference_helpers import face_clip, write_face_video
from tests.metric_goldens import manifest_state_dict

torch = pytest.importorskip("torch", reason="torch writes the users' weight files")

FRAMES = 8          # LSE: 3 windows; syncnet_python crops need >= 7 frames
CLIPS = ("spk1/vidA/00001", "spk2/vidB/00001", "spk3/vidC/00002")
FAST = ["--fid_dims", "64", "--lse_batch_size", "8", "--fid_batch_size", "8", "--no_progress",
        "--checkpoint_every", "1"]


def _write_torch(path, manifest):
  torch.save({k: torch.from_numpy(np.ascontiguousarray(v))
              for k, v in manifest_state_dict(manifest).items()}, path)
  return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """Real clips under root/, generated videos under gen/ (diff2lip names), weight files."""
  base = tmp_path_factory.mktemp("scale")
  root, gen = base / "root", base / "gen"
  rng = np.random.default_rng(5)
  for i, clip_name in enumerate(CLIPS):
    clip = face_clip(40 + i, FRAMES)
    (root / clip_name).parent.mkdir(parents=True, exist_ok=True)
    write_face_video(root / f"{clip_name}.mp4", clip)
    frames = clip.full_frames
    if i:   # the first generated video is the ground truth itself; the others are noisy
      frames = np.clip(frames.astype(int) + rng.integers(-25, 26, frames.shape), 0, 255
                       ).astype(np.uint8)
    gen.mkdir(exist_ok=True)
    name = filelists.generated_name(clip_name, clip_name, i, "diff2lip")
    write_face_video(gen / name, clip, frames)
  # cross: clip 1's face with clip 2's speech
  clip1, clip2 = face_clip(41, FRAMES), face_clip(42, FRAMES)
  write_face_video(gen / filelists.generated_name(CLIPS[2], CLIPS[1], 0, "diff2lip"), clip2,
                   clip1.full_frames)
  return {"base": base, "root": root, "gen": gen,
          "syncnet_v2": _write_torch(base / "syncnet_v2.model", "manifest_syncnet_v2.json"),
          "inception": _write_torch(base / "pt_inception.pth", "manifest_inception_fid.json")}


def test_filelist_formats_and_errors(tmp_path):
  recon = tmp_path / "recon.txt"
  recon.write_text("# comment\nid1/a/00001 id1/a/00001\n\nid2/b/00003\nid1/a/00001 id1/a/00001\n")
  items = filelists.parse_filelist(recon, "reconstruction", generated_dir="G", root="R")
  assert [i.key for i in items] == ["id1/a/00001 id1/a/00001", "id2/b/00003 id2/b/00003"]
  assert items[0].generated == str(pathlib.Path("G/id1.a.00001_id1.a.00001.mp4"))
  assert items[0].reference == items[0].real == str(pathlib.Path("R/id1/a/00001.mp4"))
  cross = tmp_path / "cross.txt"
  cross.write_text("BRING/test/BRING_00018 WESTERN/test/WESTERN_00039\nA/x B/y\n")
  items = filelists.parse_filelist(cross, "cross", generated_dir="G", root="R", naming="wav2lip")
  assert items[0].reference is None and items[0].real == str(pathlib.Path(
      "R/WESTERN/test/WESTERN_00039.mp4"))   # the second clip is the face video
  assert [pathlib.Path(i.generated).name for i in items] == ["0.mp4", "1.mp4"]
  bad = tmp_path / "bad.txt"
  for text, setting, message in (("a b\n", "reconstruction", "bad.txt:1"),
                                 ("a\nb c d\n", "cross", "bad.txt:1"),
                                 ("x y\na b c\n", "cross", "bad.txt:2")):
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
      filelists.parse_filelist(bad, setting, generated_dir="G", root="R")


def test_two_process_split_covers_the_list_once():
  items = [filelists.EvalItem(key=str(i), generated=f"{i}.mp4") for i in range(7)]
  parts = [filelists.shard(items, i, 2) for i in range(2)]
  assert [i.key for i in parts[0]] == ["0", "2", "4", "6"]
  assert sorted(i.key for p in parts for i in p) == [i.key for i in items]
  with pytest.raises(ValueError):
    filelists.shard(items, 2, 2)


def test_jsonl_cut_off_last_line_is_ignored_and_replaced(tmp_path):
  path = results_log.results_path(tmp_path, 0, 1)
  with results_log.RecordWriter(path) as writer:
    writer.write({"key": "a", "psnr": 1.0})
    writer.write({"key": "b", "error": "boom"})
  with open(path, "a") as f:
    f.write('{"key": "c", "ps')     # killed mid-write
  assert [r["key"] for r in results_log.read_records(path)] == ["a", "b"]
  with results_log.RecordWriter(path) as writer:
    writer.write({"key": "b", "psnr": 2.0})
  records = results_log.read_records(path)
  assert [r["key"] for r in records] == ["a", "b", "b"]
  assert results_log.latest_by_key(records)["b"] == {"key": "b", "psnr": 2.0}
  path.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
  with pytest.raises(ValueError, match=":2"):
    results_log.read_records(path)


def test_streamed_fid_statistics_equal_the_batch_computation(tmp_path):
  rng = np.random.default_rng(0)
  # Inception-like features: non-negative, mean comparable to the spread.
  a = rng.gamma(2.0, 0.3, (300, 48)).astype(np.float32)
  b = (rng.gamma(2.0, 0.3, (250, 48)) + 0.05).astype(np.float32)
  first, second = fid_stream.FeatureMoments(48), fid_stream.FeatureMoments(48)
  for start in range(0, 180, 37):              # uneven "videos"
    first.add(a[start:min(start + 37, 180)])
  second.add(a[180:])
  first.merge(second)                          # another process's shard
  mu, sigma = first.statistics()
  mu_ref, sigma_ref = fid.activation_statistics(a)
  np.testing.assert_allclose(mu, mu_ref, rtol=1e-12)
  np.testing.assert_allclose(sigma, sigma_ref, rtol=1e-9, atol=1e-14)
  other = fid_stream.FeatureMoments(48)
  other.add(b)
  streamed = fid.frechet_distance(mu, sigma, *other.statistics())
  assert streamed == pytest.approx(fid.fid_from_features(a, b), rel=1e-9)
  assert streamed > 0.01
  fid_stream.save_moments(tmp_path / "m.npz", {"generated": first, "real": other}, ["k1", "k2"],
                          "cross")
  loaded, keys, meta = fid_stream.load_moments(tmp_path / "m.npz")
  assert keys == ["k1", "k2"] and meta == "cross" and loaded["generated"].count == 300
  np.testing.assert_array_equal(loaded["real"].outer, other.outer)
  with pytest.raises(ValueError, match="64-d"):
    first.merge(fid_stream.FeatureMoments(64))


def test_inception_split_over_devices_matches_one_device():
  variables = convert_inception.params_from_torch(
      manifest_state_dict("manifest_inception_fid.json"))
  images = np.random.default_rng(3).integers(0, 256, (5, 64, 64, 3), np.uint8)
  single = fid.InceptionFeatures(variables, batch_size=4)(images, 64)
  split = fid.InceptionFeatures(variables, batch_size=3, devices=jax.local_devices()[:4],
                                fixed_batch=True)
  assert split.batch_size == 4
  np.testing.assert_allclose(split(images, 64), single, rtol=1e-5, atol=1e-6)


def _recon_args(world, out_dir, listing):
  return ["--filelist", str(listing), "--setting", "reconstruction", "--root",
          str(world["root"]), "--generated_dir", str(world["gen"]), "--out_dir", str(out_dir),
          "--fid_weights", world["inception"], *FAST]


def test_lse_of_a_generated_video_is_syncnet_pythons(world, tmp_path, capsys):
  """The command's LSE is `lse.lse_scores` on syncnet_python's crops of the video's boxes and
  its own audio (the expert's separately named scores: tests/test_evaluate.py)."""
  clip = CLIPS[1]
  generated = world["gen"] / filelists.generated_name(clip, clip, 1, "diff2lip")
  out = tmp_path / "report.json"
  assert command.main(["--generated", str(generated), "--reference",
                       str(world["root"] / f"{clip}.mp4"), "--syncnet_v2", world["syncnet_v2"],
                       "--out", str(out), *FAST]) == 0
  table = capsys.readouterr().out
  assert "| pairs | 1 | 0 |" in table and "--fid_weights" in table
  record = json.loads(out.read_text())["videos"][0]
  frames, _ = video_io.read_video(generated)
  boxes = face_crops.frame_boxes(face_crops.parse_crop("voxceleb2"), frames.shape[1:3],
                                 len(frames))
  samples, rate = video_io.read_audio_track(generated)
  assert rate == 16000
  direct = lse.lse_scores(clip_metrics.lse_crops(frames, boxes, "track"), samples,
                          world["syncnet_v2"])
  assert record["lse_windows"] == direct["num_windows"] == FRAMES - 5
  assert record["lse_d"] == pytest.approx(direct["lse_d"], rel=1e-5)
  assert record["lse_c"] == pytest.approx(direct["lse_c"], rel=1e-4, abs=1e-6)
  assert record["lse_offset"] == direct["offset"]
  assert 10 < record["psnr"] < 40


def _rows(out_dir):
  rows = json.loads((out_dir / "summary.json").read_text())["rows"]
  for row in rows:
    row.pop("seconds", None)
  return rows


def test_reconstruction_run_resumes_without_duplicates(world, tmp_path, capsys):
  listing = tmp_path / "recon.txt"
  listing.write_text("".join(f"{c} {c}\n" for c in CLIPS) + "spk9/missing/00001\n")
  out = tmp_path / "run"
  assert command.main(_recon_args(world, out, listing)) == 1     # the missing video failed
  printed = capsys.readouterr()
  assert "FAILED" in printed.err and "missing" in printed.err
  assert "| reconstruction | 3 | 1 |" in printed.out
  jsonl = results_log.results_path(out, 0, 1)
  records = results_log.latest_by_key(results_log.read_records(jsonl))
  same, noisy = records[f"{CLIPS[0]} {CLIPS[0]}"], records[f"{CLIPS[1]} {CLIPS[1]}"]
  assert same["psnr"] == 100.0 and same["ssim"] == pytest.approx(1.0)
  assert 10 < noisy["psnr"] < 40 and noisy["ssim"] < 0.95
  assert same["frames"] == noisy["frames"] == same["fid_frames"] == FRAMES
  first = _rows(out)
  row = first[0]
  assert row["videos"] == 3 and row["failed"] == 1 and row["fid_videos_missing"] == 0
  assert row["fid_frames"] == {"generated": 3 * FRAMES, "real": 3 * FRAMES}
  assert row["fid"] > 0 and row["lse_d"] is None and set(row["skipped"]) == {
      "lse", "wav2lip_expert", "sync_r"}
  assert row["psnr"] == pytest.approx(np.mean([r["psnr"] for r in records.values()
                                               if "psnr" in r]))
  # Killed while writing: the last line is cut off, and the run before it never wrote the
  # line of the last good video. The re-run redoes only that one, without counting its FID
  # features twice, and leaves one line per video.
  lines = jsonl.read_text().splitlines(keepends=True)
  jsonl.write_text("".join(lines[:2]) + lines[2][:25])
  assert command.main(_recon_args(world, out, listing)) == 1
  keys = [r["key"] for r in results_log.read_records(jsonl)]
  assert len(keys) == len(set(keys)) == 4
  assert _rows(out) == first
  # Statistics file lost: only the FID features are recomputed, same table.
  results_log.fid_path(out, 0, 1).unlink()
  assert command.main(_recon_args(world, out, listing)) == 1
  assert len(results_log.read_records(jsonl)) == 4
  second = _rows(out)
  assert second[0]["fid"] == pytest.approx(first[0]["fid"], rel=1e-9)
  second[0]["fid"] = first[0]["fid"]
  assert second == first
  # Other flags against the same directory are refused.
  assert command.main(_recon_args(world, out, listing) + ["--vshift", "5"]) == 1
  assert "other settings (vshift)" in capsys.readouterr().err


def test_cross_setting_split_over_two_processes_then_merged(world, tmp_path, capsys):
  listing = tmp_path / "cross.txt"
  listing.write_text(f"{CLIPS[2]} {CLIPS[1]}\n{CLIPS[0]} {CLIPS[0]}\n")
  args = ["--filelist", str(listing), "--setting", "cross", "--root", str(world["root"]),
          "--generated_dir", str(world["gen"]), "--fid_weights", world["inception"], *FAST]
  # Line 2 (a clip with itself) is a valid cross line too.
  assert command.main(args + ["--out_dir", str(tmp_path / "one")]) == 0
  whole = _rows(tmp_path / "one")[0]
  split = tmp_path / "split"
  for index in (1, 0):
    assert command.main(args + ["--out_dir", str(split), "--process_index", str(index),
                                "--process_count", "2"]) == 0
    assert "--merge" in capsys.readouterr().out
  assert len(results_log.read_records(results_log.results_path(split, 1, 2))) == 1
  assert command.main(["--merge", str(split)]) == 0
  table = capsys.readouterr().out
  merged = _rows(split)[0]
  assert merged["fid"] == pytest.approx(whole["fid"], rel=1e-9)
  assert merged["videos"] == whole["videos"] == 2
  assert merged["psnr"] is None and merged["lse_d"] is None   # no ground truth; LSE skipped
  assert "| cross | 2 | 0 |" in table and "skipped" in table and "--syncnet_v2" in table
  assert (split / "summary.md").read_text() == table
  # Both settings' directories in one table, one row each.
  assert command.main(["--merge", str(tmp_path / "one"), str(split), "--out_dir",
                       str(tmp_path / "both")]) == 0
  assert [r["setting"] for r in _rows(tmp_path / "both")] == ["cross", "cross"]


def test_merge_of_an_unfinished_split_is_refused(tmp_path, capsys):
  with results_log.RecordWriter(results_log.results_path(tmp_path, 0, 2)) as writer:
    writer.write({"key": "a"})
  (tmp_path / "run.json").write_text('{"setting": "cross"}')
  assert command.main(["--merge", str(tmp_path)]) == 1
  assert "processes [1] of 2" in capsys.readouterr().err
