"""Grain training pipeline: layout, alignment, determinism, checkpoints, host sharding, bad records."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from configs import released
from data_pipelines import audio, input_pipeline, prepare, shards

SIZE = 32
WINDOW = 5


def _frames(num_frames: int) -> np.ndarray:
  # Frame k has brightness 10 + 3k: the index is recoverable after JPEG (error < 1 level).
  return np.stack([np.full((SIZE, SIZE, 3), 10 + 3 * k, np.uint8) for k in range(num_frames)])


def _clip(index: int, num_frames: int) -> dict:
  rng = np.random.default_rng(index)
  mel = rng.uniform(-4, 4, (int(num_frames * 80 / 25) + 1, 80)).astype(np.float32)
  return {"clip_id": f"clip{index}", "frames": _frames(num_frames), "mel": mel,
          "ground_truth": {"mouth_open": 1000.0 * index + np.arange(num_frames)}}


def _config(**overrides):
  config = released.get_config().data.pipeline  # the pipeline settings a training run uses
  config.update({"image_size": SIZE, "host_prefetch": 0, **overrides})
  return config


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("shards")
  clips = [_clip(i, 14 + 3 * i) for i in range(8)]
  shards.write_shards(clips, out, num_shards=3)
  return out, {c["clip_id"]: c for c in clips}


def _iterator(shard_dir, config=None, **kwargs):
  kwargs.setdefault("seed", 0)
  kwargs.setdefault("batch_size", 4)
  kwargs.setdefault("shard_index", 0)
  kwargs.setdefault("shard_count", 1)
  return input_pipeline.create_train_iterator(config or _config(), shard_dir, **kwargs)


def _frame_indices(images: np.ndarray) -> np.ndarray:
  pixels = (images + 1.0) * 127.5
  return np.rint((pixels.mean(axis=(-3, -2, -1)) - 10) / 3).astype(int)


def test_batch_layout_values_and_alignment(shard_dir):
  directory, clips = shard_dir
  source = shards.open_data_source(shards.find_shard_files(directory))
  ids = [shards.parse_clip(source[i]).clip_id for i in range(len(source))]
  iterator = _iterator(directory, batch_size=6)
  for _ in range(3):
    batch = next(iterator)
    expected = {"image": ((6, WINDOW, SIZE, SIZE, 3), np.float32),
                "ref_img": ((6, WINDOW, SIZE, SIZE, 3), np.float32),
                "indiv_mels": ((6, WINDOW, 80, 16), np.float32), "mel": ((6, 80, 16), np.float32),
                "clip_index": ((6,), np.int32), "frame_index": ((6,), np.int32),
                "ref_frame_index": ((6,), np.int32), "skipped_records": ((6,), np.int32),
                "mouth_open": ((6, WINDOW), np.float32)}
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    for b in range(6):
      clip = clips[ids[batch["clip_index"][b]]]
      start, ref = int(batch["frame_index"][b]), int(batch["ref_frame_index"][b])
      np.testing.assert_array_equal(_frame_indices(batch["image"][b]), start + np.arange(WINDOW))
      np.testing.assert_array_equal(_frame_indices(batch["ref_img"][b]), ref + np.arange(WINDOW))
      assert abs(ref - start) >= WINDOW and ref + WINDOW <= len(clip["frames"])
      # Audio windows: the audio front end's own indexing for these frames.
      windows = audio.frame_mel_windows(clip["mel"], len(clip["frames"]))
      np.testing.assert_array_equal(batch["indiv_mels"][b], windows[start:start + WINDOW])
      np.testing.assert_array_equal(batch["mel"][b], audio.sync_mel_window(clip["mel"], start))
      np.testing.assert_array_equal(batch["mouth_open"][b],
                                    clip["ground_truth"]["mouth_open"][start:start + WINDOW])
  assert iterator.skipped_records == 0


def test_stream_is_pinned(shard_dir):
  # The record order and window draws of seed 0 as the pipeline produced them before the Grain
  # chain was shared with SyncNet (commit eea3c0d); a change here changes every training run.
  iterator = _iterator(shard_dir[0])
  pinned = [([2, 4, 3, 6], [10, 6, 4, 3], [1, 1, 9, 10]),
            ([5, 0, 1, 7], [10, 6, 9, 6], [21, 0, 2, 24]),
            ([1, 3, 7, 6], [12, 7, 5, 2], [2, 1, 24, 15])]
  for clip_index, frame_index, ref_frame_index in pinned:
    batch = next(iterator)
    assert batch["clip_index"].tolist() == clip_index
    assert batch["frame_index"].tolist() == frame_index
    assert batch["ref_frame_index"].tolist() == ref_frame_index


def test_window_arithmetic():
  # 10 frames with full audio: the only target/reference pairs are starts 0 and 5.
  assert input_pipeline.clip_is_trainable(10, int(10 * 3.2) + 1, 25.0)
  assert not input_pipeline.clip_is_trainable(9, 200, 25.0)
  # Audio of only 0.2 s: frame 4's window (rows 9..25) needs 25 rows.
  assert input_pipeline.num_target_starts(30, 25, 25.0, 5) == 1
  assert input_pipeline.num_target_starts(30, 24, 25.0, 5) == 0
  mel = np.zeros((97, 80), np.float32)
  assert input_pipeline.num_target_starts(30, 97, 25.0, 5) == len(
      audio.frame_mel_windows(mel, 30)) - (WINDOW - 1)


def test_same_seed_same_batches_other_seed_other_batches(shard_dir):
  directory, _ = shard_dir
  first = [next(_iterator(directory)) for _ in range(1)][0]
  again = next(_iterator(directory))
  other = next(_iterator(directory, seed=1))
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not all(np.array_equal(first[k], other[k]) for k in ("clip_index", "frame_index"))


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("worker_count", [0, 2])
def test_restored_iterator_continues_like_an_uninterrupted_run(shard_dir, worker_count):
  directory, _ = shard_dir
  config = _config(worker_count=worker_count, host_prefetch=0 if worker_count else 2)
  iterator = _iterator(directory, config)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = [next(iterator) for _ in range(4)]  # spans an epoch boundary (8 records, B=4)
  iterator.close()
  restored = _iterator(directory, config)
  restored.set_state(state)
  for batch in expected:
    _assert_batches_equal(next(restored), batch)
  restored.close()


def test_orbax_checkpoint_round_trip(shard_dir, tmp_path):
  import grain
  import orbax.checkpoint as ocp
  directory, _ = shard_dir
  iterator = _iterator(directory)
  next(iterator)
  options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  with ocp.CheckpointManager(tmp_path / "ckpt", options=options,
                             item_handlers={"data": grain.checkpoint.CheckpointHandler()}) as manager:
    manager.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
  expected = next(iterator)
  restored = _iterator(directory)
  with ocp.CheckpointManager(tmp_path / "ckpt",
                             item_handlers={"data": grain.checkpoint.CheckpointHandler()}) as manager:
    manager.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  _assert_batches_equal(next(restored), expected)
  assert restored.batches_produced == 2


def test_hosts_read_disjoint_records_covering_the_dataset(shard_dir):
  directory, _ = shard_dir
  config = _config(num_epochs=1, drop_remainder=False, shuffle=True)
  seen = []
  for host in range(3):
    iterator = _iterator(directory, config, batch_size=1, shard_index=host, shard_count=3)
    seen.append([int(b["clip_index"][0]) for b in iterator])
  assert [len(s) for s in seen] == [3, 3, 2]
  assert all(len(set(s)) == len(s) for s in seen)  # one epoch: each record once
  assert sorted(sum(seen, [])) == list(range(8))
  with pytest.raises(ValueError, match="shard_index"):
    _iterator(directory, shard_index=3, shard_count=3)


def test_corrupt_and_too_short_records_are_skipped_and_counted(tmp_path):
  clips = [_clip(i, 20) for i in range(6)] + [_clip(6, 7)]  # clip6: too short for two windows
  (path,) = shards.write_shards(clips, tmp_path, num_shards=1)
  source = shards.open_data_source([path])
  corrupt_offset = int(source.sources[0]._offsets[2]) + 12 + 40  # inside record 2's payload
  data = bytearray(pathlib.Path(path).read_bytes())
  data[corrupt_offset] ^= 0x55
  pathlib.Path(path).write_bytes(bytes(data))
  config = _config(num_epochs=3, drop_remainder=False)
  iterator = _iterator(tmp_path, config, batch_size=7)
  batches = list(iterator)
  clip_indices = np.concatenate([b["clip_index"] for b in batches])
  skipped = sum(int(b["skipped_records"].sum()) for b in batches)
  assert len(clip_indices) == 21  # every element was still produced
  assert 2 not in clip_indices and 6 not in clip_indices
  assert skipped >= 6 and iterator.skipped_records == skipped  # 3 epochs x 2 bad records
  assert iterator.get_state()["skipped_records"] == skipped


def test_all_records_unusable_is_a_clear_error(tmp_path):
  shards.write_shards([_clip(0, 7), _clip(1, 8)], tmp_path, num_shards=1)
  with pytest.raises(Exception, match="in a row were corrupt or unusable"):
    next(_iterator(tmp_path, _config(max_skips_per_example=3)))


def test_image_size_mismatch_and_uint8_mode(shard_dir):
  directory, _ = shard_dir
  with pytest.raises(Exception, match="image_size"):
    next(_iterator(directory, _config(image_size=64)))
  raw = next(_iterator(directory, _config(image_dtype="uint8")))
  converted = next(_iterator(directory))
  assert raw["image"].dtype == np.uint8
  np.testing.assert_allclose(input_pipeline.to_model_range(raw["image"]), converted["image"],
                             rtol=0, atol=1e-6)
  import jax.numpy as jnp
  np.testing.assert_allclose(np.asarray(input_pipeline.to_model_range(jnp.asarray(raw["ref_img"]))),
                             converted["ref_img"], atol=1e-6)


def test_default_host_shard_comes_from_jax_and_epochs_reshuffle(shard_dir):
  import jax
  directory, _ = shard_dir
  config = _config(num_epochs=2, drop_remainder=False)
  indices = [int(b["clip_index"][0]) for b in input_pipeline.create_train_iterator(
      config, directory, seed=3, batch_size=1)]
  assert jax.process_count() == 1 and len(indices) == 16
  first, second = indices[:8], indices[8:]
  assert sorted(first) == sorted(second) == list(range(8)) and first != second


def test_only_the_shards_a_manifest_lists_are_read(tmp_path):
  clips = [_clip(i, 20) for i in range(3)]
  paths = shards.write_shards(clips, tmp_path, num_shards=3)
  manifest = prepare.Manifest(str(tmp_path), {"image_size": SIZE})
  for path, clip in zip(paths[:2], clips):
    manifest.add_shard(pathlib.Path(path).name, [clip["clip_id"]])
  manifest.save()  # shard 2 is an orphan: renamed into place, then the run died
  config = _config(num_epochs=1, drop_remainder=False)
  source = shards.open_data_source(shards.find_shard_files(tmp_path))
  ids = {shards.parse_clip(source[i]).clip_id for i in range(len(source))}
  indices = [int(i) for b in _iterator(tmp_path, config, batch_size=1) for i in b["clip_index"]]
  assert sorted(indices) == [0, 1] and ids == {"clip0", "clip1"}


def test_an_orphan_shard_outside_the_manifest_is_never_trained_on(tmp_path):
  """A shard renamed into place but never entered in manifest.json (a crash in between) holds
  clips a resumed run writes again; the training pipeline must read only the listed shards."""
  listed = [_clip(i, 14) for i in range(2)]
  paths = shards.write_shards(listed, tmp_path, num_shards=1)
  manifest = prepare.Manifest(str(tmp_path), {"image_size": SIZE})
  manifest.add_shard(pathlib.Path(paths[0]).name, [c["clip_id"] for c in listed])
  manifest.save()
  orphan_dir = tmp_path / "orphan"
  orphan = shards.write_shards([_clip(7, 14)], orphan_dir, num_shards=1)[0]
  pathlib.Path(orphan).rename(tmp_path / "clips-r001-00000.tfrecord")
  iterator = _iterator(tmp_path, batch_size=4)
  seen = set()
  for _ in range(8):  # 32 windows drawn from 2 clips: every listed clip shows up
    batch = next(iterator)
    seen.update((batch["mouth_open"][:, 0] // 1000).astype(int).tolist())
  assert seen == {0, 1}  # clip 7 (mouth_open 7000 + k) lives only in the orphan shard
  # The same directory given as a glob names the orphan explicitly, so it is read.
  assert len(shards.find_shard_files(str(tmp_path / "*.tfrecord"))) == 2
