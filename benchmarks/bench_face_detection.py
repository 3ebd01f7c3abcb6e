"""Face-detection speed on CPU (frames/s) per detector and frame size, printed as JSON lines.

  python benchmarks/bench_face_detection.py                                  # all detectors
  python benchmarks/bench_face_detection.py --detectors hog s3fd --sizes 1920x1080 --frames 50

Frames: scikit-image's astronaut photograph (a real face; a synthetic face without
scikit-image) pasted into a grey canvas of each size, face height ~1/3 of the frame. Detectors:

  hog        dlib HOG (the bundled default), frames scaled to a 640 px longer side
  hog_full   dlib HOG at full resolution
  s3fd       S3FD (Flax), frames scaled to 320 px (`create_detector`'s default), batch 16
  s3fd_640   S3FD, frames scaled to 640 px
  s3fd_full  S3FD at full resolution (what the reference does)

S3FD uses random weights (speed does not depend on their values) with the score threshold set
above 1 so that no candidate reaches NMS: real weights leave a handful of candidates whose
NMS is negligible, random ones leave thousands. `clip_s` is a fresh detector on the
`--frames` frames (XLA compile included, what a user waits for); `fps` and `cpu_s_per_frame`
come from a second pass.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np
from PIL import Image

from data_pipelines import face_detection as fd

DETECTORS = ("hog", "hog_full", "s3fd", "s3fd_640", "s3fd_full")


def face_image() -> np.ndarray:
  """A real face (astronaut, 512x512) if scikit-image is installed, else a synthetic one."""
  try:
    from skimage import data  # pylint: disable=import-outside-toplevel
    return data.astronaut()[:300, 100:360]
  except ImportError:
    from data_pipelines import synthetic  # pylint: disable=import-outside-toplevel
    return synthetic.generate_clip(0, num_frames=1, image_size=256).frames[0]


def make_frames(width: int, height: int, count: int) -> np.ndarray:
  """`[count, height, width, 3]` uint8: the face at ~1/3 of the height, right of centre."""
  face = face_image()
  scale = height * 0.6 / face.shape[0]
  face = np.asarray(Image.fromarray(face).resize(
      (max(1, round(face.shape[1] * scale)), max(1, round(face.shape[0] * scale)))))
  canvas = np.full((height, width, 3), 128, np.uint8)
  top, left = (height - face.shape[0]) // 3, min(width - face.shape[1], width * 3 // 5)
  canvas[top:top + face.shape[0], left:left + face.shape[1]] = face
  return np.repeat(canvas[None], count, axis=0)


def build(name: str):
  kind, _, variant = name.partition("_")
  if variant == "full":
    max_side = None
  else:
    max_side = int(variant) if variant else fd.DEFAULT_MAX_SIDE[kind]
  if kind == "hog":
    return fd.create_detector("hog", max_side=max_side)
  params = fd.init_s3fd_params(jax.random.PRNGKey(0))
  return fd.FaceDetector(params, score_threshold=1.01, max_side=max_side)


def time_detector(name: str, frames: np.ndarray, batch_size: int) -> dict:
  """clip_s: a fresh detector on all frames (what a user waits for, XLA compile included);
  fps / cpu_s_per_frame: a second pass over the same frames (steady state)."""
  detector = build(name)
  start = time.perf_counter()
  detector.detect(frames, batch_size=batch_size)
  clip_s = time.perf_counter() - start
  start, cpu_start = time.perf_counter(), time.process_time()
  detector.detect(frames, batch_size=batch_size)
  run_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
  # cpu_s (all threads of this process) is less affected by other load on a shared machine.
  return {"detector": name, "size": f"{frames.shape[2]}x{frames.shape[1]}",
          "frames": len(frames), "fps": round(len(frames) / run_s, 2),
          "cpu_s_per_frame": round(cpu_s / len(frames), 3), "clip_s": round(clip_s, 2)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
  parser.add_argument("--sizes", nargs="+", default=["320x320", "1280x720", "1920x1080"])
  parser.add_argument("--frames", type=int, default=16, help="frames timed per case")
  parser.add_argument("--batch_size", type=int, default=16)
  args = parser.parse_args()
  print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(),
                    "jax": jax.__version__}))
  for size in args.sizes:
    width, height = (int(v) for v in size.lower().split("x"))
    frames = make_frames(width, height, args.frames)
    for name in args.detectors:
      print(json.dumps(time_detector(name, frames, min(args.batch_size, args.frames))),
            flush=True)


if __name__ == "__main__":
  main()
