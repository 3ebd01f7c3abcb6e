"""Wav2Lip expert SyncNet: golden parity, checkpoint conversion, sync loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diff2lip_jax.porting import syncnet as syncnet_convert
from diff2lip_jax.models.syncnet import (SyncNetColor, cosine_loss, cosine_sync_loss,
                                         syncnet_face_input)
from diff2lip_jax.porting.torch_io import StateDictMismatchError
from tests import reference

try:
  import torch
except ImportError:
  torch = None


@pytest.fixture(scope="module")
def state_dict():
  return reference.deterministic_state_dict(reference.load_manifest("manifest_syncnet.json"))


@pytest.fixture(scope="module")
def golden():
  return reference.load_npz("syncnet_golden.npz")


def test_matches_reference_golden(state_dict, golden):
  variables = syncnet_convert.params_from_torch(state_dict)
  mel = reference.nchw_to_nhwc(golden["mel"])
  face = reference.nchw_to_nhwc(golden["face"])
  audio_emb, face_emb = jax.jit(SyncNetColor().apply)(variables, mel, face)
  np.testing.assert_allclose(audio_emb, golden["audio_emb"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(face_emb, golden["face_emb"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.linalg.norm(face_emb, axis=-1), 1.0, atol=1e-5)


@pytest.mark.skipif(torch is None, reason="torch writes the checkpoint fixture")
def test_load_wav2lip_checkpoint_layout(tmp_path, state_dict):
  # lipsync_expert.pth: {"state_dict", "optimizer", "global_step", "global_epoch"}.
  tensors = {"module." + k: torch.from_numpy(np.array(v, np.float32))
             for k, v in state_dict.items()}
  path = tmp_path / "lipsync_expert.pth"
  torch.save({"state_dict": tensors, "optimizer": {"param_groups": [{"lr": 1e-4}]},
              "global_step": 1, "global_epoch": 0}, path, _use_new_zipfile_serialization=False)
  loaded = syncnet_convert.load_syncnet_variables(path)
  direct = syncnet_convert.params_from_torch(state_dict)
  jax.tree.map(np.testing.assert_array_equal, loaded, direct)
  kernel = loaded["params"]["face_encoder_1"]["conv"]["kernel"]
  assert kernel.shape == (5, 5, 32, 64)  # torch [64, 32, 5, 5] -> HWIO
  torch_weight = state_dict["face_encoder.1.conv_block.0.weight"]
  np.testing.assert_array_equal(kernel[1, 2, 3, 4], np.float32(torch_weight[4, 3, 1, 2]))
  np.testing.assert_array_equal(loaded["batch_stats"]["audio_encoder_13"]["bn"]["var"],
                                state_dict["audio_encoder.13.conv_block.1.running_var"])


def test_converter_reports_every_problem_at_once(state_dict):
  broken = dict(state_dict)
  del broken["face_encoder.3.conv_block.0.bias"]
  del broken["audio_encoder.0.conv_block.1.running_var"]
  broken["face_encoder.2.conv_block.0.weight"] = np.zeros((64, 64, 5, 5), np.float32)
  broken["extra.weight"] = np.zeros(3, np.float32)
  del broken["audio_encoder.5.conv_block.1.num_batches_tracked"]  # optional, not reported
  with pytest.raises(StateDictMismatchError) as err:
    syncnet_convert.params_from_torch(broken)
  text = str(err.value)
  assert "missing (2)" in text and "face_encoder.3.conv_block.0.bias" in text
  assert "audio_encoder.0.conv_block.1.running_var" in text
  assert "unexpected (1): extra.weight" in text
  assert "face_encoder.2.conv_block.0.weight: file (64, 64, 5, 5) vs model (64, 64, 3, 3)" in text


def test_wrong_input_shape_is_explained():
  variables = jax.eval_shape(lambda: syncnet_convert.init_syncnet_variables(jax.random.PRNGKey(0)))
  with pytest.raises(ValueError, match=r"face input must be \[N, 48, 96, 15\]"):
    jax.eval_shape(SyncNetColor().apply, variables, jnp.zeros((2, 80, 16, 1)),
                   jnp.zeros((2, 15, 48, 96)))


def test_face_input_layout():
  # frame t, channel c (RGB) holds value 10*t + c; output channel 3*t + k is BGR channel k.
  t_idx = np.arange(5)[None, :, None, None, None]
  c_idx = np.arange(3)[None, None, None, None, :]
  frames = np.broadcast_to(10.0 * t_idx + c_idx, (2, 5, 96, 96, 3)).astype(np.float32)
  frames = frames.copy()
  frames[:, :, :48] = -1.0  # upper half must be dropped
  out = np.asarray(syncnet_face_input(frames))
  assert out.shape == (2, 48, 96, 15)
  want = np.array([10.0 * t + (2 - k) for t in range(5) for k in range(3)])
  np.testing.assert_array_equal(out[0, 0, 0], want)
  np.testing.assert_array_equal(out.min(axis=(0, 1, 2)), want)
  same = np.asarray(syncnet_face_input(frames[..., ::-1], channel_order="bgr"))
  np.testing.assert_array_equal(same, out)
  resized = syncnet_face_input(np.full((1, 5, 128, 128, 3), 0.25, np.float32))
  assert resized.shape == (1, 48, 96, 15)
  np.testing.assert_allclose(resized, 0.25, atol=1e-6)


def test_sync_loss_analytic():
  a = jnp.array([[1.0, 0.0], [0.6, 0.8]])
  v = jnp.array([[2.0, 0.0], [0.0, 1.0]])  # cos = 1 and 0.8
  want = -(np.log(1.0) + np.log(0.8)) / 2
  np.testing.assert_allclose(cosine_sync_loss(a, v), want, rtol=1e-6)
  # Off-sync target: -log(1 - cos); cos == 1 hits torch's clamp of log at -100.
  np.testing.assert_allclose(cosine_loss(a, v, jnp.array([0.0, 0.0])),
                             (100.0 - np.log(0.2)) / 2, rtol=1e-6)
  np.testing.assert_allclose(cosine_sync_loss(a, v, rescale_cosine=True),
                             -(np.log(1.0) + np.log(0.9)) / 2, rtol=1e-6)
  grads = jax.grad(lambda x: cosine_loss(x, v, jnp.array([0.0, 1.0])))(a)
  assert np.all(np.isfinite(grads))


@pytest.mark.skipif(torch is None, reason="compares with torch BCELoss")
def test_sync_loss_matches_torch():
  rng = np.random.default_rng(0)
  a = np.abs(rng.standard_normal((6, 512))).astype(np.float32)
  v = np.abs(rng.standard_normal((6, 512))).astype(np.float32)
  y = np.array([1, 0, 1, 1, 0, 1], np.float32)
  cos = torch.nn.functional.cosine_similarity(torch.from_numpy(a), torch.from_numpy(v))
  want = torch.nn.BCELoss()(cos.unsqueeze(1), torch.from_numpy(y)[:, None]).item()
  np.testing.assert_allclose(cosine_loss(a, v, y), want, rtol=1e-5)
