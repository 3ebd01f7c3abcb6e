"""`python -m diff2lip_jax.evaluate`: PSNR/SSIM, the offset search, Wav2Lip-expert and sync scores."""
import json

import numpy as np
import pytest

from data_pipelines import video_io
from diff2lip_jax.evaluation import command, evaluate
from diff2lip_jax.syncnet import expert as syncnet_expert
from tests.inference_helpers import face_clip, tiny_config, write_face_video


def _torch_style_pdist(feat1, feat2, vshift):
  """syncnet_python's calc_pdist written out as there (pad with zeros, per-frame windows)."""
  win = 2 * vshift + 1
  padded = np.concatenate([np.zeros((vshift, feat2.shape[1])), feat2,
                           np.zeros((vshift, feat2.shape[1]))])
  return np.stack([np.sqrt((((feat1[i][None] - padded[i:i + win]) + 1e-6) ** 2).sum(-1))
                   for i in range(len(feat1))])


def test_offset_search_finds_a_known_shift():
  rng = np.random.default_rng(0)
  base = rng.standard_normal((60, 16))
  video_emb, audio_emb = base[10:50], base[7:47]  # video frame i matches audio i + 3 (lags)
  np.testing.assert_allclose(evaluate.calc_pdist(video_emb, audio_emb, 15),
                             _torch_style_pdist(video_emb, audio_emb, 15), rtol=1e-12)
  result = evaluate.sync_offset_confidence(video_emb, audio_emb, vshift=15)
  assert result["offset"] == -3
  assert result["lse_c"] > 1.0
  shuffled = evaluate.sync_offset_confidence(video_emb, rng.permutation(audio_emb), vshift=15)
  assert shuffled["lse_c"] < result["lse_c"] / 3 and shuffled["lse_d"] > result["lse_d"]


def test_psnr_and_ssim_have_their_analytic_values():
  metrics = evaluate.image_metrics()
  rng = np.random.default_rng(1)
  a = rng.integers(20, 200, (3, 40, 40, 3)).astype(np.uint8)
  psnr, ssim = metrics(a, a + 4)
  np.testing.assert_allclose(np.asarray(psnr), 10 * np.log10(255.0 ** 2 / 16), rtol=1e-5)
  same_psnr, same_ssim = metrics(a, a)
  np.testing.assert_allclose(np.asarray(same_ssim), 1.0, rtol=1e-6)
  assert np.all(np.asarray(ssim) < 1.0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval")
  clip, other = face_clip(31, 40), face_clip(32, 40)
  write_face_video(root / "real.mp4", clip)
  # The same face with another clip's speech: out of sync by construction.
  video_io.write_video(root / "dubbed.mp4", clip.full_frames, audio=other.wav, audio_sr=16000,
                       preset="ultrafast")
  noisy = np.clip(clip.full_frames.astype(int) + np.random.default_rng(2).integers(
      -20, 21, clip.full_frames.shape), 0, 255).astype(np.uint8)
  video_io.write_video(root / "noisy.mp4", noisy, audio=clip.wav, audio_sr=16000,
                       preset="ultrafast")
  expert = root / "expert"
  syncnet_expert.export_expert(expert, syncnet_expert.torch_default_init(0), tiny_config(), 0)
  return root, expert


def test_cli_table_and_json(videos, tmp_path, capsys):
  root, expert = videos
  pairs = tmp_path / "pairs.txt"
  pairs.write_text("real.mp4 real.mp4\nnoisy.mp4 real.mp4\ndubbed.mp4\nmissing.mp4 real.mp4\n")
  out = tmp_path / "metrics.json"
  code = command.main(["--pairs", str(pairs), "--root", str(root), "--syncnet", str(expert),
                        "--synthetic", "--out", str(out)])
  printed = capsys.readouterr()
  assert code == 1 and "FAILED" in printed.err and "missing.mp4" in printed.err
  assert "Wav2Lip-expert LSE-D" in printed.out and "sync r" in printed.out
  assert "| pairs | 3 | 1 |" in printed.out and "skipped" in printed.out
  report = json.loads(out.read_text())
  real, noisy, dubbed, missing = report["videos"]
  assert report["failures"] == [missing] and "missing.mp4" in missing["error"]
  assert real["psnr"] == 100.0 and real["ssim"] == pytest.approx(1.0)
  assert 15 < noisy["psnr"] < 40 and noisy["ssim"] < 0.9
  assert "psnr" not in dubbed  # no reference given
  for r in (real, noisy, dubbed):
    assert r["frames"] == 40 and -15 <= r["wav2lip_expert_offset"] <= 15
    assert np.isfinite(r["wav2lip_expert_lse_d"]) and np.isfinite(r["wav2lip_expert_lse_c"])
    assert "lse_d" not in r   # the published LSE needs --syncnet_v2
  # The synthetic score tells the true speech from another clip's.
  assert real["sync_r"] > 0.9 and dubbed["sync_r"] < 0.5
  row = report["summary"][0]
  assert row["psnr"] == pytest.approx((real["psnr"] + noisy["psnr"]) / 2)
  assert row["skipped"] == {"lse": "--syncnet_v2 syncnet_v2.model",
                            "fid": "--fid_weights pt_inception-2015-12-05-6726825d.pth"}


def test_full_frame_region_and_missing_expert(videos, tmp_path, capsys):
  root, _ = videos
  code = command.main(["--generated", str(root / "noisy.mp4"), "--reference",
                       str(root / "real.mp4"), "--region", "full", "--out",
                       str(tmp_path / "r.json")])
  assert code == 0 and "1 evaluated, 0 failed" in capsys.readouterr().out
  assert json.loads((tmp_path / "r.json").read_text())["videos"][0]["generated"].endswith(
      "noisy.mp4")
  assert command.main(["--generated", str(root / "real.mp4"), "--syncnet",
                        str(tmp_path / "nope")]) == 1
  assert "nope" in capsys.readouterr().err
