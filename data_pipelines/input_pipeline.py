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

The Grain chain around the sampler (seeded per-epoch record order, one global example stream
of which each host loads its block of every global batch, worker processes, checkpointable :class:`TrainIterator`,
skipping of corrupt records and of clips too short for the windows, counted in
``skipped_records``) is ``grain_chain``'s, shared with the SyncNet pipeline.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import grain
import ml_collections
import numpy as np

from data_pipelines import grain_chain, shards
from data_pipelines.audio import MEL_WINDOW_STEPS, mel_start_row
from data_pipelines.grain_chain import SkippingRecordSampler, TrainIterator, UnusableClipError

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


class ClipWindowSampler(SkippingRecordSampler):
  """Reads a clip, draws its target and reference windows, builds the arrays."""

  def __init__(self, source, records: np.ndarray, num_frames: int, image_size: int,
               min_ref_distance: int, max_skips: int, ground_truth_shapes: dict[str, tuple]):
    super().__init__(source, records, image_size, max_skips, ground_truth_shapes)
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


def create_train_dataset(config: ml_collections.ConfigDict,
                         shards_or_dir: str | os.PathLike | Sequence[str], *, seed: int,
                         batch_size: int, shard_index: int | None = None,
                         shard_count: int | None = None, start_batch: int = 0
                         ) -> grain.IterDataset:
  """The Grain ``IterDataset`` of training batches (see :func:`create_train_iterator`)."""
  if config.image_dtype not in ("float32", "uint8"):
    raise ValueError(f"config.image_dtype must be 'float32' or 'uint8', got {config.image_dtype!r}")
  host = grain_chain.open_host_records(shards_or_dir, verify_checksums=config.verify_checksums,
                                       batch_keys=BATCH_KEYS, shard_index=shard_index,
                                       shard_count=shard_count)
  distance = config.min_ref_distance if config.min_ref_distance is not None else config.num_frames
  sampler = ClipWindowSampler(host.source, host.records, config.num_frames,
                              config.image_size, distance, config.max_skips_per_example,
                              host.ground_truth_shapes)
  return grain_chain.build_batches(
      sampler, host.records, config, seed=seed, batch_size=batch_size, host=host.host,
      hosts=host.hosts, start_batch=start_batch, batch_map=ImagesToModelRange() if config.image_dtype == "float32" else None)


def create_train_iterator(config: ml_collections.ConfigDict,
                          shards_or_dir: str | os.PathLike | Sequence[str], *, seed: int,
                          batch_size: int, num_frames: int | None = None,
                          image_size: int | None = None, worker_count: int | None = None,
                          shard_index: int | None = None, shard_count: int | None = None,
                          start_batch: int = 0) -> TrainIterator:
  """Training batches from shard files (a directory, glob, file or list of those).

  Args:
    config: the pipeline settings, ``config.data.pipeline`` of a training config (fields
      documented in ``configs/released.py``); keyword arguments given here win.
    seed: controls clip order and every window choice.
    batch_size: per-host batch size B.
    shard_index, shard_count: this host and the host count (default: JAX process index/count);
      the host loads its block of every global batch of ``shard_count * batch_size``.
    start_batch: batches of this host to skip (a resumed run's step: any host count then
      continues the same global stream).
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
                                            shard_count=shard_count, start_batch=start_batch))

