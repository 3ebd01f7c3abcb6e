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

Resuming: re-running with the same ``--out_dir`` skips every clip listed in the manifest (written
or failed; ``--retry_failed`` retries the failed ones). Clips whose shard was not finished
(crash, Ctrl-C) are not in the manifest and are processed again; leftover ``.tmp-*`` files are
removed. The settings that shape records (size, fps, crop, format) must match the first run.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from data_pipelines import face_check, face_crops, shards

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".m4v", ".mpg", ".mpeg")
MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
WAV2LIP_PADS = (0, 10, 0, 0)  # the s3fd pads of Wav2Lip's preprocessing (keeps the chin)


class ClipSkipped(ValueError):
  """A clip that is readable but unsuitable (silent, too short)."""


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """How each clip is turned into a record (see ``--help`` for the meaning of each field).

  ``crop`` is the shared face-crop specification (``face_crops.CropSpec``: kind, box, pads,
  smoothing, no-face policy); ``s3fd_weights`` the detector checkpoint for kind "s3fd".
  """
  crop: face_crops.CropSpec = face_crops.CropSpec("voxceleb2", pads=WAV2LIP_PADS)
  s3fd_weights: str | None = None
  image_size: int = 128
  fps: float = 25.0
  window: int = 5
  jpeg_quality: int = shards.JPEG_QUALITY
  keep_silent: bool = False
  silence_dbfs: float = -60.0
  face_check: bool = True  # fixed crops: skip clips with no face in any sampled frame

  def record_settings(self) -> dict:
    """Settings that must agree between runs writing into one output directory."""
    return {"image_size": self.image_size, "fps": self.fps, "crop": self.crop.kind,
            "box": list(self.crop.box) if self.crop.box else None}


def find_videos(input_path: str, root: str | None = None,
                video_ext: str = ".mp4") -> list[tuple[str, str]]:
  """``(path, clip_id)`` of every video under a directory or listed in a filelist, sorted."""
  if os.path.isdir(input_path):
    found = []
    for folder, subfolders, names in os.walk(input_path):
      subfolders.sort()
      for name in sorted(names):
        if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
          path = os.path.join(folder, name)
          found.append((path, _clip_id(os.path.relpath(path, input_path))))
    return found
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f"--input {input_path!r} is neither a directory nor a filelist")
  base = root if root is not None else os.path.dirname(os.path.abspath(input_path))
  found = []
  with open(input_path, encoding="utf-8") as lines:
    for line in lines:
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      entry = line if os.path.isfile(os.path.join(base, line)) else line.split()[0]
      if not os.path.splitext(entry)[1]:
        entry += video_ext
      found.append((os.path.join(base, entry), _clip_id(entry)))
  return found


def _clip_id(relative_path: str) -> str:
  return os.path.splitext(relative_path)[0].replace(os.sep, "/")


def process_video(path: str, clip_id: str, options: PrepareOptions, detector=None,
                  face_checker=None) -> bytes:
  """One video -> serialized clip record. Raises with a specific message when it cannot be used.

  ``face_checker``: a face detector; the clip is refused when it finds no face in any sampled
  frame (``face_check.FaceCheck``)."""
  from data_pipelines import audio, crops, video_io  # pylint: disable=import-outside-toplevel
  from data_pipelines.input_pipeline import clip_is_trainable  # pylint: disable=import-outside-toplevel
  wav = audio.load_audio(path)
  peak = float(np.max(np.abs(wav)))
  if not options.keep_silent and peak <= 10 ** (options.silence_dbfs / 20):
    peak_db = 20 * np.log10(max(peak, 1e-12))
    raise ClipSkipped(f"silent audio (peak {peak_db:.1f} dBFS <= {options.silence_dbfs} dBFS); "
                      "pass --keep_silent to keep silent clips")
  mel = audio.melspectrogram(wav)
  spec, per_frame_boxes = options.crop, None
  if spec.needs_detector:  # a first pass over the video finds the faces
    detections, frame_size = [], None
    for chunk in video_io.iter_video_chunks(path, fps=options.fps):
      detections.extend(detector.detect(chunk, batch_size=spec.detector_batch_size))
      frame_size = chunk.shape[1:3]
    per_frame_boxes = face_crops.frame_boxes(spec, frame_size, len(detections), detections)
  frames_jpeg, boxes = [], []
  check = face_check.FaceCheck(face_checker, options.fps) if face_checker is not None else None
  for chunk in video_io.iter_video_chunks(path, fps=options.fps):
    if check is not None:
      check.add(chunk)
    if per_frame_boxes is not None:
      chunk_boxes = per_frame_boxes[len(boxes):len(boxes) + len(chunk)]
    else:
      chunk_boxes = face_crops.frame_boxes(spec, chunk.shape[1:3], len(chunk))
    pixels = crops.crop_uint8(chunk, chunk_boxes, size=options.image_size)
    frames_jpeg.extend(shards.encode_jpeg(frame, options.jpeg_quality) for frame in pixels)
    boxes.extend(chunk_boxes)
  if check is not None:
    check.verify()
  if not clip_is_trainable(len(frames_jpeg), mel.shape[0], options.fps, options.window):
    raise ClipSkipped(f"too short: {len(frames_jpeg)} frames and {len(wav) / audio.SAMPLE_RATE:.2f}"
                      f" s of audio; training needs a {options.window}-frame window with audio "
                      "plus a separate reference window (>= 10 frames)")
  record = shards.ClipRecord(clip_id=clip_id, frames_jpeg=frames_jpeg, mel=mel, fps=options.fps,
                             boxes=np.asarray(boxes, np.float32), source=path)
  return _serializer(options.image_size).serialize(record)


@functools.lru_cache(maxsize=4)
def _serializer(image_size: int) -> shards.ClipSerializer:
  return shards.ClipSerializer(image_size)


_WORKER: dict = {}


def _init_worker(options: PrepareOptions) -> None:
  _WORKER["options"] = options
  _WORKER["detector"] = face_crops.load_detector(options.crop, options.s3fd_weights)
  _WORKER["face_checker"] = face_check.make_detector(options.face_check, options.crop,
                                                     options.s3fd_weights)


def _run_job(job: tuple[str, str]) -> tuple[str, str, bytes | None, str | None]:
  """(path, clip_id) -> (path, clip_id, record or None, failure reason or None)."""
  path, clip_id = job
  try:
    workers = (_WORKER["options"], _WORKER["detector"], _WORKER["face_checker"])
    return path, clip_id, process_video(path, clip_id, *workers), None
  except Exception as error:  # any failure of one clip is recorded, never fatal to the run
    reason = f"{type(error).__name__}: {error}".replace("\n", " ")
    return path, clip_id, None, reason


def _map_jobs(jobs: list[tuple[str, str]], options: PrepareOptions,
              num_workers: int) -> Iterator[tuple[str, str, bytes | None, str | None]]:
  if num_workers <= 0:
    _init_worker(options)
    yield from map(_run_job, jobs)
    return
  context = multiprocessing.get_context("spawn")  # no fork: safe with JAX / threads in the parent
  with context.Pool(num_workers, initializer=_init_worker, initargs=(options,)) as pool:
    yield from pool.imap(_run_job, jobs, chunksize=1)


class Manifest:
  """``manifest.json`` + ``failures.jsonl`` of an output directory, rewritten atomically."""

  def __init__(self, out_dir: str, settings: dict, retry_failed: bool = False):
    self.out_dir = out_dir
    self.path = os.path.join(out_dir, MANIFEST)
    self.data = {"version": 1, "settings": settings, "runs": 0, "shards": {}, "failed": {}}
    if os.path.exists(self.path):
      with open(self.path, encoding="utf-8") as f:
        self.data = json.load(f)
      if self.data["settings"] != settings:
        raise ValueError(f"{out_dir} was prepared with {self.data['settings']}, not {settings}; "
                         "use another --out_dir or the same settings")
    missing = [name for name in self.data["shards"]
               if not os.path.exists(os.path.join(out_dir, name))]
    for name in missing:  # a deleted shard's clips are simply processed again
      print(f"warning: shard {name} listed in {MANIFEST} is missing; its clips will be redone",
            file=sys.stderr)
      del self.data["shards"][name]
    if retry_failed:
      self.data["failed"] = {}

  def done_ids(self) -> set[str]:
    written = {clip for clips in self.data["shards"].values() for clip in clips}
    return written | set(self.data["failed"])

  def add_shard(self, name: str, clip_ids: list[str]) -> None:
    self.data["shards"][name] = clip_ids

  def add_failure(self, clip_id: str, path: str, reason: str) -> None:
    self.data["failed"][clip_id] = {"path": path, "reason": reason}

  def save(self) -> None:
    _atomic_write(self.path, json.dumps(self.data, indent=1, ensure_ascii=False))
    lines = [json.dumps({"clip_id": clip_id, **entry}, ensure_ascii=False) + "\n"
             for clip_id, entry in sorted(self.data["failed"].items())]
    _atomic_write(os.path.join(self.out_dir, FAILURES), "".join(lines))


def _atomic_write(path: str, text: str) -> None:
  tmp = os.path.join(os.path.dirname(path), f"{shards.TMP_PREFIX}{os.getpid()}-{os.path.basename(path)}")
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def prepare(input_path: str, out_dir: str, options: PrepareOptions = PrepareOptions(), *,
            num_workers: int = 0, clips_per_shard: int = 256, format: str = "tfrecord",  # pylint: disable=redefined-builtin
            root: str | None = None, video_ext: str = ".mp4", retry_failed: bool = False,
            progress: bool = True) -> dict:
  """Processes every not-yet-finished video into shards; returns a summary dict (see module doc)."""
  if options.crop.needs_detector and not (options.s3fd_weights
                                          and os.path.isfile(options.s3fd_weights)):
    raise FileNotFoundError(f"--crop s3fd needs --s3fd_weights FILE (got {options.s3fd_weights!r}); "
                            "supply the S3FD checkpoint (e.g. Wav2Lip's s3fd.pth) yourself")
  face_check.make_detector(options.face_check, options.crop, options.s3fd_weights)  # fail early
  videos = find_videos(input_path, root, video_ext)  # a bad --input creates no --out_dir
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise NotADirectoryError(f"--out_dir {out_dir} is a file; give a directory for the shards")
  os.makedirs(out_dir, exist_ok=True)
  for name in os.listdir(out_dir):
    if name.startswith(shards.TMP_PREFIX):  # leftovers of an interrupted run
      os.remove(os.path.join(out_dir, name))
  manifest = Manifest(out_dir, {**options.record_settings(), "format": format}, retry_failed)
  done = manifest.done_ids()
  jobs, seen = [], set()
  for path, clip_id in videos:
    if clip_id in seen:
      manifest.add_failure(clip_id, path, "duplicate clip id: another input has the same path "
                           "without extension; rename one of them")
      continue
    seen.add(clip_id)
    if clip_id not in done:
      jobs.append((path, clip_id))
  run = manifest.data["runs"]
  manifest.data["runs"] = run + 1
  summary = {"videos": len(seen), "already_done": len(seen & done), "written": 0, "failed": 0,
             "shards": []}
  serializer = shards.ClipSerializer(options.image_size)
  serializer.save_features(out_dir)
  writer, shard_clips = None, []

  def finish_shard():
    nonlocal writer, shard_clips
    if writer is not None:
      manifest.add_shard(os.path.basename(writer.close()), shard_clips)
      summary["shards"].append(writer.path)
      manifest.save()
    writer, shard_clips = None, []

  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  bar = tqdm(total=len(jobs), unit="clip", desc="prepare", disable=not progress)
  try:
    for path, clip_id, record, reason in _map_jobs(jobs, options, num_workers):
      if record is None:
        manifest.add_failure(clip_id, path, reason)
        summary["failed"] += 1
      else:
        if writer is None:
          name = f"clips-r{run:03d}-{len(summary['shards']):05d}{shards.FORMATS[format]}"
          writer = shards.ShardWriter(os.path.join(out_dir, name), format)
        writer.write(record)
        shard_clips.append(clip_id)
        summary["written"] += 1
        if len(shard_clips) >= clips_per_shard:
          finish_shard()
      bar.update(1)
      bar.set_postfix(written=summary["written"], failed=summary["failed"])
    finish_shard()
  finally:
    bar.close()
    if writer is not None:  # interrupted: the partial shard's clips are redone next time
      writer.abort()
    manifest.save()
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
      "--s3fd_weights); box: one fixed --box for every frame")
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
      help="worker processes (0: run in this process)")
  add("--retry_failed", action="store_true", help="retry clips listed as failed by earlier runs")
  add("--quiet", action="store_true", help="no progress bar")
  return parser


def main(argv: Sequence[str] | None = None) -> int:  # user errors: one ``error:`` line
  from diff2lip_jax import cli  # pylint: disable=import-outside-toplevel
  return cli.run(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.crop == "box" and args.box is None:
    parser.error("--crop box needs --box x1,y1,x2,y2")
  try:
    crop = face_crops.CropSpec(args.crop, box=args.box if args.crop == "box" else None,
                               pads=args.pads, smooth_window=args.smooth_window,
                               no_face=args.no_face)
  except face_crops.CropError as error:
    parser.error(str(error))
  options = PrepareOptions(
      crop=crop, s3fd_weights=args.s3fd_weights, image_size=args.size, fps=args.fps,
      window=args.window, jpeg_quality=args.jpeg_quality, keep_silent=args.keep_silent,
      silence_dbfs=args.silence_dbfs, face_check=args.face_check == "auto")
  summary = prepare(args.input, args.out_dir, options, num_workers=args.num_workers,
                    clips_per_shard=args.clips_per_shard, format=args.format, root=args.root,
                    video_ext=args.video_ext, retry_failed=args.retry_failed,
                    progress=not args.quiet)
  print(json.dumps(summary, ensure_ascii=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
