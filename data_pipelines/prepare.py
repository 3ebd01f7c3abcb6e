"""Videos -> clip shards: ``python -m data_pipelines.prepare --input DIR_OR_FILELIST --out_dir OUT``.

Per video (one clip = one record, schema in ``shards.py``): the audio track is decoded and
resampled to 16 kHz and turned into the mel spectrogram (``audio.melspectrogram``); frames are
read at 25 fps (``video_io``; variable frame rates resampled by timestamp), cropped (fixed
VoxCeleb2 crop, a given box, or S3FD face boxes), resized to 128x128 and JPEG-encoded.

Inputs: a directory (searched recursively for video files; clip id = path relative to it, without
extension) or a filelist (one video per line; the first whitespace-separated token is used when
the whole line is not a file, as in the reference ``video audio`` filelists; relative paths are
resolved against ``--root``, default the filelist's folder; a name without extension gets
``--video_ext``; ``#`` lines are comments).

Outputs in ``--out_dir``:
  ``clips-r<run>-<i>.tfrecord`` (or ``.array_record``)  shards, written as ``.tmp-*`` then renamed
  ``features.json``   TFDS description of the records
  ``manifest.json``   settings, every finished shard with its clip ids, every failed clip
  ``failures.jsonl``  one JSON line per skipped clip: ``{"clip_id", "path", "reason"}``

Policies (each skipped clip gets a line in ``failures.jsonl``; one bad file never stops the run):
  * unreadable / not a media file / truncated video / no video stream: skipped, the reader's error.
  * no audio track: skipped ("has no audio stream").
  * silent audio (peak below ``--silence_dbfs``, default -60 dBFS): skipped ("silent audio"),
    because a silent clip teaches nothing about lip sync and usually means a muted upload;
    ``--keep_silent`` keeps such clips.
  * too short: a clip needs a ``--window`` (5) frame target window whose per-frame mel windows fit
    in the audio and a second, non-overlapping window for the reference frames
    (``input_pipeline.clip_is_trainable``; >= 10 frames at 25 fps); shorter clips are skipped.
  * S3FD finds no face in some frames: skipped naming the frames (``--no_face error``), or
    boxes filled from neighbouring frames (``--no_face nearest|interpolate``).
  * voxceleb2/box crops: no face found by the bundled detector in any frame sampled once a
    second: skipped ("no face found"; ``--face_check none`` keeps such clips).
  * duplicate clip ids (same path with two extensions): the later ones are skipped.

Curation (``--curate``, off by default; ``data_pipelines.curation``): each clip is decoded whole,
scene cuts split it into shots (``<id>#<shot>`` records) or drop it, shots with small, missing or
low-scoring faces are dropped, SyncNet (``--sync_measurer``, user-supplied ``--sync_weights``)
measures the audio-video offset and confidence: shots under the confidence threshold are dropped,
the audio of the others is delayed by the offset before the mel is computed. A clip without a
kept shot is listed in ``failures.jsonl`` ("dropped by curation: ..."). ``OUT/curation/`` gets
the report: ``summary.json``/``.txt`` (counts per reason), ``offset.png``, ``confidence.png``,
``face_size.png`` (histograms), ``dropped.csv`` and ``decisions.jsonl`` (all runs so far).

Engines: ``--engine local`` (default, ``--num_workers`` processes) or ``--engine beam``
(``data_pipelines.beam_prepare``; same per-clip code, same shards and manifest; other flags go
to Beam: ``--runner DataflowRunner ...``; locally ``--direct_running_mode multi_processing
--direct_num_workers N``).

Resuming: re-running with the same ``--out_dir`` skips every clip listed in the manifest (written
or failed; ``--retry_failed`` retries the failed ones). Clips whose shard was not finished
(crash, Ctrl-C) are not in the manifest and are processed again; leftover ``.tmp-*`` files are
removed. The settings that shape records (size, fps, crop, format) must match the first run.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence

from data_pipelines import face_crops, shards
from data_pipelines.clip_work import (WAV2LIP_PADS, ClipResult, ClipSkipped, ClipWorker,
                                      PrepareOptions, check_options, process_video)
from data_pipelines.prepare_outputs import (FAILURES, MANIFEST, VIDEO_EXTENSIONS, Manifest,
                                            find_videos, pending_jobs, remove_temp_files,
                                            update_curation_report)

__all__ = ["FAILURES", "MANIFEST", "VIDEO_EXTENSIONS", "WAV2LIP_PADS", "ClipSkipped",
           "Manifest", "PrepareOptions", "build_parser", "find_videos", "main", "prepare",
           "process_video"]

_WORKER: dict = {}


def _init_worker(options: PrepareOptions) -> None:
  _WORKER["worker"] = ClipWorker(options)


def _run_job(job: tuple[str, str]) -> ClipResult:
  return _WORKER["worker"].process(*job)


def _map_jobs(jobs: list[tuple[str, str]], options: PrepareOptions,
              num_workers: int) -> Iterator[ClipResult]:
  if num_workers <= 0:
    _init_worker(options)
    yield from map(_run_job, jobs)
    return
  context = multiprocessing.get_context("spawn")  # no fork: safe with JAX / threads in the parent
  with context.Pool(num_workers, initializer=_init_worker, initargs=(options,)) as pool:
    yield from pool.imap(_run_job, jobs, chunksize=1)


def prepare(input_path: str, out_dir: str, options: PrepareOptions = PrepareOptions(), *,
            num_workers: int = 0, clips_per_shard: int = 256, format: str = "tfrecord",  # pylint: disable=redefined-builtin
            root: str | None = None, video_ext: str = ".mp4", retry_failed: bool = False,
            progress: bool = True) -> dict:
  """Processes every not-yet-finished video into shards; returns a summary dict (see module doc)."""
  check_options(options)
  videos = find_videos(input_path, root, video_ext)  # a bad --input creates no --out_dir
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise NotADirectoryError(f"--out_dir {out_dir} is a file; give a directory for the shards")
  os.makedirs(out_dir, exist_ok=True)
  remove_temp_files(out_dir)
  manifest = Manifest(out_dir, {**options.record_settings(), "format": format}, retry_failed)
  jobs, seen, done = pending_jobs(manifest, input_path, root, video_ext, videos)
  run = manifest.data["runs"]
  manifest.data["runs"] = run + 1
  summary = {"videos": len(seen), "already_done": len(seen & done), "written": 0, "failed": 0,
             "shards": []}
  shards.ClipSerializer(options.image_size).save_features(out_dir)
  state = {"writer": None, "records": [], "inputs": []}
  decisions = []

  def finish_shard():
    if state["writer"] is not None:
      manifest.add_shard(os.path.basename(state["writer"].close()), state["records"],
                         state["inputs"])
      summary["shards"].append(state["writer"].path)
      manifest.save()
    state.update(writer=None, records=[], inputs=[])

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=len(jobs), unit="clip", desc="prepare", disable=not progress)
  try:
    for result in _map_jobs(jobs, options, num_workers):
      if result.decision is not None:
        decisions.append(result.decision)
      if not result.records:
        manifest.add_failure(result.clip_id, result.path, result.failure)
        summary["failed"] += 1
      else:
        if state["writer"] is None:
          name = f"clips-r{run:03d}-{len(summary['shards']):05d}{shards.FORMATS[format]}"
          state["writer"] = shards.ShardWriter(os.path.join(out_dir, name), format)
        for record_id, record in result.records:  # all shots of a clip go into one shard
          state["writer"].write(record)
          state["records"].append(record_id)
        state["inputs"].append(result.clip_id)
        summary["written"] += len(result.records)
        if len(state["records"]) >= clips_per_shard:
          finish_shard()
      bar.update(1)
      bar.set_postfix(written=summary["written"], failed=summary["failed"])
    finish_shard()
  finally:
    bar.close()
    if state["writer"] is not None:  # interrupted: the partial shard's clips are redone next time
      state["writer"].abort()
    manifest.save()
    if options.curation is not None:
      summary["curation"] = update_curation_report(out_dir, decisions, options.curation,
                                                   options.confidence_threshold())["reasons"]
  return summary


def _int_tuple(text: str) -> tuple[int, ...]:
  try:
    values = tuple(int(v) for v in text.split(","))
  except ValueError:
    values = ()
  if len(values) != 4:
    raise argparse.ArgumentTypeError(f"expected 4 comma-separated integers, got {text!r}")
  return values


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m data_pipelines.prepare", formatter_class=argparse.RawDescriptionHelpFormatter,
      description="Turn talking-face videos into TFRecord/ArrayRecord clip shards for training.",
      epilog=__doc__.split("\n\n", 1)[1])
  add = parser.add_argument
  add("--input", required=True, help="directory searched recursively for videos, or a filelist")
  add("--out_dir", required=True, help="output directory for shards, manifest and failures")
  add("--root", default=None, help="base folder for relative filelist entries (default: the "
      "filelist's folder)")
  add("--video_ext", default=".mp4", help="extension added to filelist entries without one")
  add("--crop", choices=face_crops.CROP_KINDS, default="voxceleb2",
      help="voxceleb2: the reference's fixed crop (no weights); s3fd: face detection (needs "
      "--s3fd_weights); hog: dlib's bundled face detector; auto: s3fd if its weights are found, "
      "else hog; box: one fixed --box for every frame")
  add("--box", type=_int_tuple, default=None, help="x1,y1,x2,y2 pixel box for --crop box "
      "(exclusive ends, in the video's pixels)")
  add("--s3fd_weights", default=None, help="S3FD PyTorch checkpoint (e.g. Wav2Lip's s3fd.pth)")
  add("--pads", type=_int_tuple, default=WAV2LIP_PADS,
      help="s3fd: top,bottom,left,right pixels added around each face box")
  add("--smooth_window", type=int, default=5, help="s3fd: frames averaged to smooth boxes")
  add("--no_face", choices=("error", "nearest", "interpolate"), default="error",
      help="s3fd: frames without a face skip the clip (error) or reuse neighbouring boxes")
  add("--size", type=int, default=128, help="side of the square face crops in pixels")
  add("--fps", type=float, default=25.0, help="frame rate the video is resampled to")
  add("--window", type=int, default=5, help="training window length used by the too-short check")
  add("--jpeg_quality", type=int, default=shards.JPEG_QUALITY, help="JPEG quality of the crops")
  add("--keep_silent", action="store_true", help="keep clips whose audio is silent")
  add("--face_check", choices=("auto", "none"), default="auto", help="voxceleb2/box crops: skip "
      "clips where the bundled face detector finds no face in any frame sampled once a second")
  add("--silence_dbfs", type=float, default=-60.0, help="peak level at or below which audio "
      "counts as silent")
  add("--format", choices=sorted(shards.FORMATS), default="tfrecord", help="shard file format")
  add("--clips_per_shard", type=int, default=256, help="records per shard file")
  add("--num_workers", type=int, default=max(1, (os.cpu_count() or 1) - 1),
      help="local engine: worker processes (0: run in this process)")
  add("--retry_failed", action="store_true", help="retry clips listed as failed by earlier runs")
  add("--quiet", action="store_true", help="no progress bar")
  add("--engine", choices=("local", "beam"), default="local", help="local: worker processes on "
      "this machine; beam: an Apache Beam pipeline (pip install 'diff2lip-jax[beam]'); unknown "
      "flags such as --runner, --direct_running_mode go to Beam's PipelineOptions")
  _add_curation_flags(parser)
  return parser


def _add_curation_flags(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("curation (data_pipelines.curation; off unless --curate)")
  add, toggle = group.add_argument, argparse.BooleanOptionalAction
  add("--curate", action="store_true", help="curate every clip; report in OUT/curation/")
  add("--curate_scenes", choices=("split", "drop", "off"), default="split",
      help="scene cuts split a clip into shots, drop the clip, or are not looked for")
  add("--curate_min_frames", type=int, default=25, help="shots shorter than this many frames "
      "(after the audio shift) are dropped")
  add("--curate_faces", action=toggle, default=True, help="face-size / detection-score filters")
  add("--curate_min_face_size", type=float, default=64.0, help="drop shots whose median face "
      "box side is under this many pixels")
  add("--curate_max_missing", type=float, default=0.2, help="drop shots with more than this "
      "fraction of frames without a face")
  add("--curate_min_score", type=float, default=0.0, help="drop shots whose mean detection "
      "score is under this (needs --crop s3fd for scores)")
  add("--curate_min_frame_score", type=float, default=0.0, help="drop shots with a frame whose "
      "detection score is under this")
  add("--curate_sync", action=toggle, default=True, help="measure the audio-video offset and "
      "confidence with SyncNet (needs --sync_weights)")
  add("--curate_shift_audio", action=toggle, default=True, help="delay the audio by the "
      "measured offset (frames left without a partner are cut)")
  add("--curate_min_confidence", type=float, default=None, help="drop shots under this sync "
      "confidence (default: the measurer's, 3.0 for syncnet_v2)")
  add("--curate_max_offset", type=int, default=15, help="drop shots whose |offset| is larger")
  add("--curate_vshift", type=int, default=15, help="offsets searched: -vshift..vshift frames")
  add("--sync_measurer", choices=("syncnet_v2", "expert", "synthetic"), default="syncnet_v2",
      help="syncnet_v2: syncnet_python's network; expert: Wav2Lip's lipsync_expert.pth or a "
      "train_syncnet workdir; synthetic: synthetic test videos only")
  add("--sync_weights", default=None, help="SyncNet weights for --sync_measurer (user-supplied)")


def _curation_config(args: argparse.Namespace) -> "curation.CurationConfig | None":
  if not args.curate:
    return None
  from data_pipelines import curation  # pylint: disable=import-outside-toplevel (loads JAX)
  return curation.CurationConfig(
      scene_detection=args.curate_scenes != "off",
      scene_policy="split" if args.curate_scenes == "off" else args.curate_scenes,
      min_frames=args.curate_min_frames, face_filter=args.curate_faces,
      min_face_size=args.curate_min_face_size, max_missing_fraction=args.curate_max_missing,
      min_mean_score=args.curate_min_score, min_frame_score=args.curate_min_frame_score,
      sync=args.curate_sync, vshift=args.curate_vshift,
      min_confidence=args.curate_min_confidence, max_abs_offset=args.curate_max_offset,
      shift_audio=args.curate_shift_audio, fps=args.fps)


def main(argv: Sequence[str] | None = None) -> int:  # user errors: one ``error:`` line
  from diff2lip_jax import cli  # pylint: disable=import-outside-toplevel
  return cli.run(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
  parser = build_parser()
  args, pipeline_args = parser.parse_known_args(argv)
  if pipeline_args and args.engine != "beam":
    parser.error(f"unrecognized arguments: {' '.join(pipeline_args)}")
  if args.crop == "box" and args.box is None:
    parser.error("--crop box needs --box x1,y1,x2,y2")
  try:
    crop = face_crops.CropSpec(args.crop, box=args.box if args.crop == "box" else None,
                               pads=args.pads, smooth_window=args.smooth_window,
                               no_face=args.no_face)
    curation_config = _curation_config(args)
  except (face_crops.CropError, ValueError) as error:
    parser.error(str(error))
  options = PrepareOptions(
      crop=crop, s3fd_weights=args.s3fd_weights, image_size=args.size, fps=args.fps,
      window=args.window, jpeg_quality=args.jpeg_quality, keep_silent=args.keep_silent,
      silence_dbfs=args.silence_dbfs, curation=curation_config,
      sync_measurer=args.sync_measurer, sync_weights=args.sync_weights,
      face_check=args.face_check == "auto")
  common = {"clips_per_shard": args.clips_per_shard, "format": args.format, "root": args.root,
            "video_ext": args.video_ext, "retry_failed": args.retry_failed}
  if args.engine == "beam":
    from data_pipelines import beam_prepare  # pylint: disable=import-outside-toplevel
    try:
      summary = beam_prepare.run(args.input, args.out_dir, options, pipeline_args=pipeline_args,
                                 **common)
    except beam_prepare.BeamUnavailableError as error:
      parser.exit(2, f"error: {error}\n")
  else:
    summary = prepare(args.input, args.out_dir, options, num_workers=args.num_workers,
                      progress=not args.quiet, **common)
  print(json.dumps(summary, ensure_ascii=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
