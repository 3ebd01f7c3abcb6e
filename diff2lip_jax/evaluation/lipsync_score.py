"""Lip-sync score on held-out synthetic clips: does the generated mouth follow the audio?

    python -m diff2lip_jax.lipsync_score --checkpoint runs/synthetic [--num_clips 8]

Each held-out face (seeds never used in training) is driven by the speech of another
held-out clip (the cross setting). The mouth opening measured in the generated crops
(``synthetic.measure_mouth_opening``) is correlated with the ground-truth opening of the
driving audio (``synthetic.mouth_opening_from_audio``). Prints JSON: the mean per-clip
Pearson r, the pooled r, and the same with the audio zeroed (a model that ignores the audio,
or copies the reference mouth, scores near 0 on both).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

# Offsets far from the training and eval seeds (training.data uses multiples of 1_000_003).
SCORE_SEED_BASE = 7_000_001


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.std() < 1e-9 or b.std() < 1e-9:
    return 0.0
  return float(np.corrcoef(a, b)[0, 1])


def score(params, config, num_clips: int = 8, num_frames: int = 50, respacing: str = "ddim10",
          seed: int = 0, batch_size: int = 25, sampler: str = "ddim") -> dict:
  """Generates the cross-driven clips and returns the correlation report.

  The sampler is ``sampler`` (DDIM by default; eta 0) with ``respacing``, the config's
  ``sampling.seed`` noise image shared by all frames, ``batch_size`` frames per device and
  call.
  """
  from data_pipelines import audio, synthetic
  from diff2lip_jax.inference import Diff2LipSampler

  size = int(config.model.image_size)
  sampler = Diff2LipSampler(params, config, respacing=respacing, sampler=sampler, eta=0.0,
                            clip_denoised=True, seed=int(config.sampling.seed),
                            batch_size=batch_size, check=False)
  report = {"num_clips": num_clips, "num_frames": num_frames, "respacing": respacing,
            "sampler": sampler.sampler, "image_size": size}
  for label, zero in (("audio", False), ("zeroed_audio", True)):
    per_clip, measured_all, truth_all = [], [], []
    for i in range(num_clips):
      base = SCORE_SEED_BASE + 2 * (seed * 1000 + i)
      face = synthetic.generate_clip(base, num_frames=num_frames, image_size=size)
      driver = synthetic.generate_clip(base + 1, num_frames=num_frames, image_size=size)
      wav = np.zeros_like(driver.wav) if zero else driver.wav
      crops = sampler.lip_sync_crops(face.frames, audio.melspectrogram(wav))
      measured = synthetic.measure_mouth_opening(crops)
      truth = driver.mouth_opening[:len(measured)]
      per_clip.append(_pearson(measured, truth))
      measured_all.append(measured)
      truth_all.append(truth)
    report[label] = {"mean_clip_pearson_r": float(np.mean(per_clip)),
                     "pooled_pearson_r": _pearson(np.concatenate(measured_all),
                                                  np.concatenate(truth_all)),
                     "per_clip_r": [round(r, 4) for r in per_clip]}
  return report


def main(argv=None) -> int:
  """The CLI; a user error (a missing checkpoint, a bad --out) is one ``error:`` line."""
  from diff2lip_jax import cli
  return cli.run(_main, argv)


def _main(argv) -> int:
  parser = argparse.ArgumentParser(prog="python -m diff2lip_jax.lipsync_score",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True,
                      help="training workdir or checkpoint directory of a synthetic-data model")
  parser.add_argument("--num_clips", type=int, default=8, help="held-out clips to score")
  parser.add_argument("--num_frames", type=int, default=50, help="frames per clip (25 fps)")
  parser.add_argument("--respacing", default="ddim10", help="sampler respacing, e.g. ddim25")
  parser.add_argument("--sampler", default="ddim",
                      help="ddim, dpmpp_2m or unipc (deterministic samplers; ddpm also works)")
  parser.add_argument("--seed", type=int, default=0, help="selects another set of clips")
  parser.add_argument("--out", default=None, help="also write the JSON report here")
  args = parser.parse_args(argv)
  if args.out:
    from diff2lip_jax.inference import outputs
    outputs.check_output(args.out, [], overwrite=True)
    outputs.make_parent(args.out)
  from diff2lip_jax import checkpoints
  start = time.time()
  try:
    params, config = checkpoints.load_inference_checkpoint(args.checkpoint)
    report = score(params, config, args.num_clips, args.num_frames, args.respacing, args.seed,
                   sampler=args.sampler)
  except (ValueError, OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  report["seconds"] = round(time.time() - start, 1)
  text = json.dumps(report, indent=2)
  print(text)
  if args.out:  # complete or absent
    temp = f"{args.out}.{os.getpid()}.partial"
    with open(temp, "w", encoding="utf-8") as f:
      f.write(text + "\n")
    os.replace(temp, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
