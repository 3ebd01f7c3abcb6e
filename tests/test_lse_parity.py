"""LSE-D / LSE-C parity with joonson/syncnet_python (and Wav2Lip's scores_LSE copy of it).

Goldens: tests/goldens/lse_golden.npz and manifest_syncnet_v2.json (see the README there):
the original `SyncNetInstance.evaluate` on a 24-frame synthetic clip with deterministic
weights, embeddings recorded from `forward_lip` / `forward_aud`.
"""
import collections
import os

import numpy as np
import pytest

from diff2lip_jax.evaluation import lse
from diff2lip_jax.porting import syncnet_v2 as convert
from diff2lip_jax.porting.torch_io import StateDictMismatchError, UnsafeCheckpointError
from tests.metric_goldens import (crafted_embeddings, load_golden, manifest_state_dict,
                                  max_rel_diff, upscale_56_to_224)

try:
  import torch
except ImportError:
  torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch writes the checkpoint fixtures")

FLOAT32_RTOL = 1e-5


@pytest.fixture(scope="module")
def golden():
  return load_golden("lse_golden.npz")


@pytest.fixture(scope="module")
def weights():
  """(original state dict, scorer with its converted variables); deterministic values."""
  state = manifest_state_dict("manifest_syncnet_v2.json")
  return state, lse.SyncNetV2Scorer(convert.params_from_torch(state))


@pytest.fixture(scope="module")
def state_dict(weights):
  return weights[0]


@pytest.fixture(scope="module")
def scores(golden, weights):
  """Embeddings and offset search on the golden clip (RGB crops, int16 audio)."""
  lips, audio = weights[1].embed(upscale_56_to_224(golden["frames56"]), golden["wav_int16"])
  return {"lips": lips, "audio": audio, **lse.lse_from_embeddings(lips, audio)}


def test_embeddings_match_syncnet_python(golden, scores):
  assert scores["lips"].shape == golden["lip_emb"].shape == (19, 1024)
  assert max_rel_diff(scores["lips"], golden["lip_emb"]) < FLOAT32_RTOL
  assert max_rel_diff(scores["audio"], golden["audio_emb"]) < FLOAT32_RTOL
  # The embeddings do depend on the input: windows differ by far more than the tolerance.
  assert max_rel_diff(scores["lips"][1:], scores["lips"][:-1]) > 100 * FLOAT32_RTOL


def test_distances_offset_and_scores_match(golden, scores):
  assert max_rel_diff(scores["dists"], golden["dists"]) < FLOAT32_RTOL
  assert scores["offset"] == int(golden["offset"])
  assert scores["num_windows"] == 19
  np.testing.assert_allclose(scores["lse_d"], golden["min_dist"], rtol=FLOAT32_RTOL)
  np.testing.assert_allclose(scores["lse_c"], golden["conf"], rtol=1e-4)
  assert scores["min_dist"] == scores["lse_d"] and scores["conf"] == scores["lse_c"]
  np.testing.assert_allclose(scores["framewise_conf"], golden["framewise_conf"], atol=1e-3)


def test_offset_search_matches_calc_pdist_with_interior_offset(golden):
  lips, audio = crafted_embeddings()
  result = lse.lse_from_embeddings(lips, audio)
  assert max_rel_diff(result["dists"], golden["crafted_dists"]) < 1e-6
  assert result["offset"] == int(golden["crafted_offset"]) == -3
  np.testing.assert_allclose(result["lse_c"], golden["crafted_conf"], rtol=1e-5)
  np.testing.assert_allclose(result["lse_d"], golden["crafted_min_dist"], rtol=1e-5)


@pytest.mark.parametrize("shift", [-4, 0, 2])
def test_offset_sign_and_zero_padding(shift):
  rng = np.random.default_rng(shift + 10)
  lips = rng.standard_normal((12, 8))
  audio = np.roll(lips, -shift, axis=0)       # audio[v] = lip[v + shift]: audio leads by shift
  dists = lse.offset_distances(lips, audio, vshift=5)
  padded = np.concatenate([np.zeros((5, 8)), audio, np.zeros((5, 8))])
  np.testing.assert_allclose(dists[3, 1], np.linalg.norm(lips[3] - padded[4] + 1e-6))
  result = lse.lse_from_embeddings(lips, audio, vshift=5)
  assert result["offset"] == shift
  assert result["mean_dists"].shape == (11,) and result["dists"].shape == (12, 11)


def test_lse_scores_end_to_end_and_input_forms(golden, weights, scores):
  frames = upscale_56_to_224(golden["frames56"])
  wav_float = golden["wav_int16"].astype(np.float32) / 32768.0   # what a WAV reader returns
  first = lse.lse_scores(frames[:8, ..., ::-1], wav_float[:8 * 640], scorer=weights[1],
                         channel_order="bgr")
  assert first["num_windows"] == 3 and first["dists"].shape == (3, 31)
  # Windows only see their own 5 frames and 20 MFCC frames: at zero shift the first three
  # distances are the full clip's (RGB, int16 input there).
  np.testing.assert_allclose(first["dists"][:, 15], scores["dists"][:3, 15], rtol=1e-5)


def test_window_count_follows_the_shorter_stream():
  assert lse.num_sync_windows(24, 24 * 640) == 19
  assert lse.num_sync_windows(24, 10 * 640 + 639) == 5
  assert lse.num_sync_windows(7, 10 ** 6) == 2


def test_clear_errors(weights):
  scorer = weights[1]
  frames = np.zeros((10, 224, 224, 3), np.uint8)
  with pytest.raises(ValueError, match="224"):
    lse.lse_scores(np.zeros((10, 96, 96, 3), np.uint8), np.zeros(6400), scorer=scorer)
  with pytest.raises(ValueError, match="at least 6 frames"):
    lse.lse_scores(frames[:5], np.zeros(6400), scorer=scorer)
  with pytest.raises(ValueError, match="syncnet_v2.model"):
    lse.lse_scores(frames, np.zeros(6400))
  with pytest.raises(ValueError, match="0..255"):
    lse.lse_scores(frames.astype(np.float32) - 1, np.zeros(6400), scorer=scorer)
  with pytest.raises(ValueError, match="mono"):
    lse.lse_scores(frames, np.zeros((6400, 2)), scorer=scorer)
  with pytest.raises(ValueError, match="converted variables"):
    lse.SyncNetV2Scorer({"netcnnaud": {}})
  with pytest.raises(ValueError, match="batch_size"):
    lse.SyncNetV2Scorer(scorer.variables, batch_size=0)


@needs_torch
def test_legacy_torch_file_converts(tmp_path, state_dict):
  path = tmp_path / "syncnet_v2.model"
  # As `module.state_dict()` makes it: an OrderedDict carrying `_metadata`.
  tensors = collections.OrderedDict((k, torch.from_numpy(np.asarray(v)))
                                    for k, v in state_dict.items())
  tensors._metadata = collections.OrderedDict([("", {"version": 1})])
  torch.save(tensors, path, _use_new_zipfile_serialization=False)
  with open(path, "rb") as f:
    assert f.read(2) == b"\x80\x02"   # a pickle stream, not a zip archive
  variables = convert.load_syncnet_v2_variables(path)
  kernel = np.asarray(variables["params"]["netcnnlip"]["0"]["kernel"])
  weight = state_dict["netcnnlip.0.weight"]          # [O, C, T, kh, kw]
  assert kernel.shape == (7, 7, 15, 96)
  np.testing.assert_array_equal(kernel[1, 2, 3 * 4 + 2, 5], weight[5, 2, 4, 1, 2])
  np.testing.assert_array_equal(variables["batch_stats"]["netfclip"]["1"]["var"],
                                state_dict["netfclip.1.running_var"])


def test_converter_reports_every_problem_at_once(state_dict):
  broken = dict(state_dict)
  del broken["netcnnaud.0.bias"]
  broken["netcnnaud.99.weight"] = np.zeros(3, np.float32)
  broken["netfcaud.3.weight"] = np.zeros((1024, 511), np.float32)
  broken.pop("netcnnlip.1.num_batches_tracked")      # optional buffers may be absent
  with pytest.raises(StateDictMismatchError) as err:
    convert.params_from_torch(broken)
  message = str(err.value)
  for part in ("missing (1): netcnnaud.0.bias", "unexpected (1): netcnnaud.99.weight",
               "netfcaud.3.weight: file (1024, 511) vs model (1024, 512)"):
    assert part in message
  assert "num_batches_tracked" not in message


class _RunsCode:
  marker = ""

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@needs_torch
def test_file_carrying_code_is_refused(tmp_path):
  _RunsCode.marker = str(tmp_path / "executed")
  path = tmp_path / "syncnet_v2.model"
  torch.save({"netcnnaud.0.weight": _RunsCode()}, path, _use_new_zipfile_serialization=False)
  with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|system"):
    convert.load_syncnet_v2_variables(path)
  assert not (tmp_path / "executed").exists()
