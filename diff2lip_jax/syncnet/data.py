"""Grain pipeline: clip shards -> in-sync / off-sync pairs for training the SyncNet expert.

Per example, as Wav2Lip's ``color_syncnet_train.py`` draws them (one clip per example, drawn
by a seeded per-epoch shuffle of this host's records):

* ``label`` is 1 with probability ``in_sync_probability`` (0.5), else 0;
* a face window of 5 consecutive frames starting at ``j``, uniform over the valid starts
  (``j + 5 <= T`` and the mel window at ``j`` inside the spectrogram) that have at least one
  valid partner start ``k`` with ``|k - j| >= min_shift``;
* ``mel``: the sync window of start ``j`` when ``label == 1``, else of a partner ``k`` drawn
  uniformly (rows ``int(80 * (s / fps)) : + 16`` transposed to ``[80, 16]``, Wav2Lip
  ``crop_audio_window``).

Wav2Lip shifts the face window and keeps the mel at ``j``; here the mel is shifted and the face
kept, which gives the same pair distribution. With ``min_shift=1`` (Wav2Lip's rule: any other
frame) an off-sync window may overlap its face window by up to 4 frames.

Batch (dict of NumPy arrays)::

  frames [B, 5, S, S, 3] uint8 RGB   the face window, full crops (the model side turns them into
                                     SyncNet's ``[48, 96, 15]`` BGR input, see ``train_syncnet``)
  mel [B, 80, 16] f32                label [B] f32 (1 in-sync, 0 off-sync)
  clip_index [B] i32                 frame_index [B] i32 (j)
  mel_frame_index [B] i32 (k; == j for in-sync pairs)
  skipped_records [B] i32            <ground truth> [B, 5] / [B, 5, D] f32 of the face window

Frames stay uint8 until they reach the device (a quarter of the bytes); resizing to 96x96 and
the lower-half crop happen there, with the same ``syncnet_face_input`` the Diff2Lip sync loss
uses, so the expert sees identical preprocessing in both trainings.

The Grain chain around the sampler (determinism, checkpointable ``TrainIterator`` state, one
global example stream of which each host loads its block of every batch, corrupt-record
skipping) is ``data_pipelines.grain_chain``'s, shared with the Diff2Lip pipeline.
"""
from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Sequence

import grain
import ml_collections
import numpy as np

from data_pipelines import grain_chain, shards
from data_pipelines.audio import MEL_WINDOW_STEPS, mel_start_row
from data_pipelines.grain_chain import SkippingRecordSampler, TrainIterator, UnusableClipError
from diff2lip_jax.training import data as training_data

SYNC_WINDOW = 5
BATCH_KEYS = ("frames", "mel", "label", "clip_index", "frame_index", "mel_frame_index",
              "skipped_records")


def num_sync_starts(num_frames: int, mel_rows: int, fps: float) -> int:
  """How many starts ``0 .. n-1`` have a whole face window and a whole mel window."""
  if num_frames < SYNC_WINDOW:
    return 0
  starts = np.arange(num_frames - SYNC_WINDOW + 1)
  fits = mel_start_row(starts, fps) + MEL_WINDOW_STEPS <= mel_rows
  return int(np.count_nonzero(fits))  # mel_start_row grows with the start: a prefix fits


def partner_counts(num_starts: int, min_shift: int) -> np.ndarray:
  """``[num_starts]``: per start j, the number of starts k with ``|k - j| >= min_shift``."""
  starts = np.arange(num_starts)
  before = np.maximum(starts - min_shift + 1, 0)
  after = np.maximum(num_starts - starts - min_shift, 0)
  return before + after


class SyncPairSampler(SkippingRecordSampler):
  """``(record_index, rng) -> example``: reads a clip and draws one in-sync or off-sync pair."""

  def __init__(self, source, records: np.ndarray, image_size: int, min_shift: int,
               in_sync_probability: float, max_skips: int,
               ground_truth_shapes: dict[str, tuple]):
    if min_shift < 1:
      raise ValueError(f"min_shift must be >= 1 (0 would make off-sync pairs in sync), got "
                       f"{min_shift}")
    if not 0.0 <= in_sync_probability <= 1.0:
      raise ValueError(f"in_sync_probability must be in [0, 1], got {in_sync_probability}")
    super().__init__(source, records, image_size, max_skips, ground_truth_shapes)
    self.min_shift = min_shift
    self.in_sync_probability = in_sync_probability

  def example(self, index: int, clip: shards.ParsedClip,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The arrays of one example from a parsed clip (see the module docstring)."""
    count = num_sync_starts(clip.num_frames, clip.mel.shape[0], clip.fps)
    partners = partner_counts(count, self.min_shift)
    usable = np.flatnonzero(partners)
    if usable.size == 0:  # the base sampler then draws another record
      raise UnusableClipError(
          f"clip {clip.clip_id!r} ({clip.num_frames} frames, {clip.mel.shape[0]} mel rows) has "
          f"no two {SYNC_WINDOW}-frame windows with audio {self.min_shift} frames apart")
    in_sync = bool(rng.random() < self.in_sync_probability)
    start = int(usable[rng.integers(usable.size)])
    mel_start = start
    if not in_sync:
      pick = int(rng.integers(partners[start]))
      before = max(start - self.min_shift + 1, 0)
      mel_start = pick if pick < before else start + self.min_shift + (pick - before)
    row = int(mel_start_row(mel_start, clip.fps))
    example = {
        "frames": clip.frames(start, start + SYNC_WINDOW, self.image_size),
        "mel": np.ascontiguousarray(clip.mel[row:row + MEL_WINDOW_STEPS].T),
        "label": np.float32(in_sync),
        "clip_index": np.int32(index),
        "frame_index": np.int32(start),
        "mel_frame_index": np.int32(mel_start),
    }
    for name, tail in self.ground_truth_shapes.items():
      values = clip.ground_truth.get(name)
      example[name] = (values[start:start + SYNC_WINDOW].astype(np.float32)
                       if values is not None
                       else np.full((SYNC_WINDOW, *tail), np.nan, np.float32))
    return example


def split_records(num_records: int, num_eval: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Seeded split of record indices into (train, held-out eval), each sorted.

  For real data prefer separate eval shards with unseen speakers (``data.eval_shards``): a
  random split of clips can put one speaker's clips on both sides.
  """
  if not 0 <= num_eval < num_records:
    raise ValueError(f"cannot hold out {num_eval} of {num_records} clips for evaluation; need "
                     "0 <= num_eval_clips < number of clips (write more clips or lower it)")
  order = np.random.default_rng([seed, 0x5C]).permutation(num_records)
  return np.sort(order[num_eval:]), np.sort(order[:num_eval])


def create_dataset(config: ml_collections.ConfigDict,
                   shards_or_dir: str | os.PathLike | Sequence[str], *, seed: int,
                   batch_size: int, records: np.ndarray | None = None,
                   shard_index: int | None = None,
                   shard_count: int | None = None) -> grain.IterDataset:
  """Grain ``IterDataset`` of SyncNet batches (see :func:`create_iterator`)."""
  host = grain_chain.open_host_records(shards_or_dir, verify_checksums=config.verify_checksums,
                                       batch_keys=BATCH_KEYS, records=records,
                                       shard_index=shard_index, shard_count=shard_count)
  sampler = SyncPairSampler(host.source, host.records, config.image_size, config.min_shift,
                            config.in_sync_probability, config.max_skips_per_example,
                            host.ground_truth_shapes)
  return grain_chain.build_batches(sampler, host.records, config, seed=seed,
                                   batch_size=batch_size, host=host.host, hosts=host.hosts)


def create_iterator(config: ml_collections.ConfigDict,
                    shards_or_dir: str | os.PathLike | Sequence[str], *, seed: int,
                    batch_size: int, records: np.ndarray | None = None,
                    shard_index: int | None = None,
                    shard_count: int | None = None) -> TrainIterator:
  """SyncNet batches from shard files (a directory, glob, file or list of those).

  Args:
    config: the pipeline settings, ``config.data.pipeline`` of a SyncNet training config
      (fields documented in ``configs/syncnet.py``); extra fields are ignored.
    seed: controls clip order, labels and every window choice.
    batch_size: per-host batch size B.
    records: indices of the records to draw from (e.g. one side of :func:`split_records`);
      None: all (every host draws from the same records).
    shard_index, shard_count: this host and the host count (default: JAX process
      index/count); the host loads its block of every global batch.
  Returns:
    a checkpointable ``grain_chain.TrainIterator`` yielding the batch dict of the module
    docstring (``get_state`` / ``set_state``, Grain's Orbax handler).
  """
  return TrainIterator(create_dataset(config, shards_or_dir, seed=seed, batch_size=batch_size,
                                      records=records, shard_index=shard_index,
                                      shard_count=shard_count))


def training_sources(config: ml_collections.ConfigDict, workdir: str | os.PathLike, seed: int):
  """``((train_shards, train_records), (eval_shards, eval_records))`` for the trainer.

  ``config`` is the trainer's ``config.data``: ``shards`` ("": the ``synthetic_clips``
  generated clips (``synthetic_seed``, ``{min,max}_frames``, ``pipeline.image_size``) written
  once to ``workdir/synthetic_shards``), ``eval_shards`` ("": hold ``num_eval_clips`` of the
  training clips out, :func:`split_records` with ``seed``). Records None mean all.
  """
  if config.shards:
    train = config.shards
  elif config.synthetic_clips:
    logging.warning("data.shards is empty: training on %d synthetic clips",
                    config.synthetic_clips)
    # One shard per clip up to 4 (not the writer's default), so the clips, their order and the
    # results of earlier runs stay the same.
    train = training_data.synthetic_shards_once(
        pathlib.Path(workdir) / "synthetic_shards", num_clips=config.synthetic_clips,
        seed=config.synthetic_seed, min_frames=config.min_frames,
        max_frames=config.max_frames, image_size=config.pipeline.image_size,
        num_shards=max(1, min(4, config.synthetic_clips)))
  else:
    raise ValueError("data.shards is empty and data.synthetic_clips is 0: give shards written "
                     "by `python -m data_pipelines.prepare` (--config.data.shards=DIR)")
  if config.eval_shards:
    return (train, None), (config.eval_shards, None)
  count = len(shards.open_data_source(shards.find_shard_files(train), verify_checksums=False))
  train_records, eval_records = split_records(count, config.num_eval_clips, seed)
  if eval_records.size == 0:
    raise ValueError("data.num_eval_clips is 0 and no data.eval_shards given: nothing to "
                     "evaluate; set one of them")
  return (train, train_records), (train, eval_records)
