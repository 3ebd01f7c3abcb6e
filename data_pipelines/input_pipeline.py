"""Grain training pipeline: clip shards -> Diff2Lip training batches.

Per example (one clip drawn by a seeded shuffle of this host's records; fresh order each epoch):

* a target window of ``num_frames`` consecutive frames starting at ``j``, uniform over the starts
  whose per-frame mel windows all fit inside the spectrogram;
* a reference window of ``num_frames`` frames from the same clip starting at ``r`` with
  ``|r - j| >= min_ref_distance`` (default ``num_frames``: the windows do not overlap), uniform
  over the allowed starts (Wav2Lip's "wrong window", here never overlapping the target);
* ``indiv_mels``: for target frame ``k`` the window at frame ``s = max(k - 1, 0)``, mel rows
  ``int(80 * (s / fps)) : + 16`` transposed to [80, 16] (``audio.frame_mel_windows`` indexing);
* ``mel``: the sync window starting at the first target frame, rows ``int(80 * (j / fps)) : + 16``
  (Wav2Lip ``crop_audio_window``);
* images: uint8 -> float32 ``x / 127.5 - 1`` in [-1, 1] (the model's range).

Batch (dict of NumPy arrays, NHWC)::

  image [B, F, S, S, 3] f32   ref_img [B, F, S, S, 3] f32   indiv_mels [B, F, 80, 16] f32
  mel [B, 80, 16] f32         clip_index [B] i32 (record index in the shard list)
  frame_index [B] i32 (j)     ref_frame_index [B] i32 (r)   skipped_records [B] i32
  <ground truth> [B, F] or [B, F, D] f32 (e.g. ``mouth_open``; NaN for a clip without it)

Randomness comes only from ``seed``: the clip order is a permutation drawn per epoch from
(seed, epoch) and each example's choices use the generator Grain derives from (seed, element
index), so a run is reproducible
and a restored iterator continues exactly where the saved one was. With ``worker_count > 0``
each worker batches its own slice of the example stream, so the batches differ from
``worker_count=0`` (same examples, other grouping); keep ``worker_count`` fixed when restoring.
Batch arrays may be ``SharedMemoryArray`` (an ``np.ndarray`` subclass) when workers are used.

Hosts: records are split ``records[shard_index::shard_count]`` (default
``jax.process_index()/process_count()``), so hosts read disjoint clips.

Corrupt records (CRC mismatch, unparsable Example, undecodable JPEG) and clips too short for
the windows are skipped: the example is drawn from another record of this host, chosen by the
same generator (so still deterministic), and ``skipped_records`` counts the records skipped for
it. :class:`TrainIterator` sums that into ``skipped_records`` (saved with its state); a warning
names each skipped record. More than ``max_skips_per_example`` in a row is an error.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import grain
import ml_collections
import numpy as np

from data_pipelines import shards
from data_pipelines.audio import MEL_WINDOW_STEPS, mel_start_row
from data_pipelines.record_io import CorruptRecordError

BATCH_KEYS = ("image", "ref_img", "indiv_mels", "mel", "clip_index", "frame_index",
              "ref_frame_index", "skipped_records")


def num_target_starts(num_frames: int, mel_rows: int, fps: float, window: int) -> int:
  """How many target starts ``j = 0 .. n-1`` have every per-frame mel window inside the clip."""
  if num_frames < window:
    return 0
  starts = np.arange(num_frames - window + 1)
  last_context = np.maximum(starts + window - 2, 0)
  fits = mel_start_row(last_context, fps) + MEL_WINDOW_STEPS <= mel_rows
  return int(np.count_nonzero(fits))  # monotone: the fitting starts are a prefix


def _ref_choices(starts: np.ndarray, num_frames: int, window: int, distance: int) -> np.ndarray:
  """Number of reference starts in [0, num_frames - window] at least ``distance`` from each start."""
  last = num_frames - window
  before = np.maximum(starts - distance + 1, 0)
  after = np.maximum(last - (starts + distance) + 1, 0)
  return before + after


def clip_is_trainable(num_frames: int, mel_rows: int, fps: float, window: int = 5,
                      min_ref_distance: int | None = None) -> bool:
  """Whether a clip has a target window with audio and a reference window away from it."""
  distance = window if min_ref_distance is None else min_ref_distance
  count = num_target_starts(num_frames, mel_rows, fps, window)
  return bool(count and _ref_choices(np.arange(count), num_frames, window, distance).any())


class EpochOrder:
  """``(position, _) -> record``: a fresh seeded permutation of the records every epoch.

  Grain's ``shuffle`` computes a bijection per element (~0.4 ms each here, a fifth of the cost of
  an example); this draws each epoch's permutation once (NumPy, seed and epoch) and caches it.
  """

  def __init__(self, records: np.ndarray, seed: int, shuffle: bool = True):
    self.records = np.asarray(records, np.int64)
    self.seed = int(seed)
    self.shuffle = shuffle
    self._cache: dict[int, np.ndarray] = {}

  def order(self, epoch: int) -> np.ndarray:
    """Record indices in the order epoch ``epoch`` visits them."""
    if not self.shuffle:
      return self.records
    if epoch not in self._cache:
      if len(self._cache) >= 2:
        self._cache.pop(min(self._cache))
      rng = np.random.default_rng([self.seed, epoch])
      self._cache[epoch] = self.records[rng.permutation(len(self.records))]
    return self._cache[epoch]

  def __call__(self, position: int, _) -> int:
    epoch, offset = divmod(int(position), len(self.records))
    return int(self.order(epoch)[offset])

  def __getstate__(self):
    return {**self.__dict__, "_cache": {}}


class UnusableClipError(ValueError):
  """A clip too short for the target window, its audio, or a separate reference window."""


class SkippingRecordSampler:
  """``(record_index, rng) -> example`` that replaces corrupt or unusable records.

  Subclasses implement ``example(index, parsed_clip, rng)``; a record that fails is replaced
  by another record of this host drawn with the same generator, so the stream stays
  deterministic.
  """

  def __init__(self, source, local_records: np.ndarray, image_size: int, max_skips: int,
               ground_truth_shapes: dict[str, tuple]):
    self.source = source
    self.local_records = np.asarray(local_records, np.int64)
    self.image_size = image_size
    self.max_skips = max_skips
    self.ground_truth_shapes = ground_truth_shapes

  def __call__(self, record_index: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    index = int(record_index)
    for skipped in range(self.max_skips + 1):
      try:
        example = self.example(index, shards.parse_clip(self.source[index]), rng)
        example["skipped_records"] = np.int32(skipped)
        return example
      except (CorruptRecordError, UnusableClipError) as error:
        logging.warning("skipping record %d (%s): %s", index, self.source.describe(index), error)
        index = int(self.local_records[rng.integers(len(self.local_records))])
    raise RuntimeError(f"{self.max_skips + 1} records in a row were corrupt or unusable (last: "
                       f"{self.source.describe(index)}); check the shards, e.g. re-run prepare")


class ClipWindowSampler(SkippingRecordSampler):
  """Reads a clip, draws its target and reference windows, builds the arrays."""

  def __init__(self, source, local_records: np.ndarray, num_frames: int, image_size: int,
               min_ref_distance: int, max_skips: int, ground_truth_shapes: dict[str, tuple]):
    super().__init__(source, local_records, image_size, max_skips, ground_truth_shapes)
    self.num_frames = num_frames
    self.min_ref_distance = min_ref_distance

  def example(self, index: int, clip: shards.ParsedClip,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The arrays of one example from a parsed clip (see the module docstring)."""
    window = self.num_frames
    count = num_target_starts(clip.num_frames, clip.mel.shape[0], clip.fps, window)
    starts = np.arange(count)
    choices = _ref_choices(starts, clip.num_frames, window, self.min_ref_distance)
    usable = starts[choices > 0]
    if usable.size == 0:
      raise UnusableClipError(
          f"clip {clip.clip_id!r} ({clip.num_frames} frames, {clip.mel.shape[0]} mel rows) has "
          f"no {window}-frame target window with a reference window {self.min_ref_distance} "
          "frames away")
    start = int(usable[rng.integers(usable.size)])
    pick = int(rng.integers(choices[start]))
    before = max(start - self.min_ref_distance + 1, 0)
    ref_start = pick if pick < before else start + self.min_ref_distance + (pick - before)
    targets = np.arange(start, start + window)
    rows = mel_start_row(np.maximum(targets - 1, 0), clip.fps)[:, None] + np.arange(MEL_WINDOW_STEPS)
    sync_row = int(mel_start_row(start, clip.fps))
    example = {
        # uint8 until batched: converting after mp_prefetch moves 4x fewer bytes between processes.
        "image": clip.frames(start, start + window, self.image_size),
        "ref_img": clip.frames(ref_start, ref_start + window, self.image_size),
        "indiv_mels": np.ascontiguousarray(clip.mel[rows].transpose(0, 2, 1)),
        "mel": np.ascontiguousarray(clip.mel[sync_row:sync_row + MEL_WINDOW_STEPS].T),
        "clip_index": np.int32(index),
        "frame_index": np.int32(start),
        "ref_frame_index": np.int32(ref_start),
    }
    for name, tail in self.ground_truth_shapes.items():
      values = clip.ground_truth.get(name)
      example[name] = (values[start:start + window].astype(np.float32) if values is not None
                       else np.full((window, *tail), np.nan, np.float32))
    return example


IMAGE_KEYS = ("image", "ref_img")


class ImagesToModelRange:
  """Batch map: uint8 ``image`` / ``ref_img`` -> float32 ``x / 127.5 - 1``.

  Runs after ``mp_prefetch``, in the training process: workers ship uint8 batches (a quarter of
  the bytes through shared memory, whose page faults cost ~3x those of private memory here).
  """

  def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    batch = dict(batch)
    for key in IMAGE_KEYS:
      batch[key] = to_model_range(batch[key])
    return batch


def to_model_range(images):
  """uint8 pixels -> float32 in [-1, 1] (``x / 127.5 - 1``), the model's image range.

  Works on NumPy arrays and, for ``image_dtype="uint8"`` batches, on JAX arrays inside ``jit``.
  """
  if isinstance(images, np.ndarray):
    out = np.multiply(images, np.float32(1 / 127.5), dtype=np.float32)
    out -= np.float32(1.0)
    return out
  return images.astype("float32") * (1 / 127.5) - 1.0


def _ground_truth_shapes(source) -> dict[str, tuple]:
  """Ground-truth names and per-frame shapes, from the first readable record."""
  for index in range(min(len(source), 32)):
    try:
      clip = shards.parse_clip(source[index])
    except CorruptRecordError:
      continue
    return {name: values.shape[1:] for name, values in sorted(clip.ground_truth.items())}
  return {}


def _host_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index must be in [0, {shard_count}), got {shard_index}")
  return shard_index, shard_count


def create_train_dataset(config: ml_collections.ConfigDict,
                         shards_or_dir: str | os.PathLike | Sequence[str], *, seed: int,
                         batch_size: int, shard_index: int | None = None,
                         shard_count: int | None = None) -> grain.IterDataset:
  """The Grain ``IterDataset`` of training batches (see :func:`create_train_iterator`)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  files = shards.find_shard_files(shards_or_dir)
  source = shards.open_data_source(files, verify_checksums=config.verify_checksums)
  shard_index, shard_count = _host_shard(shard_index, shard_count)
  local_records = np.arange(len(source))[shard_index::shard_count]
  if local_records.size == 0:
    raise ValueError(f"host shard {shard_index}/{shard_count} gets no records: only "
                     f"{len(source)} records in {len(files)} files")
  distance = config.min_ref_distance if config.min_ref_distance is not None else config.num_frames
  truth_shapes = _ground_truth_shapes(source)
  clashes = set(truth_shapes) & set(BATCH_KEYS)
  if clashes:
    raise ValueError(f"ground-truth arrays {sorted(clashes)} in {files[0]} clash with batch keys; "
                     "rename them when writing the shards")
  sampler = ClipWindowSampler(source, local_records, config.num_frames, config.image_size,
                              distance, config.max_skips_per_example, truth_shapes)
  dataset = grain.MapDataset.range(len(local_records)).repeat(config.num_epochs)
  dataset = dataset.map_with_index(EpochOrder(local_records, seed, config.shuffle))
  dataset = dataset.random_map(sampler, seed=(seed + 1) % 2**32)
  read_options = grain.ReadOptions(num_threads=config.read_threads,
                                   prefetch_buffer_size=config.prefetch_buffer_size)
  batches = dataset.to_iter_dataset(read_options).batch(batch_size,
                                                        drop_remainder=config.drop_remainder)
  if config.worker_count > 0:
    _use_default_absl_flags()
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=config.worker_count, per_worker_buffer_size=config.worker_buffer_size))
  if config.image_dtype == "float32":
    batches = batches.map(ImagesToModelRange())
  elif config.image_dtype != "uint8":
    raise ValueError(f"config.image_dtype must be 'float32' or 'uint8', got {config.image_dtype!r}")
  if config.host_prefetch > 0:
    batches = grain.experimental.ThreadPrefetchIterDataset(
        batches, prefetch_buffer_size=config.host_prefetch)
  return batches


def _use_default_absl_flags() -> None:
  # Grain's multiprocessing reads absl flags; outside an absl app they are unparsed and reading
  # them raises, so accept the defaults (an absl app that parsed its flags is left alone).
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class TrainIterator(grain.DatasetIterator):
  """Iterator of training batches with Grain/Orbax-checkpointable state.

  ``get_state()`` is a JSON-serializable dict (the Grain pipeline state plus the skip counter);
  ``set_state`` restores it so the next batch equals the one an uninterrupted run would give.
  Works with ``grain.checkpoint.CheckpointHandler`` / ``CheckpointSave`` / ``CheckpointRestore``
  in an Orbax ``CheckpointManager`` (this class is a ``grain.DatasetIterator``).
  """

  def __init__(self, dataset: grain.IterDataset):
    inner = iter(dataset)
    super().__init__(inner)
    self.skipped_records = 0
    self.batches_produced = 0

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._parent)
    self.skipped_records += int(np.sum(batch["skipped_records"]))
    self.batches_produced += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"pipeline": self._parent.get_state(), "skipped_records": self.skipped_records,
            "batches_produced": self.batches_produced}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["pipeline"])
    self.skipped_records = int(state["skipped_records"])
    self.batches_produced = int(state["batches_produced"])


def create_train_iterator(config: ml_collections.ConfigDict,
                          shards_or_dir: str | os.PathLike | Sequence[str], *, seed: int,
                          batch_size: int, num_frames: int | None = None,
                          image_size: int | None = None, worker_count: int | None = None,
                          shard_index: int | None = None,
                          shard_count: int | None = None) -> TrainIterator:
  """Training batches from shard files (a directory, glob, file or list of those).

  Args:
    config: the pipeline settings, ``config.data.pipeline`` of a training config (fields
      documented in ``configs/released.py``); keyword arguments given here win.
    seed: controls clip order and every window choice.
    batch_size: per-host batch size B.
    shard_index, shard_count: this host's slice of the records (default: JAX process index/count).
  Returns:
    a :class:`TrainIterator` yielding the batch dict described in the module docstring.
  """
  config = config.copy_and_resolve_references()
  for name, value in (("num_frames", num_frames), ("image_size", image_size),
                      ("worker_count", worker_count)):
    if value is not None:
      config[name] = value
  return TrainIterator(create_train_dataset(config, shards_or_dir, seed=seed,
                                            batch_size=batch_size, shard_index=shard_index,
                                            shard_count=shard_count))

