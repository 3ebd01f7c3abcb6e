"""The Grain chain both training pipelines share: clip shards -> this host's batches.

``input_pipeline`` (Diff2Lip windows) and ``diff2lip_jax/syncnet/data.py`` (SyncNet pairs) differ
only in their per-example sampler (a :class:`SkippingRecordSampler` subclass) and in an optional
batch map; the rest is built here::

  find_shard_files -> open_data_source -> records -> ground-truth shapes          (open_host_records)
  this host's positions of the global example stream -> EpochOrder -> sampler -> ReadOptions
    -> batch -> mp_prefetch (worker_count > 0) -> batch_map -> ThreadPrefetch    (build_batches)

One global example stream, the same for any number of hosts: position ``p = 0, 1, 2, ...``
is example ``sampler(record, rng)`` of record ``EpochOrder(records, seed)(p)`` (a permutation
drawn per epoch from (seed, epoch)) with the generator :func:`element_rng` ``(seed + 1, p)``. Global batch
``b`` is positions ``[b * G, (b + 1) * G)`` (``G = hosts * batch_size``) and host ``h`` loads
its contiguous block ``[b * G + h * batch_size, ...)`` of it, the rows its devices hold in a
batch sharded over a mesh of ``jax.devices()``. So the global batches do not depend on the
host count, a run is reproducible, and a run resumed on another topology continues the same
stream: ``start_batch`` (batches this host already consumed = the training step) positions the
stream, and a restored :class:`TrainIterator` continues exactly where the saved one was (same
host count). With ``worker_count > 0`` each worker batches its own slice of this host's
examples, so the batches differ from ``worker_count=0`` (same examples, other grouping); keep
``worker_count`` fixed when resuming. Batch arrays may be ``SharedMemoryArray`` (an
``np.ndarray`` subclass) when workers are used.

Corrupt records (CRC mismatch, unparsable Example, undecodable JPEG) and clips the sampler cannot
use (:class:`UnusableClipError`) are skipped: the example is drawn from another record, chosen by
the same generator (so still deterministic), and ``skipped_records`` counts the
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
  by another of ``records`` (the same on every host) drawn with the same generator, so the
  stream stays deterministic and independent of the host count.
  """

  def __init__(self, source, records: np.ndarray, image_size: int, max_skips: int,
               ground_truth_shapes: dict[str, tuple]):
    self.source = source
    self.records = np.asarray(records, np.int64)
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
        index = int(self.records[rng.integers(len(self.records))])
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
  """A shard set as this host reads it (see :func:`open_host_records`)."""
  files: list[str]
  source: ConcatSource
  records: np.ndarray  # [N] int64 record indices the example stream draws from (all hosts)
  ground_truth_shapes: dict[str, tuple]
  host: int            # this host's index and the host count: which positions it loads
  hosts: int


def open_host_records(shards_or_dir: str | os.PathLike | Sequence[str], *, verify_checksums: bool,
                      batch_keys: Sequence[str], records: np.ndarray | None = None,
                      shard_index: int | None = None,
                      shard_count: int | None = None) -> HostRecords:
  """Opens the shards; every host draws from the same ``records`` (module docstring).

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
  if records.size == 0:
    raise ValueError(f"no records selected from {len(files)} files ({files[0]} ...)")
  truth_shapes = ground_truth_shapes(source)
  clashes = set(truth_shapes) & set(batch_keys)
  if clashes:
    raise ValueError(f"ground-truth arrays {sorted(clashes)} in {files[0]} clash with batch keys; "
                     "rename them when writing the shards")
  return HostRecords(files, source, records, truth_shapes, shard_index, shard_count)


def element_rng(key: np.ndarray, position: int) -> np.random.Generator:
  """The generator of stream position ``position``: Philox with ``key`` (that of
  ``Philox(seed)``) and counter ``position``, the one Grain's ``random_map(seed=seed)`` hands
  element ``position`` (so the streams of earlier versions are unchanged)."""
  counter = np.array([0, 0, 0, position], np.uint64)
  return np.random.Generator(np.random.Philox(key=key, counter=counter))


class HostExamples:
  """``k -> example``: this host's ``k``-th example of the global stream (module docstring)."""

  def __init__(self, sampler: Callable[[int, np.random.Generator], dict[str, np.ndarray]],
               order: EpochOrder, seed: int, batch_size: int, host: int, hosts: int):
    self.sampler, self.order = sampler, order
    self.key = np.random.Philox(int(seed)).state["state"]["key"]
    self.batch_size, self.host, self.hosts = int(batch_size), int(host), int(hosts)

  def position(self, k: int) -> int:
    """The global stream position of this host's ``k``-th example."""
    batch, offset = divmod(int(k), self.batch_size)
    return (batch * self.hosts + self.host) * self.batch_size + offset

  def __call__(self, k: int) -> dict[str, np.ndarray]:
    position = self.position(k)
    return self.sampler(self.order(position, None), element_rng(self.key, position))


def host_length(total: int | None, batch_size: int, host: int, hosts: int,
                drop_remainder: bool) -> int:
  """How many of ``total`` global positions (None: endless) host ``host`` loads."""
  if total is None:
    return (2**62 // (batch_size * hosts)) * batch_size
  full, rest = divmod(total, batch_size * hosts)
  extra = 0 if drop_remainder else min(max(rest - host * batch_size, 0), batch_size)
  return full * batch_size + extra


def build_batches(sampler: Callable[[int, np.random.Generator], dict[str, np.ndarray]],
                  records: np.ndarray, config: ml_collections.ConfigDict, *, seed: int,
                  batch_size: int, host: int = 0, hosts: int = 1, start_batch: int = 0,
                  batch_map: Callable[[dict], dict] | None = None) -> grain.IterDataset:
  """The Grain ``IterDataset`` of host ``host``'s batches of ``sampler(record, rng)`` examples
  (module docstring), from its ``start_batch``-th batch on.

  ``batch_size`` is the per-host batch; ``batch_map`` runs on each batch in the training
  process, after the worker processes.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  total = None if config.num_epochs is None else len(records) * int(config.num_epochs)
  length = host_length(total, batch_size, host, hosts, bool(config.drop_remainder))
  examples = HostExamples(sampler, EpochOrder(records, seed, config.shuffle),
                          (seed + 1) % 2**32, batch_size, host, hosts)
  dataset = grain.MapDataset.range(min(start_batch * batch_size, length), length).map(examples)
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
