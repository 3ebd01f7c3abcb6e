"""Injected audio-video offsets vs the offsets a curation measurer finds, on synthetic clips.

    PYTHONPATH=. python benchmarks/measure_injected_offsets.py --measurer synthetic
    PYTHONPATH=. python benchmarks/measure_injected_offsets.py --measurer expert \\
        --weights /tmp/syncnet_workdir        # lipsync_expert.pth or a train_syncnet workdir
    PYTHONPATH=. python benchmarks/measure_injected_offsets.py --measurer syncnet_v2 \\
        --weights syncnet_v2.model

For each clip (seeds unlike the synthetic training clips) and each lead in `--leads`, the video
is frames `m..m+T` of a rendered clip and the audio starts `lead` frames later in the clip's
audio (it leads the video by `lead` frames), so syncnet_python's convention expects
`offset == lead`. Prints the confusion per lead, the exact and within-1 rates and the mean
confidence of the measured shots.

Crops: the synthetic and expert measurers get the 128x128 synthetic face crops (for the expert,
boxes whose Wav2Lip padding gives back the whole crop, the framing `train_syncnet` trains on);
syncnet_v2 gets 224x224 full frames with their face boxes.
"""
from __future__ import annotations

import argparse
import collections
import json

import numpy as np

from data_pipelines import synthetic
from data_pipelines.curation import sync

MARGIN = 8
PER_FRAME = 640


def _inputs(clip: synthetic.SyntheticClip, name: str, lead: int, frames: int):
  """(frames, boxes, wav) with the audio leading the video by `lead` frames."""
  wav = clip.wav[(MARGIN + lead) * PER_FRAME:(MARGIN + lead + frames) * PER_FRAME]
  if name == "syncnet_v2":
    return (clip.full_frames[MARGIN:MARGIN + frames],
            clip.full_face_box[MARGIN:MARGIN + frames], wav)
  size = clip.frames.shape[1]
  boxes = np.tile([0, 0, size, size - sync.EXPERT_PADS[1]], (frames, 1))
  return clip.frames[MARGIN:MARGIN + frames], boxes, wav


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--measurer", choices=("synthetic", "expert", "syncnet_v2"),
                      default="synthetic")
  parser.add_argument("--weights", help="expert .pth / workdir, or syncnet_v2.model")
  parser.add_argument("--clips", type=int, default=6)
  parser.add_argument("--frames", type=int, default=75, help="frames per measured clip")
  parser.add_argument("--leads", type=int, nargs="+", default=list(range(-5, 6)))
  parser.add_argument("--seed", type=int, default=50_000)
  parser.add_argument("--out", help="write every measurement as JSON here")
  args = parser.parse_args(argv)
  measurer = sync.make_measurer(args.measurer, args.weights)
  rows, confusion = [], collections.defaultdict(collections.Counter)
  for index in range(args.clips):
    clip = synthetic.generate_clip(args.seed + index, args.frames + 2 * MARGIN,
                                   full_frame_size=224 if args.measurer == "syncnet_v2" else None)
    for lead in args.leads:
      result = measurer.measure(*_inputs(clip, args.measurer, lead, args.frames))
      rows.append({"clip": index, "lead": lead, "offset": result.offset,
                   "confidence": result.confidence, "min_dist": result.min_dist})
      confusion[lead][result.offset] += 1
  exact = np.mean([r["offset"] == r["lead"] for r in rows])
  near = np.mean([abs(r["offset"] - r["lead"]) <= 1 for r in rows])
  for lead in args.leads:
    print(f"lead {lead:+d}: measured " + ", ".join(f"{o:+d} x{n}" for o, n in
                                                  sorted(confusion[lead].items())))
  confidence = np.mean([r["confidence"] for r in rows])
  print(f"{args.measurer}: exact {exact:.3f}, within 1 frame {near:.3f} over {len(rows)} "
        f"measurements; mean confidence {confidence:.3f}")
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump({"settings": vars(args), "exact": exact, "within_1": near, "rows": rows}, f,
                indent=2)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
