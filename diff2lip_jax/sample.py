"""Lip-sync a face video to a speech track: video + audio -> mp4 (25 fps, H.264 + AAC).

    python -m diff2lip_jax.sample --checkpoint CKPT --video face.mp4 --audio speech.wav \\
        --out out.mp4 [--mode cross|reconstruction] [--crop voxceleb2|s3fd|box X1,Y1,X2,Y2]

    python -m diff2lip_jax.sample --checkpoint CKPT --filelist pairs.txt --root DIR \\
        --out_dir OUT        # one "audio video" pair per line, relative to --root

CKPT is a directory written by `python -m diff2lip_jax.convert` or a training --workdir.
Filelist lines follow the reference (`audio_name video_name`, '.mp4' added when a name has no
extension); outputs are OUT/<audio>_<video>.mp4 with '/' replaced by '.'. Failed pairs are
skipped, listed in OUT/failures.txt and summarised; the exit status is 1 if any failed.
Sampling uses every local device (frames split over them). Started as several processes
(--distributed, one per host or GPU), process I of N takes the filelist's pairs I, I+N, ... and
writes its failures to OUT/failures.I.txt.
Exit status: 0 success, 1 an input or checkpoint could not be used (message on stderr),
2 bad command line.
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
  batch.add_argument("--filelist", help="text file with one 'audio video' pair per line")
  batch.add_argument("--root", default=".", help="directory the filelist paths are relative to")
  batch.add_argument("--out_dir", help="directory for the outputs and failures.txt")
  batch.add_argument("--skip_existing", action="store_true",
                     help="leave pairs whose output already exists (outputs are atomic)")
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
  g.add_argument("--paste", choices=("lower_half", "box"), default="lower_half",
                 help="lower_half: only the generated mouth region changes; box: the whole "
                      "resized crop is pasted back as the reference does")
  c = p.add_argument_group("face crops")
  c.add_argument("--crop", nargs="+", default=["voxceleb2"], metavar="KIND",
                 help="voxceleb2 (fixed crop of VoxCeleb2-style frames), s3fd (face detection, "
                      "needs --s3fd_weights) or 'box X1,Y1,X2,Y2' (pixels, exclusive ends)")
  c.add_argument("--s3fd_weights", help="S3FD checkpoint (s3fd.pth) for --crop s3fd")
  c.add_argument("--pads", default="0,0,0,0",
                 help="s3fd: pixels added top,bottom,left,right (Diff2Lip: 0,0,0,0)")
  c.add_argument("--smooth_window", type=int, default=5, help="s3fd: box smoothing window")
  c.add_argument("--no_face", choices=("error", "nearest", "interpolate"), default="error",
                 help="s3fd: frames without a face fail (listed) or borrow neighbouring boxes")
  c.add_argument("--face_det_batch_size", type=int, default=16, help="s3fd frames per batch")
  c.add_argument("--resize", choices=("area", "bilinear"), default="area",
                 help="crop resize (area: as the data preparation; bilinear: cv2 default)")
  s = p.add_argument_group("sampler (defaults from the checkpoint's config.sampling)")
  s.add_argument("--respacing", help="e.g. ddim25, ddim50, 250, '' for all 1000 steps")
  s.add_argument("--sampler", metavar="NAME",
                 help="ddim, ddpm, dpmpp_2m (DPM-Solver++(2M)) or unipc (UniPC-2); the ODE "
                      "solvers reach DDIM-25 quality with fewer steps (--respacing)")
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


def _resolve(root: pathlib.Path, name: str) -> pathlib.Path:
  path = root / name
  if not path.exists() and not path.suffix:
    return root / (name + ".mp4")
  return path


def _output_name(audio_name: str, video_name: str) -> str:
  strip = lambda n: os.path.splitext(n)[0] if os.path.splitext(n)[1] else n
  return (strip(audio_name).replace("/", ".") + "_" + strip(video_name).replace("/", ".")
          + ".mp4")


def read_filelist(path: str) -> list[tuple[int, str, list[str]]]:
  """``(line number, raw line, words)`` of each non-empty, non-comment line."""
  with open(path, encoding="utf-8") as f:
    return [(n, line.rstrip("\n"), line.split()) for n, line in enumerate(f, 1)
            if line.strip() and not line.lstrip().startswith("#")]


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


def run_filelist(args, sampler, run_pair, process: tuple[int, int] = (0, 1)) -> int:
  """Runs this process's share of the filelist's pairs; ``process``: (index, count)."""
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  root = pathlib.Path(args.root)
  entries = process_share(read_filelist(args.filelist), *process)
  written, skipped, failures = 0, 0, []
  started = time.time()
  for number, line, words in entries:
    if len(words) != 2:
      failures.append(f"line {number}: {line}\tmalformed: expected 'audio video', got "
                      f"{len(words)} fields")
      continue
    audio_name, video_name = words
    out = out_dir / _output_name(audio_name, video_name)
    if args.skip_existing and out.exists():
      skipped += 1
      continue
    try:
      result = run_pair(_resolve(root, video_name), _resolve(root, audio_name), out)
      written += 1
      if not args.quiet:
        print(f"[{number}] wrote {out} ({result.num_frames} frames, "
              f"{result.frames_per_second:.1f} frames/s)", file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - a batch goes on past any bad pair
      failures.append(f"line {number}: {audio_name} {video_name}\t{_one_line(error)}")
      print(f"[{number}] FAILED {audio_name} {video_name}: {_one_line(error)}",
            file=sys.stderr)
  failures_path = out_dir / failures_name(*process)
  temp = failures_path.with_name(f".failures.{os.getpid()}.partial")
  temp.write_text("".join(f + "\n" for f in failures), encoding="utf-8")
  os.replace(temp, failures_path)
  print(f"{len(entries)} pairs: {written} written, {len(failures)} failed, {skipped} skipped "
        f"(existing) in {time.time() - started:.1f} s; failures: {failures_path}")
  return 1 if failures else 0


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

  from data_pipelines import face_crops
  from diff2lip_jax import inference
  try:
    crop = inference.parse_crop(args.crop, pads=_ints(args.pads, 4, "--pads"),
                                smooth_window=args.smooth_window, no_face=args.no_face,
                                detector_batch_size=args.face_det_batch_size)
    detector = face_crops.load_detector(crop, args.s3fd_weights)
    sampler = inference.Diff2LipSampler.from_checkpoint(
        args.checkpoint, respacing=args.respacing, sampler="ddpm" if args.ddpm else args.sampler,
        eta=args.eta, seed=args.seed, batch_size=args.batch_size, dtype=args.dtype)
  except (ValueError, OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  if not args.quiet:
    print(f"sampler: {sampler.describe()}", file=sys.stderr)

  def run_pair(video, audio, out):
    return inference.lip_sync_video(
        sampler, video, audio, out, mode=args.mode, ref_frame=args.ref_frame, crop=crop,
        detector=detector, loop_video=args.loop_video, resize_method=args.resize,
        paste=args.paste, crf=args.crf, preset=args.preset, progress=not args.quiet,
        cache_dir=args.cache_dir)

  if args.filelist:
    try:
      import jax
      return run_filelist(args, sampler, run_pair, (jax.process_index(), jax.process_count()))
    except OSError as error:
      print(f"error: {error}", file=sys.stderr)
      return 1
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  try:
    result = run_pair(args.video, args.audio, out)
  except (ValueError, OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  looped = " (video looped)" if result.looped else ""
  print(f"wrote {result.out_path}: {result.num_frames} frames at 25 fps{looped}, "
        f"{result.frames_per_second:.1f} frames/s end to end")
  return 0


if __name__ == "__main__":
  sys.exit(main())
