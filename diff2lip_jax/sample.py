"""Lip-sync a face video to a speech track: video + audio -> mp4 (25 fps, H.264 + AAC).

    python -m diff2lip_jax.sample --checkpoint CKPT --video face.mp4 --audio speech.wav \\
        --out out.mp4 [--mode cross|reconstruction] [--paste soft|lower_half|box]
        [--crop auto|hog|s3fd|voxceleb2|box X1,Y1,X2,Y2] [--no_face passthrough|error|...]

    python -m diff2lip_jax.sample --checkpoint CKPT --filelist pairs.txt --root DIR \\
        --out_dir OUT        # one "audio video" pair per line, relative to --root

CKPT is a directory written by `python -m diff2lip_jax.convert` or a training --workdir.
Filelist lines follow the reference (`audio_name video_name`, '.mp4' added when a name has no
extension); names with spaces: separate the two names by a TAB, or use a .csv filelist
(`"my speech.wav","my face.mp4"`); '#' lines are comments. Outputs are
OUT/<audio>_<video>.mp4 with '/' replaced by '.'; pairs that would share an output name are
refused before anything runs (listed). Failed pairs are skipped, listed in OUT/failures.txt
and summarised; the exit status is 1 if any failed.

Outputs: an output that is one of the inputs (also through a link) is refused; an existing
output is replaced only with --overwrite; files appear only when complete. SIGTERM / Ctrl-C
remove the partial output and the frame cache (exit status 143 / 130); leftovers of a killed
run (.<name>.<pid>.<id>.partial.mp4, TMPDIR/diff2lip_frames_<pid>_*) are removed by the next
run. Inputs are checked before the model is loaded.
Sampling uses every local device (frames split over them). Started as several processes
(--distributed, one per host or GPU), process I of N takes the filelist's pairs I, I+N, ... and
writes its failures to OUT/failures.I.txt.
Exit status: 0 success, 1 an input or checkpoint could not be used (message on stderr),
2 bad command line, 130/143 interrupted.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from typing import Sequence

from diff2lip_jax import cli

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv")
# Kept here (not imported) so --help needs no numpy; tests check they equal crops.PASTE_MODES and
# face_crops.NO_FACE_POLICIES.
PASTE_MODES = ("soft", "lower_half", "box")
NO_FACE_POLICIES = ("passthrough", "error", "nearest", "interpolate")


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m diff2lip_jax.sample", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True,
                 help="converted checkpoint directory or training workdir")
  io = p.add_argument_group("one pair")
  io.add_argument("--video", help="face video (any frame rate; resampled to 25 fps)")
  io.add_argument("--audio", help="speech: any file with an audio track (wav, mp3, a video)")
  io.add_argument("--out", help="output video path (.mp4)")
  batch = p.add_argument_group("filelist")
  batch.add_argument("--filelist", help="text file with one 'audio video' pair per line (TAB- "
                     "separated when names contain spaces, or a .csv file)")
  batch.add_argument("--root", default=".", help="directory the filelist paths are relative to")
  batch.add_argument("--out_dir", help="directory for the outputs and failures.txt")
  batch.add_argument("--skip_existing", action="store_true",
                     help="leave pairs whose output already exists (outputs are atomic)")
  batch.add_argument("--overwrite", action="store_true",
                     help="replace existing outputs (--out or filelist outputs; never an input)")
  g = p.add_argument_group("generation")
  g.add_argument("--mode", choices=("cross", "reconstruction"), default="cross",
                 help="cross: every frame is the input; reconstruction: the first frame drives "
                      "the whole clip (default: cross)")
  g.add_argument("--ref_frame", choices=("gt", "first_frame", "random"), default=None,
                 help="identity reference: the frame itself, the first frame or a seeded random "
                      "frame (default: gt for cross, first_frame for reconstruction)")
  g.add_argument("--loop_video", action="store_true",
                 help="play the video forward and backward to cover longer audio (default: the "
                      "output stops at the shorter of video and audio)")
  g.add_argument("--paste", choices=PASTE_MODES, default="soft",
                 help="soft: the generated lower half blended in through a feathered mask (no "
                      "visible seam); lower_half: the same rows pasted as a hard rectangle; "
                      "box: the whole resized crop, as the reference (default: soft; "
                      "docs/paste_back.md)")
  g.add_argument("--color_match", action="store_true",
                 help="soft paste: match the generated colours to the frame's around the seam")
  c = p.add_argument_group("face crops")
  c.add_argument("--crop", nargs="+", default=["auto"], metavar="KIND",
                 help="auto (face detection: S3FD if its weights are found, else dlib's bundled "
                      "HOG detector), hog, s3fd, voxceleb2 (fixed crop of VoxCeleb2-framed "
                      "frames) or box X1,Y1,X2,Y2 (pixels, exclusive ends; e.g. --crop box "
                      "10,20,110,140) (default: auto)")
  c.add_argument("--s3fd_weights",
                 help="S3FD checkpoint (Wav2Lip's s3fd.pth) for --crop auto/s3fd; default: "
                      "$DIFF2LIP_S3FD_WEIGHTS, else ~/.cache/diff2lip/s3fd.pth if it exists")
  c.add_argument("--aspect", choices=("pad", "squash"), default="pad",
                 help="pad: grow the face box to a square so the face keeps its shape; squash: "
                      "resize the box as it is, as the reference (default: pad)")
  c.add_argument("--pads", default="0,0,0,0",
                 help="detection: pixels added top,bottom,left,right (Diff2Lip: 0,0,0,0)")
  c.add_argument("--smooth_window", type=int, default=5, help="detection: box smoothing window")
  c.add_argument("--no_face", choices=NO_FACE_POLICIES, default="passthrough",
                 help="detection: frames without a face are written unchanged (passthrough, "
                      "default), fail the video (error, listed) or borrow neighbouring boxes")
  c.add_argument("--face_det_batch_size", type=int, default=16, help="frames per detector call")
  c.add_argument("--resize", choices=("area", "bilinear"), default="area",
                 help="crop resize (area: as the data preparation; bilinear: cv2 default)")
  s = p.add_argument_group("sampler (defaults from the checkpoint's config.sampling)")
  s.add_argument("--respacing",
                 help="e.g. ddim25, ddim50, 250, logsnr10 (steps even in log-SNR), '' for all "
                      "1000 steps")
  s.add_argument("--sampler", metavar="NAME",
                 help="ddim, ddpm, dpmpp_2m (DPM-Solver++(2M)) or unipc (UniPC-2); with "
                      "--respacing logsnr10 the ODE solvers come closer to a 250-step result "
                      "than ddim25 does (benchmarks/RESULTS.md)")
  s.add_argument("--ddpm", action="store_true", help="same as --sampler ddpm")
  s.add_argument("--eta", type=float, help="DDIM eta (0: deterministic)")
  s.add_argument("--seed", type=int, help="seed of the shared noise image and random reference")
  s.add_argument("--batch_size", type=int, help="frames per device per sampler call")
  s.add_argument("--dtype", choices=("float32", "bfloat16"), help="compute dtype")
  o = p.add_argument_group("output")
  o.add_argument("--crf", type=int, default=18, help="H.264 quality (lower is better)")
  o.add_argument("--preset", default="medium", help="x264 preset (ultrafast .. veryslow)")
  o.add_argument("--cache_dir", help="temporary frame cache for --loop_video (default: TMPDIR)")
  o.add_argument("--quiet", action="store_true", help="no progress bars")
  cli.add_multihost_flags(p)
  return p


def _ints(text: str, count: int, name: str) -> tuple[int, ...]:
  try:
    values = tuple(int(v) for v in text.split(","))
  except ValueError:
    values = ()
  if len(values) != count:
    raise ValueError(f"{name} needs {count} comma-separated integers, got {text!r}")
  return values


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text}"


def process_share(entries: list, index: int, count: int) -> list:
  """The entries process ``index`` of ``count`` works on: ``entries[index::count]``."""
  if not 0 <= index < count:
    raise ValueError(f"process index {index} is not in 0..{count - 1}")
  return entries[index::count]


def failures_name(index: int, count: int) -> str:
  """``failures.txt`` for one process; ``failures.<index>.txt`` when several share OUT."""
  return "failures.txt" if count == 1 else f"failures.{index}.txt"


def plan_filelist(args, process: tuple[int, int] = (0, 1)) -> tuple[list[tuple], list[str], int]:
  """``(pairs to run, failure lines, skipped)`` of this process's share (``process``: index,
  count) of the filelist: every pair checked before the model is loaded.

  Raises OutputPathError when pairs would share an output name (all such names listed).
  """
  from diff2lip_jax import inference
  from diff2lip_jax.inference import filelist, outputs
  entries = filelist.read_filelist(args.filelist)
  clashes = filelist.collisions(entries)
  if clashes:
    raise outputs.OutputPathError(
        f"{args.filelist}: {len(clashes)} output name(s) would be written by several pairs "
        f"(outputs are <audio>_<video>.mp4): {'; '.join(clashes)}; remove the duplicates or "
        "rename the files")
  entries = process_share(entries, *process)
  out_dir = pathlib.Path(args.out_dir)
  root = pathlib.Path(args.root)
  pairs, failures, skipped = [], [], 0
  for entry in entries:
    if len(entry.fields) != 2:
      failures.append(f"line {entry.number}: {entry.line}\tmalformed: expected 'audio video', "
                      f"got {len(entry.fields)} fields")
      continue
    audio_name, video_name = entry.fields
    out = out_dir / entry.output_name
    if args.skip_existing and out.exists():
      skipped += 1
      continue
    video, audio = filelist.resolve(root, video_name), filelist.resolve(root, audio_name)
    try:
      outputs.check_output(out, (video, audio), args.overwrite, flag="output")
      inference.check_inputs(video, audio)
    except (ValueError, OSError) as error:
      failures.append(f"line {entry.number}: {audio_name} {video_name}\t{_one_line(error)}")
      print(f"[{entry.number}] FAILED {audio_name} {video_name}: {_one_line(error)}",
            file=sys.stderr)
      continue
    pairs.append((entry.number, video, audio, out))
  return pairs, failures, skipped


def run_filelist(args, planned: tuple[list[tuple], list[str], int], run_pair,
                 process: tuple[int, int] = (0, 1)) -> int:
  """Runs the planned pairs, writes OUT/failures.txt (``failures.I.txt`` for process I of
  several) and prints the summary."""
  from diff2lip_jax import inference
  from diff2lip_jax.inference import outputs
  pairs, failures, skipped = planned
  total = len(pairs) + len(failures) + skipped
  out_dir = pathlib.Path(args.out_dir)
  outputs.make_parent(out_dir / "failures.txt")
  written, started = 0, time.time()
  for number, video, audio, out in pairs:
    try:
      result = run_pair(video, audio, out)
      written += 1
      if not args.quiet:
        note = inference.length_note(result)
        print(f"[{number}] wrote {out} ({result.num_frames} frames, "
              f"{result.passed_through} passed through, "
              f"{result.frames_per_second:.1f} frames/s){'; ' + note if note else ''}",
              file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - a batch goes on past any bad pair
      failures.append(f"line {number}: {audio} {video}\t{_one_line(error)}")
      print(f"[{number}] FAILED {audio} {video}: {_one_line(error)}", file=sys.stderr)
  failures_path = out_dir / failures_name(*process)
  temp = failures_path.with_name(f".failures.{os.getpid()}.partial")
  temp.write_text("".join(f + "\n" for f in failures), encoding="utf-8")
  os.replace(temp, failures_path)
  print(f"{total} pairs: {written} written, {len(failures)} failed, {skipped} skipped "
        f"(existing) in {time.time() - started:.1f} s; failures: {failures_path}")
  return 1 if failures else 0


def check_single(args) -> None:
  """The one-pair inputs and output, checked before the model is loaded."""
  from diff2lip_jax import inference
  from diff2lip_jax.inference import outputs
  outputs.check_output(args.out, (args.video, args.audio), args.overwrite)
  inference.check_inputs(args.video, args.audio)


def run_single(args, run_pair) -> int:
  """Writes ``--out`` (its directory created, and removed again if the run fails)."""
  from diff2lip_jax import inference
  from diff2lip_jax.inference import outputs
  out = pathlib.Path(args.out)
  created = outputs.make_parent(out)
  try:
    result = run_pair(args.video, args.audio, out)
  except (ValueError, OSError) as error:
    outputs.remove_empty(created)
    print(f"error: {error}", file=sys.stderr)
    return 1
  except BaseException:
    outputs.remove_empty(created)
    raise
  looped = " (video looped)" if result.looped else ""
  print(f"wrote {result.out_path}: {result.num_frames} frames at 25 fps{looped}, "
        f"{result.passed_through} passed through unchanged (no face), "
        f"{result.frames_per_second:.1f} frames/s end to end")
  note = inference.length_note(result)
  if note:
    print(f"note: {note}", file=sys.stderr)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  single = [args.video, args.audio, args.out]
  if args.filelist:
    if any(single) or not args.out_dir:
      parser.error("--filelist takes --root and --out_dir, not --video/--audio/--out")
  elif not all(single):
    parser.error("give --video, --audio and --out (or --filelist with --out_dir)")
  elif pathlib.Path(args.out).suffix.lower() not in VIDEO_SUFFIXES:
    parser.error(f"--out must end in one of {', '.join(VIDEO_SUFFIXES)}, got {args.out!r}")
  from diff2lip_jax.diffusion import SAMPLERS
  if args.sampler is not None and args.sampler not in SAMPLERS:
    parser.error(f"--sampler must be one of {', '.join(SAMPLERS)}, got {args.sampler!r}")
  if args.ddpm and args.sampler not in (None, "ddpm"):
    parser.error(f"--ddpm asks for --sampler ddpm; it contradicts --sampler {args.sampler}")
  cli.init_distributed(args)

  from diff2lip_jax.inference import outputs
  try:
    with outputs.terminate_cleanly():
      return _generate(args)
  except outputs.Terminated as stop:
    print(f"error: {stop}; the partial output and frame cache were removed", file=sys.stderr)
    return stop.exit_status


def _generate(args) -> int:
  from data_pipelines import face_crops
  from diff2lip_jax import inference
  from diff2lip_jax.inference import outputs
  out_dir = args.out_dir if args.filelist else pathlib.Path(args.out).parent
  for line in outputs.remove_stale([out_dir, args.cache_dir]):
    print(line, file=sys.stderr)
  try:
    crop = inference.parse_crop(args.crop, pads=_ints(args.pads, 4, "--pads"),
                                smooth_window=args.smooth_window, no_face=args.no_face,
                                detector_batch_size=args.face_det_batch_size, aspect=args.aspect)
    import jax  # pylint: disable=import-outside-toplevel
    process = (jax.process_index(), jax.process_count())
    planned = plan_filelist(args, process) if args.filelist else check_single(args)
    detector = face_crops.load_detector(crop, args.s3fd_weights)
    sampler = None
    if not args.filelist or planned[0]:
      sampler = inference.Diff2LipSampler.from_checkpoint(
          args.checkpoint, respacing=args.respacing,
          sampler="ddpm" if args.ddpm else args.sampler, eta=args.eta, seed=args.seed,
          batch_size=args.batch_size, dtype=args.dtype)
  except (ValueError, OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  if not args.quiet and sampler is not None:
    print(f"sampler: {sampler.describe()}", file=sys.stderr)

  def run_pair(video, audio, out):
    return inference.lip_sync_video(
        sampler, video, audio, out, mode=args.mode, ref_frame=args.ref_frame, crop=crop,
        detector=detector, loop_video=args.loop_video, resize_method=args.resize,
        paste=args.paste, color_match=args.color_match, crf=args.crf, preset=args.preset,
        progress=not args.quiet, cache_dir=args.cache_dir)

  if args.filelist:
    try:
      return run_filelist(args, planned, run_pair, process)
    except OSError as error:
      print(f"error: {error}", file=sys.stderr)
      return 1
  return run_single(args, run_pair)


if __name__ == "__main__":
  sys.exit(main())
