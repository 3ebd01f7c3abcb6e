"""Record format, TFRecord framing/CRC, random access, ArrayRecord, TFDS readability."""
from __future__ import annotations

import os
import pathlib
import struct

import numpy as np
import pytest

from data_pipelines import record_io, shards
from data_pipelines.record_io import CorruptRecordError

GRAIN_TFRECORD = (pathlib.Path(__import__("grain").__file__).parent
                  / "_src/python/testdata/morris_sequence_first_5.tfrecord")


def _clip(clip_id: str, num_frames: int, size: int = 32, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  # Smooth frames whose brightness encodes the frame index: JPEG keeps them within a few levels.
  frames = np.stack([np.full((size, size, 3), 6 * k + 20, np.uint8) for k in range(num_frames)])
  frames[..., 0] = np.linspace(40, 200, size).astype(np.uint8)[None, None, :]  # smooth gradient
  mel = rng.uniform(-4, 4, (int(num_frames * 3.2) + 1, 80)).astype(np.float32)
  boxes = rng.uniform(0, 100, (num_frames, 4)).astype(np.float32)
  truth = {"mouth_open": rng.uniform(0, 1, num_frames).astype(np.float32),
           "mouth_box": rng.uniform(0, 9, (num_frames, 4)).astype(np.float32)}
  return {"clip_id": clip_id, "frames": frames, "mel": mel, "fps": 25.0, "boxes": boxes,
          "source": f"/videos/{clip_id}.mp4", "ground_truth": truth}


def test_masked_crc32c_matches_the_standard_check_value_and_tensorflow_files():
  # CRC-32C("123456789") = 0xE3069283 (the catalogued check value); masking per TFRecord spec.
  crc = 0xE3069283
  assert record_io.masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
  if not GRAIN_TFRECORD.exists():
    pytest.skip("grain's TensorFlow-written test file is not installed")
  source = record_io.TFRecordDataSource([GRAIN_TFRECORD])  # written by TensorFlow: CRCs must pass
  assert [source[i] for i in range(len(source))] == [b"1", b"1 1", b"2 1", b"1 2 1 1",
                                                      b"1 1 1 2 2 1"]


def test_tfrecord_writer_is_read_back_by_an_independent_reader(tmp_path):
  import grain
  records = [os.urandom(n) for n in (0, 1, 1000, 70000)]
  with record_io.TFRecordWriter(tmp_path / "a.tfrecord") as writer:
    for record in records:
      writer.write(record)
  assert list(grain.experimental.TFRecordIterDataset(str(tmp_path / "a.tfrecord"))) == records
  source = record_io.TFRecordDataSource([tmp_path / "a.tfrecord", tmp_path / "a.tfrecord"])
  assert len(source) == 8 and source[5] == records[1] and source[3] == records[3]
  with pytest.raises(IndexError):
    source[8]


def _write(path, records):
  with record_io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


def test_corrupt_data_bytes_are_detected_per_record(tmp_path):
  path = tmp_path / "c.tfrecord"
  records = [bytes([i]) * 100 for i in range(4)]
  _write(path, records)
  data = bytearray(path.read_bytes())
  data[(12 + 100 + 4) + 12 + 50] ^= 0x01  # one bit inside record 1's payload
  path.write_bytes(bytes(data))
  source = record_io.TFRecordDataSource([path])
  assert len(source) == 4
  with pytest.raises(CorruptRecordError, match="data CRC"):
    source[1]
  assert source[0] == records[0] and source[2] == records[2]
  assert record_io.TFRecordDataSource([path], verify_checksums=False)[1] != records[1]


def test_corrupt_header_and_truncation_end_the_index_with_a_message(tmp_path):
  path = tmp_path / "h.tfrecord"
  _write(path, [b"x" * 10] * 3)
  data = bytearray(path.read_bytes())
  data[2 * (12 + 10 + 4)] ^= 0xFF  # length field of record 2
  path.write_bytes(bytes(data))
  offsets, lengths, problem = record_io.index_tfrecord_file(path)
  assert len(offsets) == 2 and "fails its CRC" in problem and "record 2" in problem
  _write(path, [b"x" * 10] * 3)
  path.write_bytes(path.read_bytes()[:-5])
  source = record_io.TFRecordDataSource([path])
  assert len(source) == 2 and "truncated" in source.index_problems[0]


@pytest.mark.parametrize("format", ["tfrecord", "arrayrecord"])
def test_write_shards_round_trip(tmp_path, format):
  clips = [_clip(f"spk/{i}", 12 + i, seed=i) for i in range(5)]
  paths = shards.write_shards(clips, tmp_path, num_shards=2, format=format)
  assert [os.path.basename(p) for p in paths] == [
      f"clips-00000-of-00002{shards.FORMATS[format]}", f"clips-00001-of-00002{shards.FORMATS[format]}"]
  assert sorted(os.listdir(tmp_path)) == sorted([shards.FEATURES_FILE] + [os.path.basename(p)
                                                                          for p in paths])
  source = shards.open_data_source(shards.find_shard_files(tmp_path))
  parsed = {c.clip_id: c for c in (shards.parse_clip(source[i]) for i in range(len(source)))}
  assert sorted(parsed) == sorted(c["clip_id"] for c in clips)
  for clip in clips:
    got = parsed[clip["clip_id"]]
    assert got.num_frames == len(clip["frames"]) and got.fps == 25.0
    np.testing.assert_array_equal(got.mel, clip["mel"])
    np.testing.assert_array_equal(got.boxes, clip["boxes"])
    for name, values in clip["ground_truth"].items():
      np.testing.assert_array_equal(got.ground_truth[name], values)
    frames = got.frames(0, got.num_frames, image_size=32)
    assert frames.dtype == np.uint8 and frames.shape == clip["frames"].shape
    assert np.abs(frames.astype(int) - clip["frames"]).max() <= 6  # JPEG q95, 4:2:0 chroma
    brightness = frames[..., 1].mean(axis=(1, 2))
    np.testing.assert_allclose(brightness, 6 * np.arange(got.num_frames) + 20, atol=2)


def test_tfds_features_decode_the_records_without_tensorflow(tmp_path):
  import tensorflow_datasets as tfds
  clip = _clip("a", 10)
  shards.write_shards([clip], tmp_path, num_shards=1)
  features = tfds.features.FeatureConnector.from_config(str(tmp_path))
  record = shards.open_data_source(shards.find_shard_files(tmp_path))[0]
  try:
    decoded = features.deserialize_example_np(record)
  except ImportError as error:  # TFDS decodes images with OpenCV or Pillow; neither is required
    pytest.skip(f"TFDS image decoding needs OpenCV or Pillow: {error}")
  np.testing.assert_array_equal(decoded["mel"], clip["mel"])
  np.testing.assert_array_equal(decoded["boxes"], clip["boxes"])
  np.testing.assert_array_equal(decoded["ground_truth"]["mouth_box"],
                                clip["ground_truth"]["mouth_box"])
  ours = shards.parse_clip(record).frames(0, 10)
  np.testing.assert_array_equal(np.asarray(decoded["frames"]), ours)


def test_synthetic_clips_are_written_directly(tmp_path):
  from data_pipelines import synthetic
  clip = synthetic.generate_clip(seed=3, num_frames=12, image_size=64)
  shards.write_shards([clip], tmp_path, num_shards=1, format="arrayrecord")
  parsed = shards.parse_clip(shards.open_data_source(shards.find_shard_files(tmp_path))[0])
  assert parsed.clip_id == "synthetic-3"
  np.testing.assert_array_equal(parsed.ground_truth["mouth_opening"], clip.mouth_opening)
  np.testing.assert_array_equal(parsed.ground_truth["face_box"], clip.face_box)
  np.testing.assert_array_equal(parsed.mel, clip.mel)


def test_corrupt_records_raise_corrupt_record_error(tmp_path):
  with pytest.raises(CorruptRecordError):
    shards.parse_clip(b"\x0a\xff\xff garbage")
  with pytest.raises(CorruptRecordError):
    shards.decode_jpeg(b"\xff\xd8\xff\xe0 not a jpeg")
  # ArrayRecord: a flipped byte inside a chunk is caught by riegeli's hashes.
  shards.write_shards([_clip("a", 10), _clip("b", 10)], tmp_path, 1, format="arrayrecord")
  (path,) = shards.find_shard_files(tmp_path)
  data = bytearray(pathlib.Path(path).read_bytes())
  data[200] ^= 0x10
  pathlib.Path(path).write_bytes(bytes(data))
  source = shards.open_data_source([path])
  with pytest.raises(CorruptRecordError):
    shards.parse_clip(source[0])


def test_shard_writer_is_atomic_and_temp_files_are_ignored(tmp_path):
  writer = shards.ShardWriter(tmp_path / "s-00000-of-00001.tfrecord")
  writer.write(b"abc")
  assert not (tmp_path / "s-00000-of-00001.tfrecord").exists()
  with pytest.raises(FileNotFoundError, match="prepare"):
    shards.find_shard_files(tmp_path)  # only the temp file exists
  writer.close()
  assert shards.find_shard_files(tmp_path) == [str(tmp_path / "s-00000-of-00001.tfrecord")]
  assert shards.find_shard_files(str(tmp_path / "*.tfrecord")) == shards.find_shard_files(tmp_path)



def _manifest_dir(directory, clips, num_shards):
  """Shards plus a ``manifest.json`` in the format ``prepare`` writes (its own Manifest class)."""
  from data_pipelines import prepare
  paths = shards.write_shards(clips, directory, num_shards)
  manifest = prepare.Manifest(str(directory), {"image_size": 32})
  for index, path in enumerate(paths):
    manifest.add_shard(os.path.basename(path), [c["clip_id"] for c in clips[index::num_shards]])
  manifest.save()
  return paths


def test_a_manifest_decides_which_shards_are_read(tmp_path, caplog):
  import logging
  import shutil
  listed = _manifest_dir(tmp_path, [_clip("a", 10), _clip("b", 10, seed=1)], num_shards=2)
  # A crash between a shard's rename and the manifest update leaves a whole shard whose clips a
  # resumed run writes again: reading it too would count those clips twice.
  shutil.copy(listed[0], tmp_path / "clips-r001-00000.tfrecord")
  with caplog.at_level(logging.WARNING):
    assert shards.find_shard_files(tmp_path) == listed
  assert "clips-r001-00000.tfrecord" in caplog.text and "manifest.json" in caplog.text
  assert len(shards.open_data_source(shards.find_shard_files(tmp_path))) == 2
  assert len(shards.find_shard_files(str(tmp_path / "*.tfrecord"))) == 3  # a glob is explicit
  os.remove(listed[1])
  with pytest.raises(FileNotFoundError, match="clips-00001-of-00002.tfrecord.*prepare"):
    shards.find_shard_files(tmp_path)
  (tmp_path / shards.MANIFEST_FILE).write_text("{not json")
  with pytest.raises(ValueError, match="not a shard manifest"):
    shards.find_shard_files(tmp_path)

def test_invalid_clips_are_rejected_with_specific_messages():
  frames = np.zeros((6, 16, 16, 3), np.uint8)
  mel = np.zeros((20, 80), np.float32)
  with pytest.raises(ValueError, match="uint8"):
    shards.make_clip_record("x", frames.astype(np.float32), mel, 25)
  with pytest.raises(ValueError, match=r"mel must be \[M, 80\]"):
    shards.make_clip_record("x", frames, mel[:, :40], 25)
  with pytest.raises(ValueError, match="ground truth 'g'"):
    shards.make_clip_record("x", frames, mel, 25, ground_truth={"g": np.zeros(5)})
  with pytest.raises(ValueError, match="neither 'mel' nor 'wav'"):
    shards.clip_record_from_mapping({"frames": frames})
  record = shards.make_clip_record("x", frames, mel, 25, ground_truth={"g": np.zeros(6)})
  serializer = shards.ClipSerializer(16)
  with pytest.raises(ValueError, match="same"):
    serializer.serialize(record)
  assert struct.unpack("<f", struct.pack("<f", record.fps))[0] == 25.0
