"""Curation with the real sync networks (deterministic / random weights: plumbing, not accuracy):
syncnet_python's SyncNet on its 224x224 crops and the Wav2Lip-style expert on 96x96 crops give
the same numbers as the LSE / evaluate code they reuse."""
import numpy as np
import pytest

from data_pipelines import face_tracks, synthetic
from data_pipelines.curation import curate, sync
from diff2lip_jax.evaluation import evaluate, lse
from diff2lip_jax.syncnet import expert as syncnet_expert
from tests.inference_helpers import tiny_config

VSHIFT = 3


@pytest.fixture(scope="module")
def clip():
  return synthetic.generate_clip(41, 12, full_frame_size=160)


def test_syncnet_v2_measurer_is_lse_on_syncnet_crops(clip):
  from diff2lip_jax.porting import syncnet_v2 as convert
  from tests.metric_goldens import manifest_state_dict
  measurer = sync.syncnet_v2_measurer(
      convert.params_from_torch(manifest_state_dict("manifest_syncnet_v2.json")), batch_size=8)
  result = measurer.measure(clip.full_frames, clip.full_face_box, clip.wav, VSHIFT)
  crops = face_tracks.syncnet_face_crops(clip.full_frames, clip.full_face_box)
  expected = lse.lse_scores(crops, clip.wav, scorer=measurer.embedder, vshift=VSHIFT)
  assert (result.offset, result.num_windows) == (expected["offset"], 7)
  np.testing.assert_allclose([result.confidence, result.min_dist],
                             [expected["lse_c"], expected["lse_d"]], rtol=1e-6)
  config = curate.CurationConfig(scene_detection=False, min_frames=6, vshift=VSHIFT,
                                 min_confidence=-1e9, min_face_size=10)
  decision = curate.curate_clip(clip.full_frames, clip.wav, clip.full_face_box, config=config,
                                measurer=measurer)
  assert decision.measurer == "syncnet_v2" and decision.segments[0].offset == result.offset


def test_expert_measurer_is_evaluate_scorer_on_padded_crops(clip, tmp_path):
  directory = syncnet_expert.export_expert(tmp_path / "expert",
                                           syncnet_expert.torch_default_init(0), tiny_config(), 0)
  measurer = sync.expert_measurer(directory, batch_size=8)
  pcm = np.clip(np.rint(clip.wav * 32768), -32768, 32767).astype(np.int16)
  result = measurer.measure(clip.full_frames, clip.full_face_box, pcm, VSHIFT)
  crops = sync.expert_crops(clip.full_frames, clip.full_face_box)
  assert crops.shape == (12, 96, 96, 3) and crops.dtype == np.uint8
  assert isinstance(measurer.scorer, evaluate.SyncNetScorer)
  expected = measurer.scorer.score(crops, pcm / 32768.0, VSHIFT)
  assert (result.offset, result.num_windows) == (expected["offset"], expected["sync_windows"])
  np.testing.assert_allclose([result.confidence, result.min_dist],
                             [expected["lse_c"], expected["lse_d"]], rtol=1e-5)
