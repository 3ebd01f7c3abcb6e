"""Evaluate generated lip-sync videos: PSNR, SSIM, LSE-D / LSE-C and the synthetic sync score.

    python -m diff2lip_jax.evaluate --generated out.mp4 --reference face.mp4 \\
        --syncnet lipsync_expert.pth --out metrics.json
    python -m diff2lip_jax.evaluate --pairs pairs.txt --root DIR --syncnet EXPERT

``--pairs`` lines are ``generated [reference]`` relative to ``--root``.
Metrics (per video, then the mean over videos):
  PSNR, SSIM  frames of the generated vs. the reference video (25 fps, first N common frames),
              on the face crop (``--region face``, default) or the whole frame; dm-pix SSIM
              (11x11 Gaussian window, sigma 1.5). Need a reference video.
  LSE-D/LSE-C the syncnet_python procedure Wav2Lip and Diff2Lip report: embeddings of 5-frame
              face windows and their 0.2 s audio windows, distances for audio offsets of
              -vshift..vshift frames (vshift 15), averaged over frames; LSE-D is the smallest
              mean distance, LSE-C the median minus it, offset the best shift (>0: the audio
              leads the video). Computed with the Wav2Lip-style SyncNet expert (``--syncnet``:
              a Wav2Lip lipsync_expert.pth or a ``train_syncnet`` workdir/export), whose
              embeddings are L2-normalised: values are on that expert's scale, not the
              original SyncNet's (the paper's numbers).
  sync_r      synthetic lip-sync score (``--synthetic``; synthetic-face videos only): Pearson r
              between the mouth opening measured in the generated crops and the opening the
              video's own audio implies (data_pipelines.synthetic).
Prints a table and writes JSON (``--out``). Exit status 1 if any video failed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Sequence

import numpy as np

FPS = 25.0
CROP_SIZE = 96  # the SyncNet expert's input size


def calc_pdist(video_emb: np.ndarray, audio_emb: np.ndarray, vshift: int) -> np.ndarray:
  """syncnet_python ``calc_pdist``: ``[T, 2*vshift+1]`` distances of frame i to audio i+j-vshift.

  The audio embeddings are zero-padded by ``vshift`` on both ends; distances are torch's
  ``pairwise_distance`` (``||a - b + 1e-6||``).
  """
  video_emb, audio_emb = np.asarray(video_emb, np.float64), np.asarray(audio_emb, np.float64)
  padded = np.pad(audio_emb, ((vshift, vshift), (0, 0)))
  windows = np.lib.stride_tricks.sliding_window_view(padded, len(video_emb), axis=0)
  windows = windows.transpose(2, 0, 1)[:, :2 * vshift + 1]  # [T, win, D]: row i -> padded[i+j]
  return np.linalg.norm(video_emb[:, None, :] - windows + 1e-6, axis=-1)


def sync_offset_confidence(video_emb: np.ndarray, audio_emb: np.ndarray,
                           vshift: int = 15) -> dict[str, float]:
  """``{"lse_d", "lse_c", "offset"}`` from per-frame embeddings (syncnet_python ``evaluate``)."""
  dists = calc_pdist(video_emb, audio_emb, vshift)
  mean_dist = dists.mean(axis=0)
  best = int(np.argmin(mean_dist))
  median = float(np.sort(mean_dist)[(len(mean_dist) - 1) // 2])  # torch.median: lower middle
  return {"lse_d": float(mean_dist[best]), "lse_c": median - float(mean_dist[best]),
          "offset": vshift - best}


class SyncNetScorer:
  """Jitted SyncNet expert embeddings of face-crop windows and mel windows."""

  def __init__(self, path: str, batch_size: int = 64):
    import jax
    from diff2lip_jax.models import syncnet
    from diff2lip_jax.syncnet.expert import load_syncnet_expert
    self.variables = load_syncnet_expert(path)
    model = syncnet.SyncNetColor()
    self.batch_size = batch_size
    self._face = jax.jit(lambda v, f: model.apply(v, syncnet.syncnet_face_input(f),
                                                  method=model.encode_face))
    self._audio = jax.jit(lambda v, m: model.apply(v, m, method=model.encode_audio))

  def _batched(self, fn, items: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(items), self.batch_size):
      part = items[start:start + self.batch_size]
      pad = self.batch_size - len(part)
      full = np.concatenate([part, np.repeat(part[-1:], pad, 0)]) if pad else part
      out.append(np.asarray(fn(self.variables, full))[:len(part)])
    return np.concatenate(out)

  def score(self, crops: np.ndarray, wav_16k: np.ndarray, vshift: int = 15) -> dict[str, Any]:
    """crops ``[T, 96, 96, 3]`` uint8 RGB faces, wav 16 kHz -> LSE-D, LSE-C, offset."""
    from data_pipelines import audio
    length = min(len(crops), int(math.floor(len(wav_16k) / 640)))  # 640 samples per frame
    windows = length - 5  # syncnet_python: range(0, lastframe), lastframe = length - 5
    if windows < 1:
      raise ValueError(f"LSE needs at least 6 frames of video and audio, got {length}")
    mel = audio.melspectrogram(wav_16k)
    faces = np.stack([crops[i:i + 5] for i in range(windows)]).astype(np.float32) / 255.0
    mels = np.stack([audio.sync_mel_window(mel, i) for i in range(windows)])[..., None]
    result = sync_offset_confidence(self._batched(self._face, faces),
                                    self._batched(self._audio, mels), vshift)
    return {**result, "sync_windows": windows}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  if len(a) < 2 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
    return 0.0
  return float(np.corrcoef(a, b)[0, 1])


def _image_metrics():
  import dm_pix
  import jax

  @jax.jit
  def metrics(a, b):
    a, b = a.astype("float32") / 255.0, b.astype("float32") / 255.0
    return dm_pix.psnr(a, b), dm_pix.ssim(a, b)
  return metrics


def _reference_frames(chunks, pending: list, count: int) -> np.ndarray:
  """Next ``count`` frames (fewer at the end) of a chunk iterator, via the ``pending`` buffer."""
  while sum(len(p) for p in pending) < count:
    more = next(chunks, None)
    if more is None:
      break
    pending.append(more)
  if not pending:
    return np.zeros((0, 1, 1, 3), np.uint8)
  joined = np.concatenate(pending)
  pending[:] = [joined[count:]]
  return joined[:count]


def evaluate_video(generated: str, reference: str | None, *, crop, detector=None,
                   scorer: SyncNetScorer | None = None, synthetic_score: bool = False,
                   region: str = "face", vshift: int = 15, image_metrics=None) -> dict[str, Any]:
  """Metrics of one generated video (see the module docstring); streams both videos.

  Only the 96x96 face crops of the generated video are kept (for LSE and sync_r).
  """
  from data_pipelines import audio, crops, face_crops, video_io
  from diff2lip_jax.inference.scan import scan_video
  boxes = None
  if crop.needs_detector:  # a first pass finds the faces of every frame
    scan = scan_video(generated, crop, detector=detector)
    boxes = face_crops.frame_boxes(crop, scan.frame_size, scan.count, scan.detections,
                                   source=generated)
  image_metrics = image_metrics or _image_metrics()
  chunks_r = video_io.iter_video_chunks(reference, fps=FPS, chunk_size=64) if reference else None
  psnr, ssim, faces, pending, count = [], [], [], [], 0
  for chunk in video_io.iter_video_chunks(generated, fps=FPS, chunk_size=64):
    h, w = chunk.shape[1:3]
    if boxes is None:  # one fixed box: the frame size is known from the first chunk
      boxes = face_crops.frame_boxes(crop, (h, w), 1, source=generated)
    chunk_boxes = boxes[np.minimum(np.arange(count, count + len(chunk)), len(boxes) - 1)]
    face = crops.crop_uint8(chunk, chunk_boxes, CROP_SIZE)
    faces.append(face)
    count += len(chunk)
    if chunks_r is None:
      continue
    ref = _reference_frames(chunks_r, pending, len(chunk))
    n = len(ref)
    if not n:
      continue
    if ref.shape[1:3] != (h, w):
      if abs(ref.shape[1] - h) > 1 or abs(ref.shape[2] - w) > 1:
        raise ValueError(f"{reference}: frames are {ref.shape[2]}x{ref.shape[1]}, the generated "
                         f"ones {w}x{h}; evaluate against the footage that was lip-synced")
      common_h, common_w = min(h, ref.shape[1]), min(w, ref.shape[2])  # even-size padding
      ref, chunk = ref[:, :common_h, :common_w], chunk[:, :common_h, :common_w]
    if region == "face":
      a, b = face[:n], crops.crop_uint8(ref, chunk_boxes[:n], CROP_SIZE)
    else:
      a, b = chunk[:n], ref
    p, s = image_metrics(a, b)
    psnr.append(np.asarray(p))
    ssim.append(np.asarray(s))
  faces = np.concatenate(faces)
  result: dict[str, Any] = {"generated": generated, "reference": reference, "frames": count}
  if chunks_r is not None:
    compared = int(sum(len(p) for p in psnr))
    # Identical frames have infinite PSNR; cap at 100 dB so means stay finite.
    result.update(compared_frames=compared,
                  psnr=float(np.mean(np.minimum(np.concatenate(psnr), 100.0))) if compared
                  else None,
                  ssim=float(np.mean(np.concatenate(ssim))) if compared else None)
  if scorer is not None or synthetic_score:
    samples, rate = video_io.read_audio_track(generated)
    wav = audio.resample(samples, rate, audio.SAMPLE_RATE)
    if scorer is not None:
      result.update(scorer.score(faces, wav, vshift))
    if synthetic_score:
      from data_pipelines import synthetic
      measured = synthetic.measure_mouth_opening(faces)
      truth = synthetic.mouth_opening_from_audio(wav, len(faces))
      result["sync_r"] = _pearson(measured, truth)
  return result


COLUMNS = (("frames", "frames", "{:d}"), ("psnr", "PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"),
           ("lse_d", "LSE-D", "{:.3f}"), ("lse_c", "LSE-C", "{:.3f}"),
           ("offset", "offset", "{:d}"), ("sync_r", "sync r", "{:.3f}"))


def summarize(results: list[dict]) -> dict[str, float]:
  """Mean of each metric over the videos that have it."""
  mean = {}
  for key, _, _ in COLUMNS:
    values = [r[key] for r in results if r.get(key) is not None]
    if values:
      mean[key] = float(np.mean(values))
  return mean


def format_table(results: list[dict], mean: dict) -> str:
  rows = [["video"] + [title for _, title, _ in COLUMNS]]
  named = [(os.path.basename(str(r["generated"])), r) for r in results] + [("mean", mean)]
  for name, r in named:
    cells = [name]
    for key, _, fmt in COLUMNS:
      value = r.get(key)
      if value is None:
        cells.append("-")
      elif fmt == "{:d}" and not isinstance(value, int):
        cells.append(f"{value:.1f}")
      else:
        cells.append(fmt.format(value))
    rows.append(cells)
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths))) for row in rows)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m diff2lip_jax.evaluate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--generated", nargs="+", default=[], help="generated video(s)")
  p.add_argument("--reference", nargs="+", default=[],
                 help="ground-truth video(s), one per --generated (PSNR/SSIM)")
  p.add_argument("--pairs", help="text file: 'generated [reference]' per line")
  p.add_argument("--root", default=".", help="directory --pairs paths are relative to")
  p.add_argument("--syncnet", help="SyncNet expert for LSE-D/LSE-C (.pth or train_syncnet dir)")
  p.add_argument("--synthetic", action="store_true", help="also the synthetic sync score")
  p.add_argument("--crop", nargs="+", default=["voxceleb2"],
                 help="face crop: voxceleb2, s3fd (needs --s3fd_weights) or box X1,Y1,X2,Y2")
  p.add_argument("--s3fd_weights", help="S3FD checkpoint for --crop s3fd")
  p.add_argument("--region", choices=("face", "full"), default="face",
                 help="PSNR/SSIM on the face crop (96x96) or on whole frames")
  p.add_argument("--vshift", type=int, default=15, help="LSE offset search range (frames)")
  p.add_argument("--out", help="write the JSON report here")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """The CLI; a user error (a missing --pairs file, a bad --out) is one ``error:`` line."""
  from diff2lip_jax import cli
  return cli.run(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
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
    parser.error("give --generated videos or --pairs")
  if args.out:  # checked before any video is scored
    from diff2lip_jax.inference import outputs
    outputs.check_output(args.out, [p for pair in pairs for p in pair if p], overwrite=True)
    outputs.make_parent(args.out)
  from data_pipelines import face_crops
  try:
    crop = face_crops.parse_crop(args.crop)
    detector = face_crops.load_detector(crop, args.s3fd_weights)
    scorer = SyncNetScorer(args.syncnet) if args.syncnet else None
  except (ValueError, OSError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  started, results, failures = time.time(), [], []
  metrics = _image_metrics()
  for generated, reference in pairs:
    try:
      results.append(evaluate_video(generated, reference, crop=crop, detector=detector,
                                    scorer=scorer, synthetic_score=args.synthetic,
                                    region=args.region, vshift=args.vshift,
                                    image_metrics=metrics))
    except (ValueError, OSError) as error:
      failures.append({"generated": generated, "reference": reference,
                       "error": " ".join(str(error).split())})
      print(f"FAILED {generated}: {failures[-1]['error']}", file=sys.stderr)
  mean = summarize(results)
  if results:
    print(format_table(results, mean))
  report = {"settings": {"crop": args.crop, "region": args.region, "vshift": args.vshift,
                         "syncnet": args.syncnet, "synthetic": args.synthetic},
            "videos": results, "mean": mean, "failures": failures,
            "seconds": round(time.time() - started, 2)}
  if args.out:
    out = pathlib.Path(args.out)
    temp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    temp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, out)
  print(f"{len(results)} evaluated, {len(failures)} failed")
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
