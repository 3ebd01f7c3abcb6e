"""SyncNet expert training: pair sampling, metrics, train step, checkpoints, export, CLI."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import syncnet as syncnet_config
from data_pipelines import audio, shards, synthetic
from data_pipelines.audio import mel_start_row
from data_pipelines.record_io import read_tfrecord_file
from diff2lip_jax import checkpoints
from diff2lip_jax.syncnet import data as syncnet_data
from diff2lip_jax.syncnet import expert as syncnet_expert
from diff2lip_jax.syncnet import train as train_syncnet
from diff2lip_jax.training import data as training_data
from diff2lip_jax.models import syncnet
from diff2lip_jax.porting import syncnet as syncnet_convert
from tests import reference

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE = 32
FPS = 25.0
_TRAIN_STEP = jax.jit(train_syncnet.train_step)


def _coded_clip(index: int, num_frames: int) -> dict:
  # Frame k has brightness 10 + 3k; mel row r holds 1000 * index + r: both survive as indices.
  frames = np.stack([np.full((SIZE, SIZE, 3), 10 + 3 * k, np.uint8) for k in range(num_frames)])
  rows = int(num_frames * 80 / FPS) + 1
  mel = np.repeat((1000.0 * index + np.arange(rows, dtype=np.float32))[:, None], 80, axis=1)
  return {"clip_id": f"clip{index}", "frames": frames, "mel": mel}


def _pipeline_config(**overrides):
  config = syncnet_config.get_config().data.pipeline
  config.image_size = SIZE
  config.host_prefetch = 0
  config.update(overrides)
  return config


def _iterator(directory, config=None, **kwargs):
  for key, value in (("seed", 0), ("batch_size", 32), ("shard_index", 0), ("shard_count", 1)):
    kwargs.setdefault(key, value)
  return syncnet_data.create_iterator(config or _pipeline_config(), directory, **kwargs)


@pytest.fixture(scope="module")
def coded_shards(tmp_path_factory):
  out = tmp_path_factory.mktemp("coded")
  clips = [_coded_clip(i, 10 + 4 * i) for i in range(6)]
  shards.write_shards(clips, out, num_shards=2)
  source = shards.open_data_source(shards.find_shard_files(out))
  ids = [shards.parse_clip(source[i]).clip_id for i in range(len(source))]
  return out, [clips[int(clip_id[4:])] for clip_id in ids]


@pytest.fixture(scope="module")
def synthetic_shards(tmp_path_factory):
  out = tmp_path_factory.mktemp("synthetic")
  clips = list(synthetic.generate_dataset(3, seed=0, min_frames=30, max_frames=40))
  shards.write_shards(clips, out, num_shards=1)
  return out, clips


@pytest.mark.parametrize("min_shift", [1, 6])
def test_batches_layout_labels_and_balance(coded_shards, min_shift):
  directory, clips = coded_shards
  iterator = _iterator(directory, _pipeline_config(min_shift=min_shift), batch_size=64)
  labels = []
  for _ in range(8):
    batch = next(iterator)
    expected = {"frames": ((64, 5, SIZE, SIZE, 3), np.uint8), "mel": ((64, 80, 16), np.float32),
                "label": ((64,), np.float32), "clip_index": ((64,), np.int32),
                "frame_index": ((64,), np.int32), "mel_frame_index": ((64,), np.int32),
                "skipped_records": ((64,), np.int32)}
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    for b in range(64):
      clip = clips[batch["clip_index"][b]]
      start, mel_start = int(batch["frame_index"][b]), int(batch["mel_frame_index"][b])
      brightness = batch["frames"][b].astype(float).mean(axis=(1, 2, 3))
      np.testing.assert_array_equal(np.rint((brightness - 10) / 3), start + np.arange(5))
      # The mel window is the one of mel_frame_index, from this clip.
      np.testing.assert_array_equal(batch["mel"][b], audio.sync_mel_window(clip["mel"], mel_start))
      assert (mel_start == start) == (batch["label"][b] == 1)
      if batch["label"][b] == 0:
        assert abs(mel_start - start) >= min_shift
      assert max(start, mel_start) + 5 <= len(clip["frames"])
    labels.append(batch["label"])
    if min_shift == 6:  # the 10-frame clip has starts 0..5 only: no pair 6 frames apart
      assert 10 not in {len(clips[i]["frames"]) for i in batch["clip_index"]}
  labels = np.concatenate(labels)
  assert abs(labels.mean() - 0.5) < 0.07  # 512 draws: 3.2 standard deviations
  assert (iterator.skipped_records > 0) == (min_shift == 6)


def test_pairs_match_synthetic_ground_truth(synthetic_shards):
  directory, clips = synthetic_shards
  config = _pipeline_config(image_size=128)
  batch = next(_iterator(directory, config, batch_size=192))
  source = shards.open_data_source(shards.find_shard_files(directory))
  by_id = {f"synthetic-{c.seed}": c for c in clips}
  ordered = [by_id[shards.parse_clip(source[i]).clip_id] for i in range(len(source))]
  in_sync = batch["label"] == 1
  for b in range(len(in_sync)):
    clip, start = ordered[batch["clip_index"][b]], int(batch["frame_index"][b])
    np.testing.assert_array_equal(batch["mouth_opening"][b], clip.mouth_opening[start:start + 5])
    error = np.abs(batch["frames"][b].astype(float) - clip.frames[start:start + 5]).mean()
    assert error < 4.0  # JPEG
    synced = audio.sync_mel_window(clip.mel, start)
    assert np.array_equal(batch["mel"][b], synced) == bool(in_sync[b])
  # The audio says how far the mouth opens: loudness of the mel window follows the mouth
  # opening of the face window for in-sync pairs only.
  loudness = batch["mel"].mean(axis=(1, 2))
  opening = batch["mouth_opening"].mean(axis=1)
  corr_in = np.corrcoef(loudness[in_sync], opening[in_sync])[0, 1]
  corr_off = np.corrcoef(loudness[~in_sync], opening[~in_sync])[0, 1]
  assert corr_in > 0.5 and corr_in > corr_off + 0.3, (corr_in, corr_off)


def test_window_arithmetic():
  # 10 frames with full audio: starts 0..5 (mel rows int(3.2 s) + 16 <= 33).
  assert syncnet_data.num_sync_starts(10, 33, FPS) == 6
  assert syncnet_data.num_sync_starts(10, 25, FPS) == 4  # rows 0, 3, 6, 9 (+16 <= 25)
  assert syncnet_data.num_sync_starts(4, 100, FPS) == 0
  assert mel_start_row(2, FPS) == 6
  np.testing.assert_array_equal(syncnet_data.partner_counts(4, 2), [2, 1, 1, 2])
  np.testing.assert_array_equal(syncnet_data.partner_counts(3, 3), [0, 0, 0])


def test_determinism_host_sharding_and_restore(coded_shards):
  directory, _ = coded_shards
  first, again = next(_iterator(directory)), next(_iterator(directory))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  other = next(_iterator(directory, seed=1))
  assert not np.array_equal(first["frame_index"], other["frame_index"])
  # Hosts load consecutive blocks of the one global batch, whatever the host count.
  hosts = [next(_iterator(directory, batch_size=16, shard_index=i, shard_count=2)) for i in (0, 1)]
  for key in first:
    np.testing.assert_array_equal(np.concatenate([h[key] for h in hosts]), first[key])
  records = np.array([1, 4])
  assert set(next(_iterator(directory, records=records))["clip_index"]) <= {1, 4}
  iterator = _iterator(directory)
  next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(3)]
  restored = _iterator(directory)
  restored.set_state(state)
  for batch in expected:
    got = next(restored)
    for key in batch:
      np.testing.assert_array_equal(got[key], batch[key])


def test_stream_is_pinned(coded_shards):
  # Seed 0's pairs as the pipeline drew them before its Grain chain was shared with the
  # Diff2Lip pipeline (commit eea3c0d); a change here changes every expert training run.
  iterator = _iterator(coded_shards[0], batch_size=6)
  pinned = [([3, 2, 5, 4, 0, 1], [1, 2, 7, 13, 2, 7], [1, 2, 7, 13, 4, 7], [1, 1, 1, 1, 0, 1]),
            ([1, 4, 3, 0, 2, 5], [4, 11, 2, 3, 17, 2], [4, 10, 2, 3, 7, 22], [1, 0, 1, 1, 0, 0])]
  for clip_index, frame_index, mel_frame_index, label in pinned:
    batch = next(iterator)
    assert batch["clip_index"].tolist() == clip_index
    assert batch["frame_index"].tolist() == frame_index
    assert batch["mel_frame_index"].tolist() == mel_frame_index
    assert batch["label"].tolist() == label


def test_training_sources_write_synthetic_clips_once_and_hold_some_out(tmp_path, monkeypatch):
  data = syncnet_config.get_config().data
  data.update(dict(shards="", synthetic_clips=5, min_frames=10, max_frames=12,
                   num_eval_clips=2))
  data.pipeline.image_size = SIZE
  (train, train_records), (held, eval_records) = syncnet_data.training_sources(data, tmp_path, 3)
  assert train == held == str(tmp_path / "synthetic_shards")
  assert sorted(np.concatenate([train_records, eval_records])) == list(range(5))
  assert len(eval_records) == 2
  manifest = json.loads((tmp_path / "synthetic_shards" / shards.MANIFEST_FILE).read_text())
  assert len(manifest["shards"]) == 4  # one per clip, at most 4, as before the shared writer
  monkeypatch.setattr(synthetic, "generate_dataset", None)  # a second call writes nothing
  assert syncnet_data.training_sources(data, tmp_path, 3)[0][0] == train
  assert training_data.per_host_batch_size(6, "data.batch_size") == 6  # one process
  with pytest.raises(ValueError, match="data.batch_size=0 must be a positive multiple"):
    training_data.per_host_batch_size(0, "data.batch_size")


def test_unusable_clips_are_skipped_and_bad_settings_explained(tmp_path):
  # 6 frames with min_shift 2: starts 0 and 1 only, no pair; the 20-frame clip is fine.
  shards.write_shards([_coded_clip(0, 6), _coded_clip(1, 20)], tmp_path, num_shards=1)
  iterator = _iterator(tmp_path, _pipeline_config(min_shift=2), batch_size=8)
  batch = next(iterator)
  assert set(batch["clip_index"]) == {1} and iterator.skipped_records > 0
  with pytest.raises(ValueError, match="min_shift"):
    next(_iterator(tmp_path, _pipeline_config(min_shift=0)))
  with pytest.raises(ValueError, match="cannot hold out 2 of 2"):
    syncnet_data.split_records(2, 2)
  train, held_out = syncnet_data.split_records(10, 3, seed=5)
  assert len(held_out) == 3 and sorted(np.concatenate([train, held_out])) == list(range(10))
  np.testing.assert_array_equal(held_out, syncnet_data.split_records(10, 3, seed=5)[1])


def test_metrics_on_hand_made_embeddings():
  cos = np.array([0.9, 0.6, 0.4, 0.1, 0.7, 0.2], np.float32)
  labels = np.array([1, 1, 1, 0, 0, 0], np.float32)
  audio_emb = np.zeros((6, 4), np.float32)
  audio_emb[:, 0] = 2.0  # norms other than 1: cosine, not dot product
  face_emb = np.stack([cos, np.sqrt(1 - cos ** 2), np.zeros(6), np.zeros(6)], axis=1) * 3.0
  sums = train_syncnet.sync_metric_sums(jnp.asarray(audio_emb), jnp.asarray(face_emb),
                                        jnp.asarray(labels))
  halves = [train_syncnet.sync_metric_sums(jnp.asarray(audio_emb[s]), jnp.asarray(face_emb[s]),
                                           jnp.asarray(labels[s]))
            for s in (slice(0, 2), slice(2, 6))]
  metrics = train_syncnet.finalize_metrics(sums)
  # Predictions cos > 0.5: [1, 1, 0, 0, 1, 0] -> 4 of 6 right.
  assert metrics["accuracy"] == pytest.approx(4 / 6)
  want_loss = -np.mean(np.log([0.9, 0.6, 0.4]).tolist() + np.log([0.9, 0.3, 0.8]).tolist())
  assert metrics["loss"] == pytest.approx(want_loss, rel=1e-5)
  assert metrics["cos_in_sync"] == pytest.approx(np.mean([0.9, 0.6, 0.4]), rel=1e-5)
  assert metrics["cos_off_sync"] == pytest.approx(np.mean([0.1, 0.7, 0.2]), rel=1e-5)
  pooled = jax.tree.map(lambda a, b: a + b, *halves)
  for key, value in train_syncnet.finalize_metrics(pooled).items():
    assert value == pytest.approx(metrics[key], rel=1e-5), key
  empty = train_syncnet.finalize_metrics({**{k: 0.0 for k in sums}, "count": 1.0})
  assert np.isnan(empty["cos_in_sync"])


def _train_config(**optimizer):
  config = syncnet_config.get_config()
  config.optimizer.update(optimizer)
  return config


def _device_batch(batch: dict) -> dict:
  return jax.device_put({k: batch[k] for k in train_syncnet.DEVICE_KEYS}, jax.devices()[0])


def _new_state(config):
  # Committed to one device like restored checkpoints, so both share one compiled step.
  return jax.device_put(train_syncnet.create_train_state(config), jax.devices()[0])


@pytest.fixture(scope="module")
def fixed_batch(synthetic_shards):
  directory, _ = synthetic_shards
  iterator = _iterator(directory, _pipeline_config(image_size=128), batch_size=8)
  return directory, iterator, _device_batch(next(iterator))


def test_model_inputs_are_bgr_lower_halves(fixed_batch):
  _, _, batch = fixed_batch
  mel, face = train_syncnet.model_inputs(batch)
  assert mel.shape == (8, 80, 16, 1) and face.shape == (8, 48, 96, 15)
  frames = np.asarray(batch["frames"], np.float32) / 255.0
  resized = jax.image.resize(frames, (8, 5, 96, 96, 3), "linear", antialias=False)
  # Channel 3t + c is colour (B, G, R)[c] of frame t, rows 48..95 of the 96x96 frame.
  np.testing.assert_allclose(face[..., 3 * 2 + 0], resized[:, 2, 48:, :, 2], atol=1e-6)
  np.testing.assert_allclose(face[..., 3 * 4 + 2], resized[:, 4, 48:, :, 0], atol=1e-6)


def test_train_step_lowers_loss_and_updates_batch_stats(fixed_batch):
  _, _, batch = fixed_batch
  state = _new_state(_train_config())
  start_stats = state.batch_stats
  losses = []
  for _ in range(4):
    state, metrics = _TRAIN_STEP(state, batch)
    losses.append(float(metrics["loss_sum"] / metrics["count"]))
  assert int(state.step) == 4
  assert losses[-1] < losses[0] - 0.2, losses
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state.batch_stats, start_stats)
  assert min(jax.tree.leaves(moved)) > 0  # every BatchNorm updated its running statistics


def test_checkpoint_restore_resumes_with_identical_next_step(fixed_batch, tmp_path):
  directory, iterator, first = fixed_batch
  config = _train_config()
  state, _ = _TRAIN_STEP(_new_state(config), first)
  with checkpoints.open_manager(tmp_path / "checkpoints", create=True,
                                async_save=True) as manager:
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    checkpoints.save_syncnet_state(manager, 1, variables, {"step": state.step,
                                                           "opt_state": state.opt_state},
                                   iterator, config)
  next_batch = _device_batch(next(iterator))
  expected, _ = _TRAIN_STEP(state, next_batch)
  # Restore onto a state with other weights and a fresh iterator (same structure, same jit).
  fresh = _new_state(config)
  fresh = fresh.replace(params=jax.tree.map(lambda x: x + 1.0, fresh.params))
  restored_iterator = _iterator(directory, _pipeline_config(image_size=128), batch_size=8)
  with checkpoints.open_manager(tmp_path / "checkpoints") as manager:
    variables, opt = checkpoints.restore_syncnet_state(
        manager, {"params": fresh.params, "batch_stats": fresh.batch_stats},
        {"step": fresh.step, "opt_state": fresh.opt_state}, restored_iterator)
  restored = fresh.replace(step=opt["step"], params=variables["params"],
                           batch_stats=variables["batch_stats"], opt_state=opt["opt_state"])
  assert int(restored.step) == 1
  resumed_batch = _device_batch(next(restored_iterator))
  for key in resumed_batch:
    np.testing.assert_array_equal(resumed_batch[key], next_batch[key])
  actual, _ = _TRAIN_STEP(restored, resumed_batch)
  jax.tree.map(np.testing.assert_array_equal, (actual.params, actual.batch_stats, actual.opt_state),
               (expected.params, expected.batch_stats, expected.opt_state))


def test_torch_default_init_matches_pytorch_layers():
  variables = syncnet_expert.torch_default_init(3)
  shapes = jax.eval_shape(syncnet.init_syncnet_variables, jax.random.PRNGKey(0))
  assert jax.tree.structure(variables) == jax.tree.structure(shapes)
  kernel = variables["params"]["face_encoder_1"]["conv"]["kernel"]  # torch Conv2d(32, 64, 5)
  bound = 1 / np.sqrt(5 * 5 * 32)
  assert kernel.shape == (5, 5, 32, 64) and np.abs(kernel).max() <= bound
  assert np.abs(kernel).max() > 0.99 * bound and abs(kernel.std() - bound / np.sqrt(3)) < 1e-3
  assert np.all(variables["batch_stats"]["audio_encoder_3"]["bn"]["var"] == 1)
  again = syncnet_expert.torch_default_init(3)
  jax.tree.map(np.testing.assert_array_equal, variables, again)


try:
  import torch
except ImportError:
  torch = None


def test_expert_export_and_load_reproduce_reference_embeddings(tmp_path):
  state_dict = reference.deterministic_state_dict(reference.load_manifest("manifest_syncnet.json"))
  variables = syncnet_convert.params_from_torch(state_dict)
  if torch is not None:  # the Wav2Lip file layout: {"state_dict": ...}
    path = tmp_path / "lipsync_expert.pth"
    torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}},
               path)
    jax.tree.map(np.testing.assert_array_equal, checkpoints.load_syncnet_expert(path),
                 variables)
  workdir = tmp_path / "run"
  checkpoints.export_expert(workdir / "expert", variables, syncnet_config.get_config(), 7)
  checkpoints.export_expert(workdir / "expert", variables, syncnet_config.get_config(), 7)
  for source in (workdir, workdir / "expert"):
    loaded = checkpoints.load_syncnet_expert(source)
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)
  golden = reference.load_npz("syncnet_golden.npz")
  audio_emb, face_emb = jax.jit(syncnet.SyncNetColor().apply)(
      jax.lax.stop_gradient(loaded), reference.nchw_to_nhwc(golden["mel"]),
      reference.nchw_to_nhwc(golden["face"]))
  np.testing.assert_allclose(audio_emb, golden["audio_emb"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(face_emb, golden["face_emb"], atol=1e-4, rtol=0)


def test_load_expert_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    checkpoints.load_syncnet_expert(tmp_path / "missing")
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(checkpoints.CheckpointError, match="not a PyTorch checkpoint"):
    checkpoints.load_syncnet_expert(tmp_path / "notes.txt")
  (tmp_path / "empty").mkdir()
  with pytest.raises(checkpoints.CheckpointError, match="no complete checkpoint step"):
    checkpoints.load_syncnet_expert(tmp_path / "empty")


def test_trainer_rejects_bad_settings_before_any_work(tmp_path):
  cases = [({"data.pipeline.num_epochs": 1}, "leave data.pipeline.num_epochs unset"),
           ({"train.batch_size": 8 * jax.device_count() + 1}, "multiple of the"),
           ({"train.eval_batch_size": 3}, "multiple of the"),
           ({"data.synthetic_clips": 0}, "data.synthetic_clips is 0")]
  for overrides, message in cases:
    config = syncnet_config.get_config()
    for key, value in overrides.items():
      *sections, name = key.split(".")
      section = config
      for part in sections:
        section = section[part]
      section[name] = value
    with pytest.raises(ValueError, match=message):
      train_syncnet.train_and_evaluate(config, tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists()


def _run_cli(*args: str, devices: int = 2) -> subprocess.CompletedProcess:
  # Two CPU devices: the batch is sharded across a mesh, while the per-device work of Orbax
  # (one slice per device and array, compiled once) stays small.
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  return subprocess.run([sys.executable, "-m", "diff2lip_jax.train_syncnet", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300, check=False)


def test_cli_help_explains_flags_and_fields():
  result = _run_cli("--help")
  assert result.returncode == 0, result.stderr
  for text in ("--config FILE", "--workdir DIR", "--config.<field>=<value>", "train_syncnet",
               "--distributed", "train.num_steps = 300", "optimizer.lr = 0.0001",
               "data.pipeline.min_shift = 1"):
    assert text in result.stdout, text


def test_cli_old_field_names_get_a_pointer_to_the_new_ones(tmp_path):
  result = _run_cli("--config", "configs/syncnet.py", "--workdir", str(tmp_path / "run"),
                    "--config.num_steps=2")
  assert result.returncode == 2
  assert result.stderr.strip() == ("error: unknown config field 'num_steps' in configs/syncnet.py; "
                                   "did you mean 'train.num_steps'? (--help lists every field)")
  assert not (tmp_path / "run").exists()


def _event_tags(directory: pathlib.Path) -> dict[str, list[float]]:
  from tensorboardX.proto import event_pb2
  tags: dict[str, list[float]] = {}
  for path in directory.glob("events.out.tfevents.*"):
    for record in read_tfrecord_file(path):
      for value in event_pb2.Event.FromString(record).summary.value:
        tags.setdefault(value.tag, []).append(value.simple_value)
  return tags


@pytest.mark.slow  # ~35 s: two runs of the CLI, each compiling its steps
def test_cli_trains_checkpoints_logs_exports_and_resumes(tmp_path):
  args = ["--config", "configs/syncnet.py", "--workdir", str(tmp_path),
          "--config.train.num_steps=2", "--config.train.log_every=1",
          "--config.train.eval_every=2", "--config.train.checkpoint_every=1",
          "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
          "--config.train.num_eval_batches=1", "--config.train.async_checkpointing=true",
          "--config.data.synthetic_clips=3", "--config.data.min_frames=24",
          "--config.data.max_frames=28", "--config.data.num_eval_clips=1"]
  result = _run_cli(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 2/2 (100%) loss " in result.stdout and "eval at step 2: loss" in result.stdout
  assert "trained 2 steps (2/2)" in result.stdout and "--config.syncnet.checkpoint=" in result.stdout
  assert "orbax" not in (result.stdout + result.stderr).lower()  # no library INFO lines
  final = json.loads((tmp_path / "final_eval.json").read_text())
  assert 0.0 <= final["accuracy"] <= 1.0 and final["loss"] > 0
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
      "1", "2"]
  tags = _event_tags(tmp_path / "tensorboard")
  assert len(tags["train/loss"]) == 2 and len(tags["eval/accuracy"]) == 1
  assert tags["eval/accuracy"][0] == pytest.approx(final["accuracy"])
  expert = checkpoints.load_syncnet_expert(tmp_path)
  trained = checkpoints.load_syncnet_expert(tmp_path / "checkpoints")
  jax.tree.map(np.testing.assert_array_equal, expert, trained)
  # Started again, the finished run restores step 2, evaluates the same held-out pairs and
  # leaves its checkpoints and expert as they are.
  again = _run_cli(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "resumed from" in again.stderr and "at step 2" in again.stderr
  assert json.loads((tmp_path / "final_eval.json").read_text()) == pytest.approx(final)
  assert not (tmp_path / "checkpoints" / "3").exists()
