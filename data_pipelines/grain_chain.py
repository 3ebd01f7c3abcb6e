"""The Grain chain both training pipelines share: clip shards -> this host's batches.

``input_pipeline`` (Diff2Lip windows) and ``diff2lip_jax/syncnet/data.py`` (SyncNet pairs) differ
only in their per-example sampler (a :class:`SkippingRecordSampler` subclass) and in an optional
batch map; the rest is built here::

  find_shard_files -> open_data_source -> this host's records -> ground-truth shapes  (open_host_records)
  range(records).repeat(num_epochs) -> EpochOrder -> random_map(sampler) -> ReadOptions
    -> batch -> mp_prefetch (worker_count > 0) -> batch_map -> ThreadPrefetch          (build_batches)

Randomness comes only from ``seed``: the record order is a permutation drawn per epoch from
(seed, epoch) (:class:`EpochOrder`), and each example's choices use the generator Grain derives
from (seed + 1, element index), so a run is reproducible and a restored :class:`TrainIterator`
continues exactly where the saved one was. With ``worker_count > 0`` each worker batches its own
slice of the example stream, so the batches differ from ``worker_count=0`` (same examples, other
grouping); keep ``worker_count`` fixed when restoring. Batch arrays may be ``SharedMemoryArray``
(an ``np.ndarray`` subclass) when workers are used.

Hosts: records are split ``records[shard_index::shard_count]`` (default
``jax.process_index()/process_count()``), so hosts read disjoint clips.

Corrupt records (CRC mismatch, unparsable Example, undecodable JPEG) and clips the sampler cannot
use (:class:`UnusableClipError`) are skipped: the example is drawn from another record of this
host, chosen by the same generator (so still deterministic), and ``skipped_records`` counts the
records skipped for it. :class:`TrainIterator` sums that into ``skipped_records`` (saved with its
state); a warning names each skipped record. More than ``max_skips_per_example`` in a row is an
error.

Pipeline settings read here (a ``ConfigDict``): ``num_epochs`` (None: forever), ``shuffle``,
``worker_count``, ``worker_buffer_size``, ``read_threads``, ``prefetch_buffer_size``,
``drop_remainder``, ``host_prefetch`` (see ``configs/released.py``, ``config.data.pipeline``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import grain
import ml_collections
import numpy as np

from data_pipelines import shards
from data_pipelines.record_io import ConcatSource, CorruptRecordError


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
  """A clip a sampler cannot draw an example from (too short for its windows or audio)."""


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


def host_shard(shard_index: int | None = None,
               shard_count: int | None = None) -> tuple[int, int]:
  """``(shard_index, shard_count)`` of this host; None fields come from JAX's process index/count."""
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index must be in [0, {shard_count}), got {shard_index}")
  return shard_index, shard_count


def ground_truth_shapes(source: ConcatSource) -> dict[str, tuple]:
  """Ground-truth names and per-frame shapes (``()`` or ``(D,)``), from the first readable record."""
  for index in range(min(len(source), 32)):
    try:
      clip = shards.parse_clip(source[index])
    except CorruptRecordError:
      continue
    return {name: values.shape[1:] for name, values in sorted(clip.ground_truth.items())}
  return {}


@dataclasses.dataclass(frozen=True)
class HostRecords:
  """This host's part of a shard set (see :func:`open_host_records`)."""
  files: list[str]
  source: ConcatSource
  local_records: np.ndarray  # [N] int64 record indices this host draws examples from
  ground_truth_shapes: dict[str, tuple]


def open_host_records(shards_or_dir: str | os.PathLike | Sequence[str], *, verify_checksums: bool,
                      batch_keys: Sequence[str], records: np.ndarray | None = None,
                      shard_index: int | None = None,
                      shard_count: int | None = None) -> HostRecords:
  """Opens the shards and picks this host's records ``records[shard_index::shard_count]``.

  Args:
    shards_or_dir: a directory, glob, file or list of those (``shards.find_shard_files``).
    batch_keys: the pipeline's own batch keys; ground-truth arrays may not reuse them.
    records: record indices to draw from (None: all).
  """
  files = shards.find_shard_files(shards_or_dir)
  source = shards.open_data_source(files, verify_checksums=verify_checksums)
  records = np.arange(len(source)) if records is None else np.asarray(records, np.int64)
  if records.size and (records.min() < 0 or records.max() >= len(source)):
    raise ValueError(f"record indices must be in [0, {len(source)}) for {files[0]} ...")
  shard_index, shard_count = host_shard(shard_index, shard_count)
  local_records = records[shard_index::shard_count]
  if local_records.size == 0:
    raise ValueError(f"host shard {shard_index}/{shard_count} gets no records: only "
                     f"{records.size} records selected from {len(files)} files")
  truth_shapes = ground_truth_shapes(source)
  clashes = set(truth_shapes) & set(batch_keys)
  if clashes:
    raise ValueError(f"ground-truth arrays {sorted(clashes)} in {files[0]} clash with batch keys; "
                     "rename them when writing the shards")
  return HostRecords(files, source, local_records, truth_shapes)


def build_batches(sampler: Callable[[int, np.random.Generator], dict[str, np.ndarray]],
                  local_records: np.ndarray, config: ml_collections.ConfigDict, *, seed: int,
                  batch_size: int, batch_map: Callable[[dict], dict] | None = None
                  ) -> grain.IterDataset:
  """The Grain ``IterDataset`` of batches of ``sampler(record, rng)`` examples (module docstring).

  ``batch_map`` runs on each batch in the training process, after the worker processes.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
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
  if batch_map is not None:
    batches = batches.map(batch_map)
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
