"""Evaluate generated lip-sync videos with the paper's metrics (FID, SSIM, PSNR, LSE-D, LSE-C).

    # the paper's test lists (format below), resumable, one row per setting
    python -m diff2lip_jax.evaluate --setting reconstruction \\
        --filelist voxceleb2_test_n_5000_reconstruction_5k.txt --root VOX2_TEST_MP4 \\
        --generated_dir GENERATED --out_dir eval/recon \\
        --syncnet_v2 syncnet_v2.model --fid_weights pt_inception-2015-12-05-6726825d.pth
    # the same list split over 4 processes (or hosts), then the table over all shards
    python -m diff2lip_jax.evaluate ... --process_index I --process_count 4
    python -m diff2lip_jax.evaluate --merge eval/recon eval/cross
    # single videos / explicit pairs ('generated [reference]' per line, relative to --root)
    python -m diff2lip_jax.evaluate --generated out.mp4 --reference face.mp4
    python -m diff2lip_jax.evaluate --pairs pairs.txt --root DIR

Metrics (per video, then the mean over videos; FID over all frames of a setting):
  FID         pytorch-fid's Inception (pool3, `--fid_dims`) on 128x128 face crops of the
              generated frames vs. the real video's (reconstruction: the ground truth; cross:
              the dubbed footage); float64 statistics accumulated video by video.
              Needs --fid_weights (pytorch-fid's pt_inception-2015-12-05-6726825d.pth).
  SSIM, PSNR  generated vs. ground-truth frames (reconstruction and --reference only), 96x96
              face crops (`--region face`) or whole frames; PSNR capped at 100 dB.
  LSE-D/LSE-C joonson/syncnet_python's SyncNet, MFCCs, 224x224 crops and +-vshift offset
              search (`evaluation.lse`), on the generated video's own audio. Needs
              --syncnet_v2 (syncnet_python's data/syncnet_v2.model; read without unpickling).
  wav2lip_expert_lse_d/_c  the same search with the Wav2Lip-style expert (--syncnet); a
              separate metric on that expert's scale, not the published LSE.
  sync_r      synthetic-face videos only (--synthetic).
Metrics whose weights are not given are reported as skipped, with the flag that enables them.

Output (--out_dir): results.<i>-of-<N>.jsonl (one JSON line per video, fsynced; failures are
lines with "error"), fid.<i>-of-<N>.npz (FID sums), run.json (settings), summary.md and
summary.json (the table). Re-running the same command resumes: recorded videos are skipped
(failed ones too unless --retry_failed). Process I of N takes the list's items I, I+N, ...;
the table over all processes is written by the single process of an N=1 run or by --merge.
Exit status 1 if any video failed.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any, Sequence

from diff2lip_jax.evaluation import clip_metrics, filelists, runner, summary


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m diff2lip_jax.evaluate",
                              description=__doc__ + "\nTest lists:\n" + filelists.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  g = p.add_argument_group("what to evaluate")
  g.add_argument("--filelist", help="a test list (format above)")
  g.add_argument("--setting", choices=filelists.SETTINGS, help="the --filelist's setting")
  g.add_argument("--generated_dir", help="directory of the generated videos of --filelist")
  g.add_argument("--naming", choices=filelists.NAMINGS, default="diff2lip",
                 help="how the generated videos of --filelist are named (above)")
  g.add_argument("--ext", default=".mp4", help="extension of the clips of --filelist")
  g.add_argument("--root", default=".", help="directory the list's clips are relative to")
  g.add_argument("--generated", nargs="+", default=[], help="generated video(s)")
  g.add_argument("--reference", nargs="+", default=[],
                 help="ground-truth video(s), one per --generated (PSNR/SSIM, FID's real set)")
  g.add_argument("--pairs", help="text file: 'generated [reference]' per line, under --root")
  g.add_argument("--merge", nargs="+", metavar="OUT_DIR",
                 help="only write the table of finished runs' directories (one row each)")
  g = p.add_argument_group("metrics")
  g.add_argument("--syncnet_v2", help="syncnet_python's syncnet_v2.model (LSE-D/LSE-C)")
  g.add_argument("--fid_weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
  g.add_argument("--fid_dims", type=int, default=2048, choices=(64, 192, 768, 2048),
                 help="Inception features for FID (pytorch-fid's --dims)")
  g.add_argument("--fid_method", choices=("sqrtm", "eigh"), default="sqrtm",
                 help="Fréchet distance: pytorch-fid's sqrtm, or the faster symmetric form")
  g.add_argument("--syncnet", help="Wav2Lip-style expert (.pth or train_syncnet dir): "
                 "wav2lip_expert_lse_d/_c")
  g.add_argument("--synthetic", action="store_true", help="also the synthetic sync score")
  g.add_argument("--crop", nargs="+", default=["voxceleb2"],
                 help="face crop: voxceleb2, s3fd (needs --s3fd_weights) or box X1,Y1,X2,Y2")
  g.add_argument("--s3fd_weights", help="S3FD checkpoint for --crop s3fd")
  g.add_argument("--region", choices=("face", "full"), default="face",
                 help="PSNR/SSIM on the face crop (96x96) or on whole frames")
  g.add_argument("--lse_crop", choices=clip_metrics.LSE_CROPS, default="track",
                 help="LSE input: syncnet_python's crop around the --crop boxes, or whole "
                 "frames resized (Wav2Lip's LRS evaluation)")
  g.add_argument("--vshift", type=int, default=15, help="LSE offset search range (frames)")
  g = p.add_argument_group("run")
  g.add_argument("--out_dir", help="results directory (resumable); without it nothing is "
                 "kept but --out")
  g.add_argument("--out", help="also write one JSON report (records and table) here")
  g.add_argument("--process_index", type=int, default=0, help="this process (0-based)")
  g.add_argument("--process_count", type=int, default=1, help="processes sharing the list")
  g.add_argument("--retry_failed", action="store_true", help="re-run recorded failures")
  g.add_argument("--checkpoint_every", type=int, default=25,
                 help="save the FID sums every N videos (and at the end)")
  g.add_argument("--lse_batch_size", type=int, default=20, help="SyncNet windows per batch")
  g.add_argument("--fid_batch_size", type=int, default=50, help="Inception images per batch")
  g.add_argument("--single_device", action="store_true",
                 help="run the networks on one device instead of all local devices")
  g.add_argument("--no_progress", action="store_true", help="no progress bar")
  return p


def _items(args, parser) -> tuple[list[filelists.EvalItem], str]:
  if args.filelist:
    if not args.setting or not args.generated_dir:
      parser.error("--filelist needs --setting and --generated_dir")
    return filelists.parse_filelist(args.filelist, args.setting, generated_dir=args.generated_dir,
                                    root=args.root, naming=args.naming, ext=args.ext), args.setting
  pairs: list[tuple[str, str | None]] = []
  if args.pairs:
    root = pathlib.Path(args.root)
    with open(args.pairs, encoding="utf-8") as f:
      for line in f:
        words = line.split()
        if words and not words[0].startswith("#"):
          pairs.append((str(root / words[0]), str(root / words[1]) if len(words) > 1 else None))
  if args.reference and len(args.reference) != len(args.generated):
    parser.error("give one --reference per --generated video")
  pairs += list(zip(args.generated, args.reference or [None] * len(args.generated)))
  if not pairs:
    parser.error("give --filelist, --generated videos, --pairs or --merge")
  return filelists.pair_items(pairs), "pairs"


def _suite(args) -> clip_metrics.MetricSuite:
  import jax  # pylint: disable=import-outside-toplevel
  from data_pipelines import face_crops  # pylint: disable=import-outside-toplevel
  from diff2lip_jax.evaluation import evaluate, fid, lse  # pylint: disable=import-outside-toplevel
  crop = face_crops.parse_crop(args.crop)
  placement = {"fixed_batch": True,
               "devices": None if args.single_device else jax.local_devices()}
  return clip_metrics.MetricSuite(
      crop=crop, detector=face_crops.load_detector(crop, args.s3fd_weights),
      syncnet_v2=(lse.SyncNetV2Scorer(args.syncnet_v2, args.lse_batch_size, **placement)
                  if args.syncnet_v2 else None),
      inception=(fid.InceptionFeatures(args.fid_weights, args.fid_batch_size, **placement)
                 if args.fid_weights else None),
      fid_dims=args.fid_dims, expert=evaluate.SyncNetScorer(args.syncnet) if args.syncnet
      else None, synthetic=args.synthetic, region=args.region, vshift=args.vshift,
      lse_crop=args.lse_crop, image_metrics=evaluate.image_metrics())


def _run_settings(args, suite: clip_metrics.MetricSuite) -> dict[str, Any]:
  absolute = {k: os.path.abspath(v) if v else None
              for k, v in (("filelist", args.filelist), ("generated_dir", args.generated_dir),
                           ("root", args.root), ("syncnet_v2", args.syncnet_v2),
                           ("fid_weights", args.fid_weights), ("syncnet", args.syncnet))}
  return {**absolute, "naming": args.naming, "crop": list(args.crop), "region": args.region,
          "lse_crop": args.lse_crop, "vshift": args.vshift, "fid_dims": args.fid_dims,
          "synthetic": args.synthetic, "skipped": suite.skipped()}


def _report(args, rows, records) -> None:
  if args.out:
    out = pathlib.Path(args.out)
    temp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    temp.write_text(json.dumps({"summary": rows, "videos": records,
                                "failures": [r for r in records if "error" in r]}, indent=2)
                    + "\n", encoding="utf-8")
    os.replace(temp, out)


def _merge(args) -> int:
  rows = [summary.load_run(d, args.fid_method) for d in args.merge]
  text = summary.write_summary(args.out_dir or args.merge[0], rows)
  print(text, end="")
  _report(args, rows, [])
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    if args.merge:
      return _merge(args)
    items, setting = _items(args, parser)
    if args.out:  # before any scoring: never an input, never a path through a file
      from diff2lip_jax.inference import outputs  # pylint: disable=import-outside-toplevel
      inputs = [p for item in items for p in (item.generated, item.reference, item.real) if p]
      outputs.check_output(args.out, inputs, overwrite=True)
      outputs.make_parent(args.out)
    suite = _suite(args)
    opts = runner.RunOptions(setting=setting, out_dir=args.out_dir,
                             process_index=args.process_index, process_count=args.process_count,
                             retry_failed=args.retry_failed,
                             checkpoint_every=max(1, args.checkpoint_every),
                             progress=not args.no_progress, settings=_run_settings(args, suite))
    result = runner.run_shard(items, suite, opts)
    if args.out_dir and args.process_count == 1:
      rows = [summary.load_run(args.out_dir, args.fid_method)]
      text = summary.write_summary(args.out_dir, rows)
    else:
      rows = [summary.setting_row(setting, result.records, result.moments, suite.skipped(),
                                  args.fid_method)]
      text = summary.markdown_table(rows)
      if args.out_dir:
        text += (f"(process {args.process_index} of {args.process_count} only; when all have "
                 f"finished: python -m diff2lip_jax.evaluate --merge {args.out_dir})\n")
  except (ValueError, OSError) as error:
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    return 1
  print(text, end="")
  _report(args, rows, result.records)
  failed = sum("error" in r for r in result.records)
  print(f"{len(result.records) - failed} evaluated, {failed} failed")
  return 1 if failed else 0
