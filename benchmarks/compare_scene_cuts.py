"""Scene-cut detectors on synthetic clips with injected cuts and hard non-cuts: accuracy and speed.

    PYTHONPATH=. python benchmarks/compare_scene_cuts.py --clips 8 [--frame-size 224]

Compares `data_pipelines.curation.scene_cuts` (HSV histograms, adaptive threshold) with
PySceneDetect's ContentDetector, AdaptiveDetector, HistogramDetector and HashDetector (their
defaults, fed numpy frames through `process_frame`) when `scenedetect` (and its OpenCV) can be
imported; otherwise only the histogram rule is measured.

Scenarios (each clip `--frames` frames at 25 fps, VoxCeleb2-style full frames):
  identity  cut between two synthetic people (other face, hair, clothes and background);
  zoom      cut from the shot to a 1.4x closer framing of the same person and background;
  static    one talking face, small head motion, blinks (no cut);
  pan       the camera pans 4 px per frame across a wider frame (no cut);
  shake     hand-held shake: the view jumps by up to 12 px every frame (no cut);
  flash     two single-frame flashes (x1.8 brightness) (no cut);
  lighting  brightness ramps down to 60 % over 10 frames (no cut).
A detection within 1 frame of an injected cut is a hit; everything else is a false cut.
Speed: frames per second of one detector on one core, after decoding (the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import numpy as np

from data_pipelines import crops, synthetic
from data_pipelines.curation import scene_cuts

SCENARIOS = ("identity", "zoom", "static", "pan", "shake", "flash", "lighting")


def _render(seed: int, frames: int, size: int) -> np.ndarray:
  return synthetic.generate_clip(seed, frames, full_frame_size=size).full_frames


def _zoom(frames: np.ndarray, factor: float) -> np.ndarray:
  size = frames.shape[1]
  inner = int(round(size / factor))
  lo = (size - inner) // 2
  box = np.tile([lo, lo, lo + inner, lo + inner], (len(frames), 1))
  return np.clip(np.rint(crops.crop_and_resize(frames, box, size)), 0, 255).astype(np.uint8)


def make_scenario(kind: str, seed: int, frames: int, size: int) -> tuple[np.ndarray, list[int]]:
  """`(frames [T, S, S, 3] uint8, injected cuts)` of one scenario clip."""
  rng = np.random.default_rng(seed)
  cut = int(rng.integers(frames // 5, frames - frames // 5))
  if kind == "identity":
    a, b = _render(seed, frames, size), _render(seed + 10_000, frames, size)
    return np.concatenate([a[:cut], b[cut:]]), [cut]
  if kind == "zoom":
    a = _render(seed, frames, size)
    return np.concatenate([a[:cut], _zoom(a[cut:], 1.4)]), [cut]
  if kind == "pan":
    wide = _render(seed, frames, size + 4 * frames)
    top = (wide.shape[1] - size) // 2
    return np.stack([wide[t, top:top + size, 4 * t:4 * t + size] for t in range(frames)]), []
  if kind == "shake":
    wide = _render(seed, frames, size + 24)
    dy, dx = rng.integers(0, 25, (2, frames))
    return np.stack([wide[t, dy[t]:dy[t] + size, dx[t]:dx[t] + size] for t in range(frames)]), []
  clip = _render(seed, frames, size).astype(np.float32)
  if kind == "flash":
    for t in rng.choice(np.arange(5, frames - 5), 2, replace=False):
      clip[t] *= 1.8
  elif kind == "lighting":
    gain = np.ones(frames, np.float32)
    gain[cut:cut + 10] = np.linspace(1.0, 0.6, 10)[:frames - cut]
    gain[cut + 10:] = 0.6
    clip *= gain[:, None, None, None]
  elif kind != "static":
    raise ValueError(f"unknown scenario {kind!r}")
  return np.clip(clip, 0, 255).astype(np.uint8), []


def pyscenedetect_detectors() -> dict[str, Callable[[np.ndarray], list[int]]]:
  """PySceneDetect's detectors (defaults) as `frames -> cuts`, or {} when not installed."""
  try:
    import scenedetect  # pylint: disable=import-outside-toplevel
    from scenedetect import detectors  # pylint: disable=import-outside-toplevel
  except ImportError:
    return {}

  def run(make):
    def detect(frames: np.ndarray) -> list[int]:
      detector, found = make(), []
      for t, frame in enumerate(frames):
        code = scenedetect.FrameTimecode(t, fps=25.0)
        found += detector.process_frame(code, np.ascontiguousarray(frame[..., ::-1]))
      found += detector.post_process(scenedetect.FrameTimecode(len(frames) - 1, fps=25.0))
      return sorted(int(c.frame_num) for c in found)
    return detect

  return {f"pyscenedetect.{name}": run(getattr(detectors, name))
          for name in ("ContentDetector", "AdaptiveDetector", "HistogramDetector",
                       "HashDetector")}


def score(found: list[int], truth: list[int]) -> tuple[int, int, int]:
  """(hits, misses, false cuts): a detection within 1 frame of an injected cut is a hit."""
  hits = sum(any(abs(f - t) <= 1 for f in found) for t in truth)
  false = sum(not any(abs(f - t) <= 1 for t in truth) for f in found)
  return hits, len(truth) - hits, false


def evaluate(detect: Callable[[np.ndarray], list[int]], clips) -> dict:
  """Accuracy per scenario and frames/s of one detector over `[(kind, frames, cuts)]`."""
  per_kind = {k: [0, 0, 0] for k in SCENARIOS}
  seconds, frames_seen = 0.0, 0
  for kind, frames, truth in clips:
    start = time.perf_counter()
    found = detect(frames)
    seconds += time.perf_counter() - start
    frames_seen += len(frames)
    for i, v in enumerate(score(found, truth)):
      per_kind[kind][i] += v
  totals = np.sum(list(per_kind.values()), axis=0).tolist()
  return {"hits": totals[0], "misses": totals[1], "false_cuts": totals[2],
          "per_scenario": {k: dict(zip(("hits", "misses", "false_cuts"), v))
                           for k, v in per_kind.items()},
          "frames_per_second": round(frames_seen / seconds, 1)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clips", type=int, default=8, help="clips per scenario")
  parser.add_argument("--frames", type=int, default=75)
  parser.add_argument("--frame-size", type=int, default=224)
  parser.add_argument("--out", help="write the results as JSON here")
  args = parser.parse_args(argv)
  clips = []
  for k, kind in enumerate(SCENARIOS):
    for i in range(args.clips):
      frames, cuts = make_scenario(kind, 1000 * k + i, args.frames, args.frame_size)
      clips.append((kind, frames, cuts))
  methods = {"histogram_rule": scene_cuts.detect_scene_cuts, **pyscenedetect_detectors()}
  results = {name: evaluate(detect, clips) for name, detect in methods.items()}
  for name, r in results.items():
    print(f"{name:34s} hits {r['hits']:3d} misses {r['misses']:3d} false {r['false_cuts']:3d} "
          f"{r['frames_per_second']:8.1f} frames/s  " +
          " ".join(f"{k}:{v['hits']}/{v['misses']}/{v['false_cuts']}"
                   for k, v in r["per_scenario"].items()))
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump({"settings": vars(args), "results": results}, f, indent=2)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
