"""Sampler quality vs model evaluations on the synthetic model: DDIM vs multistep ODE solvers.

    python benchmarks/bench_samplers.py --checkpoint runs/synthetic
    python benchmarks/bench_samplers.py --checkpoint runs/synthetic --evals 5,10 \\
        --samplers ddim,dpmpp_2m --spacing ddim,logsnr --out sampler_results.json

For every spacing, sampler and number of model evaluations K (respacing "ddimK", "K" for
``even`` or "logsnrK"; every sampler here evaluates the model once per respaced step):
- mouth_mae: mean absolute difference, in [0, 255] units, between its crops and those of a
  250-step DDIM run (``--reference``) from the same noise, over the generated (masked) lower
  half of the face, on ``--num_clips`` held-out clips driven by another clip's speech;
- lipsync_r: the synthetic lip-sync score (``evaluation.lipsync_score.score``: Pearson r
  between the measured mouth opening and the driving audio's true opening), per-clip mean and
  pooled, with the audio zeroed as a control.
Prints a table, then the JSON report (also written to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from data_pipelines import audio, synthetic  # noqa: E402
from diff2lip_jax.diffusion import SAMPLERS, sampling  # noqa: E402
from diff2lip_jax.evaluation import lipsync_score  # noqa: E402
from diff2lip_jax.inference import Diff2LipSampler  # noqa: E402

# Clip seeds for the mouth-error clips: held out from training (multiples of 1_000_003) and
# from the lip-sync score's own clips.
MOUTH_SEED_BASE = lipsync_score.SCORE_SEED_BASE + 500_000


SPACINGS = ("ddim", "even", "logsnr")


def respacing_for(evals: int, spacing: str) -> str:
  """The respacing giving ``evals`` model evaluations: "ddimK" (one integer stride, ends at
  (K-1)*stride), "K" (even in t, includes the last timestep) or "logsnrK" (even in
  log-SNR)."""
  if spacing not in SPACINGS:
    raise ValueError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
  return str(evals) if spacing == "even" else f"{spacing}{evals}"


def mouth_clips(num_clips: int, num_frames: int, size: int):
  """``[(frames [T,S,S,3] uint8, mel [M,80])]``: held-out faces driven by another clip's audio."""
  clips = []
  for i in range(num_clips):
    face = synthetic.generate_clip(MOUTH_SEED_BASE + 2 * i, num_frames=num_frames,
                                   image_size=size)
    driver = synthetic.generate_clip(MOUTH_SEED_BASE + 2 * i + 1, num_frames=num_frames,
                                     image_size=size)
    clips.append((face.frames, audio.melspectrogram(driver.wav)))
  return clips


def generate(params, config, clips, respacing: str, sampler: str, batch_size: int):
  """Lip-synced crops ``[sum T, S, S, 3]`` uint8 of every clip with one sampler (eta 0, the
  config's noise seed, as ``lipsync_score`` samples)."""
  crop_sampler = Diff2LipSampler(params, config, respacing=respacing, sampler=sampler, eta=0.0,
                                 clip_denoised=True, seed=int(config.sampling.seed),
                                 batch_size=batch_size, check=False)
  return np.concatenate([crop_sampler.lip_sync_crops(frames, mel) for frames, mel in clips])


def mouth_mae(crops: np.ndarray, reference: np.ndarray) -> float:
  """Mean |crops - reference| in [0, 255] over the masked lower half (``lower_half_mask``)."""
  rows = np.asarray(sampling.lower_half_mask(1, crops.shape[1]))[0, :, 0, 0] > 0
  diff = np.abs(crops.astype(np.float64) - reference.astype(np.float64))
  return float(diff[:, rows].mean())


def lipsync(params, config, respacing: str, sampler: str, num_clips: int, num_frames: int,
            batch_size: int) -> dict:
  """``lipsync_score.score`` report of one sampler."""
  return lipsync_score.score(params, config, num_clips=num_clips, num_frames=num_frames,
                             respacing=respacing, batch_size=batch_size, sampler=sampler)


def measure(params, config, clips, reference, respacing: str, name: str, args) -> dict:
  """One table row: mouth error vs the reference crops, lip-sync score, wall time."""
  start = time.time()
  crops = generate(params, config, clips, respacing, name, args.batch_size)
  row = {"sampler": name, "respacing": respacing,
         "mouth_mae": round(mouth_mae(crops, reference), 3)}
  if args.score_clips:
    score = lipsync(params, config, respacing, name, args.score_clips, args.num_frames,
                    args.batch_size)
    row.update(lipsync_r=round(score["audio"]["mean_clip_pearson_r"], 4),
               pooled_r=round(score["audio"]["pooled_pearson_r"], 4),
               zeroed_audio_r=round(score["zeroed_audio"]["mean_clip_pearson_r"], 4))
  row["seconds"] = round(time.time() - start, 1)
  return row


def run_benchmark(params, config, args) -> dict:
  """Runs every (spacing, evals, sampler) case; returns the JSON-able report."""
  size = int(config.model.image_size)
  clips = mouth_clips(args.num_clips, args.num_frames, size)
  start = time.time()
  reference = generate(params, config, clips, args.reference, "ddim", args.batch_size)
  report = {"reference": {"sampler": "ddim", "respacing": args.reference,
                          "seconds": round(time.time() - start, 1)},
            "num_clips": args.num_clips, "num_frames": args.num_frames,
            "score_clips": args.score_clips, "image_size": size, "results": []}
  for spacing in args.spacing:
    for evals in args.evals:
      for name in args.samplers:
        row = {"evals": evals, "spacing": spacing,
               **measure(params, config, clips, reference, respacing_for(evals, spacing),
                         name, args)}
        report["results"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
  return report


def table(report: dict) -> str:
  """Markdown table of the report's results."""
  lines = [f"mouth_mae: [0,255] units vs DDIM {report['reference']['respacing']} "
           f"(lower half, {report['num_clips']} clips x {report['num_frames']} frames)",
           "| sampler | evals | respacing | mouth_mae | lipsync_r | pooled_r | zeroed_r |",
           "|---|---|---|---|---|---|---|"]
  for row in report["results"]:
    cells = [row["sampler"], row["evals"], row["respacing"], row["mouth_mae"],
             row.get("lipsync_r", "-"), row.get("pooled_r", "-"), row.get("zeroed_audio_r", "-")]
    lines.append("| " + " | ".join(str(c) for c in cells) + " |")
  return "\n".join(lines)


def _csv(kind):
  return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="synthetic-model training workdir")
  p.add_argument("--samplers", type=_csv(str), default=["ddim", "dpmpp_2m", "unipc"],
                 help=f"comma-separated, from {', '.join(SAMPLERS)}")
  p.add_argument("--evals", type=_csv(int), default=[5, 10, 25],
                 help="comma-separated model-evaluation counts")
  p.add_argument("--spacing", type=_csv(str), default=["ddim", "logsnr"],
                 help=f"comma-separated respacing forms per K, from {', '.join(SPACINGS)}")
  p.add_argument("--reference", default="ddim250", help="respacing of the DDIM reference")
  p.add_argument("--num_clips", type=int, default=4, help="clips for the mouth error")
  p.add_argument("--score_clips", type=int, default=8,
                 help="clips for the lip-sync score (0: skip the score)")
  p.add_argument("--num_frames", type=int, default=50, help="frames per clip")
  p.add_argument("--batch_size", type=int, default=25, help="frames per sampler call")
  p.add_argument("--out", help="also write the JSON report here")
  args = p.parse_args(argv)
  unknown = [name for name in args.samplers if name not in SAMPLERS]
  if unknown or not args.samplers or not args.evals or min(args.evals) < 1:
    p.error(f"--samplers must name some of {', '.join(SAMPLERS)} (got {unknown or 'none'}) "
            "and --evals must list positive counts")
  if not args.spacing or not set(args.spacing) <= set(SPACINGS):
    p.error(f"--spacing must name some of {', '.join(SPACINGS)}, got {args.spacing}")
  from diff2lip_jax import checkpoints
  try:
    params, config = checkpoints.load_inference_checkpoint(args.checkpoint)
    report = run_benchmark(params, config, args)
  except (checkpoints.CheckpointError, FileNotFoundError, ValueError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  report["checkpoint"] = os.path.abspath(args.checkpoint)
  text = json.dumps(report, indent=2)
  print(table(report))
  print(text)
  if args.out:
    tmp = f"{args.out}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
      f.write(text + "\n")
    os.replace(tmp, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
