"""Synthetic talking faces whose mouth opening is a known function of their speech-like audio.

Every clip is fully determined by its integer seed. The audio is voiced syllables (sawtooth
glottal source through three formant resonators, with an attack/release envelope, occasional
fricative bursts and pauses) at 16 kHz. The mouth opening of frame k is
:func:`mouth_opening_from_audio`: the Hann-weighted RMS level (dBFS) of an 80 ms window centred
on the frame's centre time, mapped linearly from [-50, -18] dB to [0, 1]. The face is drawn so
that a 128x128 crop looks like the VoxCeleb2 crop of the reference (face fills the frame, eyes at
~42 % height, mouth at ~72 %, i.e. in the lower half the model regenerates).

Ground truth per frame: ``mouth_opening`` in [0, 1], ``mouth_open_px`` (inner lip gap in crop
pixels), ``face_box`` and ``mouth_box`` (x0, y0, x1, y1 in crop pixels).
:func:`measure_mouth_opening` estimates the opening back from pixels, for scoring lip sync.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import pathlib
import shutil
import sys
import time
from typing import Iterator, Sequence

import numpy as np

from data_pipelines import audio as audio_lib
from data_pipelines import shards
from data_pipelines import synthetic_render as render

FPS = 25.0
SAMPLE_RATE = audio_lib.SAMPLE_RATE
OPENING_FLOOR_DB = -50.0
OPENING_CEIL_DB = -18.0
OPENING_WINDOW_SECONDS = 0.08


def mouth_opening_from_audio(wav: np.ndarray, num_frames: int, fps: float = FPS,
                             sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Ground-truth mouth opening per video frame from the audio around that frame.

  Args:
    wav: [num_samples] float waveform at ``sample_rate``.
    num_frames: number of video frames; frame k is centred at ``(k + 0.5) / fps`` seconds.
  Returns:
    [num_frames] float32 in [0, 1]; 0 for silence below -50 dBFS, 1 above -18 dBFS.
  """
  wav = np.asarray(wav, np.float64)
  if wav.ndim != 1:
    raise ValueError(f"wav must be [num_samples], got {wav.shape}")
  half = int(round(OPENING_WINDOW_SECONDS * sample_rate / 2))
  weights = np.hanning(2 * half + 1)[1:-1]  # strictly positive taps
  padded_power = np.pad(wav ** 2, (half, half))
  centres = np.round((np.arange(num_frames) + 0.5) * sample_rate / fps).astype(np.int64)
  # Window of frame k: samples centre-half+1 .. centre+half-1; zeros outside the clip.
  starts = np.clip(centres + 1, 0, padded_power.size - weights.size)
  windows = np.lib.stride_tricks.sliding_window_view(padded_power, weights.size)[starts]
  power = np.einsum("kn,n->k", windows, weights / weights.sum())  # no BLAS threads
  level_db = 10.0 * np.log10(np.maximum(power, 1e-12))
  opening = (level_db - OPENING_FLOOR_DB) / (OPENING_CEIL_DB - OPENING_FLOOR_DB)
  return np.clip(opening, 0.0, 1.0).astype(np.float32)


def measure_mouth_opening(frames: np.ndarray) -> np.ndarray:
  """Estimate the inner-mouth height of aligned face crops from their pixels.

  Marks dark pixels (luminance below ~45 % of the region's median, i.e. of the skin; soft
  threshold) inside the mouth region (rows 62-90 %, columns 32-68 % of the crop) and returns
  the height of the dark area at its tallest columns. Works for any skin tone because the
  threshold is relative; closed mouths read close to 0.
  Args:
    frames: uint8 [T, S, S, 3] face crops (RGB), laid out like :func:`generate_clip` crops.
  Returns:
    [T] float32 estimated opening height as a fraction of the crop height.
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"expected face crops [T, S, S, 3], got {frames.shape}")
  height, width = frames.shape[1:3]
  rows = slice(int(0.62 * height), int(0.90 * height))
  cols = slice(int(0.32 * width), int(0.68 * width))
  region = frames[:, rows, cols].astype(np.float32)
  luminance = 0.299 * region[..., 0] + 0.587 * region[..., 1] + 0.114 * region[..., 2]
  skin = np.median(luminance.reshape(len(frames), -1), axis=1)[:, None, None]
  darkness = np.clip((0.55 * skin - luminance) / (0.2 * skin + 1e-3), 0.0, 1.0)
  column_heights = darkness.sum(axis=1)  # dark run per column, in pixels
  # The middle of the mouth is its tallest part; averaging the 3 tallest columns resists noise.
  tallest = np.sort(column_heights, axis=1)[:, -3:].mean(axis=1)
  return (tallest / height).astype(np.float32)


@dataclasses.dataclass
class SyntheticClip:
  """One synthetic talking-face clip (all arrays numpy).

  frames [T, S, S, 3] uint8 aligned face crops; wav [T * sr / fps] float32 16 kHz;
  mel [M, 80] float32 (``audio.melspectrogram``); mouth_opening [T] in [0, 1];
  mouth_open_px [T] inner-lip gap in crop pixels; face_box, mouth_box [T, 4] float32
  (x0, y0, x1, y1) in crop pixels; full_frames [T, F, F, 3] uint8 (optional, VoxCeleb2-style
  frame whose reference crop is the face crop) and full_face_box [T, 4] in its pixels.
  """
  seed: int
  frames: np.ndarray
  wav: np.ndarray
  mel: np.ndarray
  mouth_opening: np.ndarray
  mouth_open_px: np.ndarray
  face_box: np.ndarray
  mouth_box: np.ndarray
  identity: dict
  fps: float = FPS
  sample_rate: int = SAMPLE_RATE
  full_frames: np.ndarray | None = None
  full_face_box: np.ndarray | None = None

  @property
  def num_frames(self) -> int:
    return int(self.frames.shape[0])

  def to_dict(self) -> dict:
    """Plain dict for shard writers: frames, wav, mel, boxes, gt {...}, metadata.

    ``boxes`` [T, 4] is the crop's box in its source: the whole crop, or the VoxCeleb2 crop
    window of ``full_frames`` when those were rendered.
    """
    gt = {"mouth_opening": self.mouth_opening, "mouth_open_px": self.mouth_open_px,
          "face_box": self.face_box, "mouth_box": self.mouth_box}
    size = self.frames.shape[1]
    crop_box = np.array([0, 0, size, size], np.float32)
    if self.full_frames is not None:
      crop_box = render.voxceleb_crop_box(self.full_frames.shape[1])
    out = {"seed": self.seed, "fps": self.fps, "sample_rate": self.sample_rate,
           "frames": self.frames, "wav": self.wav, "mel": self.mel, "gt": gt,
           "boxes": np.tile(crop_box, (self.num_frames, 1)), "identity": self.identity}
    if self.full_frames is not None:
      out["full_frames"] = self.full_frames
      gt["full_face_box"] = self.full_face_box
    return out


def generate_clip(seed: int, num_frames: int | None = None, image_size: int = 128,
                  fps: float = FPS, sample_rate: int = SAMPLE_RATE,
                  full_frame_size: int | None = None, noise_std: float = 1.5,
                  wav: np.ndarray | None = None) -> SyntheticClip:
  """Render one clip; identical output for identical arguments.

  Args:
    seed: any non-negative int; selects identity, speech, head motion and pixel noise.
    num_frames: video length at ``fps`` (default 75); the audio has
      ``num_frames * sample_rate / fps`` samples.
    image_size: side S of the square face crops.
    full_frame_size: if set, also render F x F frames (face placed so that the reference's
      VoxCeleb2 crop of the frame is the face crop).
    noise_std: pixel noise in 0-255 units (0 for clean frames).
    wav: optional driving audio [num_samples] at ``sample_rate`` instead of synthetic speech
      (e.g. a real recording); it sets the length when ``num_frames`` is None and is cut or
      zero-padded to ``num_frames`` otherwise.
  """
  streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
  identity_rng, speech_rng, motion_rng, noise_rng = streams
  face = render.sample_identity(identity_rng)
  if wav is not None:
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
      raise ValueError(f"driving wav must be mono [num_samples], got {wav.shape}")
    if num_frames is None:
      num_frames = int(wav.size * fps / sample_rate)
  num_frames = 75 if num_frames is None else num_frames
  if num_frames < 1 or image_size < 32:
    raise ValueError(f"need num_frames >= 1 and image_size >= 32, got {num_frames}, {image_size}")
  num_samples = int(round(num_frames * sample_rate / fps))
  if wav is None:
    wav = render.synthesize_speech(speech_rng, num_samples, sample_rate, f0=face.f0,
                                   tract_scale=face.tract_scale)
  else:
    wav = np.pad(wav[:num_samples], (0, max(0, num_samples - wav.size)))
  opening = mouth_opening_from_audio(wav, num_frames, fps, sample_rate)
  motion = render.sample_motion(motion_rng, num_frames, fps)
  crop_u, crop_v = render.crop_grid(image_size)
  noise = render.NoisePool(noise_rng, noise_std)
  frames = render.render_frames(face, motion, opening, crop_u, crop_v, noise)
  face_box, mouth_box = render.boxes(face, motion, opening, image_size)
  full_frames = full_face_box = None
  if full_frame_size:
    full_u, full_v, to_full = render.voxceleb_frame_grid(full_frame_size)
    full_frames = render.render_frames(face, motion, opening, full_u, full_v, noise)
    full_face_box = to_full(face_box / image_size)
  return SyntheticClip(
      seed=int(seed), frames=frames, wav=wav,
      mel=audio_lib.melspectrogram(audio_lib.resample(wav, sample_rate, audio_lib.SAMPLE_RATE)),
      mouth_opening=opening,
      mouth_open_px=(opening * face.max_open * image_size).astype(np.float32),
      face_box=face_box, mouth_box=mouth_box, identity=face.describe(), fps=fps,
      sample_rate=sample_rate, full_frames=full_frames, full_face_box=full_face_box)


def clip_seed(base_seed: int, index: int) -> int:
  """Seed of clip ``index`` in a dataset: independent streams, stable under any worker count."""
  return int(np.random.SeedSequence([base_seed, index]).generate_state(1)[0])


def clip_length(base_seed: int, index: int, min_frames: int, max_frames: int) -> int:
  return int(np.random.default_rng(clip_seed(base_seed, index) ^ 0x5EED).integers(
      min_frames, max_frames + 1))


def generate_dataset(num_clips: int, seed: int = 0, min_frames: int = 50, max_frames: int = 75,
                     **clip_kwargs) -> Iterator[SyntheticClip]:
  """Lazily yield ``num_clips`` clips of ``min_frames..max_frames`` frames (2-3 s at 25 fps)."""
  for index in range(num_clips):
    yield generate_clip(clip_seed(seed, index), clip_length(seed, index, min_frames, max_frames),
                        **clip_kwargs)


LEGACY_DONE_FILE = "DONE.json"  # marked finished synthetic directories before they had a manifest


def _finished_synthetic_dir(out: pathlib.Path, settings: dict) -> bool:
  """Whether ``out`` is a finished dataset of ``settings`` (False: absent, or a partial one)."""
  if not out.exists():
    return False
  if (out / shards.MANIFEST_FILE).is_file():
    found = json.loads((out / shards.MANIFEST_FILE).read_text(encoding="utf-8")).get("settings")
    if found != settings:
      raise ValueError(f"{out} holds synthetic clips made with {found}, not {settings}; use "
                       "another output directory (workdir) or the same data settings")
    return True
  if (out / LEGACY_DONE_FILE).is_file():
    return True
  ours = (shards.FEATURES_FILE, shards.TMP_PREFIX, *shards.FORMATS.values())
  unknown = [p.name for p in out.iterdir()
             if not (p.name.startswith(ours) or p.name.endswith(ours))]
  if unknown:
    raise ValueError(f"{out} exists but is not a synthetic shard directory (it holds "
                     f"{sorted(unknown)[:3]}); move it away or choose another output directory")
  logging.warning("%s has no %s (an interrupted run, or one from before manifests): writing it "
                  "again", out, shards.MANIFEST_FILE)
  return False


def write_synthetic_shards(out_dir: str | os.PathLike, num_clips: int, seed: int,
                           min_frames: int, max_frames: int, image_size: int,
                           num_shards: int | None = None) -> pathlib.Path:
  """Writes :func:`generate_dataset` clips as training shards to ``out_dir`` once; returns it.

  Built under a temporary name beside ``out_dir`` and renamed into place with a ``manifest.json``
  (``prepare``'s format: settings, each shard's clip ids), so an existing ``out_dir`` is complete
  and is reused (other settings: ``ValueError``); an older run's directory is reused with its
  ``DONE.json``, else written again. Clip ``i`` goes to shard ``i % num_shards`` (default: one
  shard per 16 clips, 1 to 8); the bytes depend only on the arguments.
  """
  out = pathlib.Path(out_dir)
  num_shards = max(1, min(8, num_clips // 16)) if num_shards is None else int(num_shards)
  settings = {"synthetic_clips": int(num_clips), "seed": int(seed), "min_frames": int(min_frames),
              "max_frames": int(max_frames), "image_size": int(image_size),
              "num_shards": num_shards}
  if _finished_synthetic_dir(out, settings):
    return out
  started = time.perf_counter()
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_name(f"{shards.TMP_PREFIX}{out.name}-{os.getpid()}")
  clip_ids: list[str] = []

  def records() -> Iterator[shards.ClipRecord]:
    clips = generate_dataset(num_clips, seed, min_frames, max_frames, image_size=image_size)
    for position, clip in enumerate(clips):
      record = shards.clip_record_from_mapping(clip, position)  # what write_shards would make
      clip_ids.append(record.clip_id)
      yield record

  try:
    shutil.rmtree(tmp, ignore_errors=True)
    paths = shards.write_shards(records(), tmp, num_shards=num_shards)
    listing = {os.path.basename(p): clip_ids[i::num_shards] for i, p in enumerate(paths)}
    (tmp / shards.MANIFEST_FILE).write_text(json.dumps(
        {"version": 1, "settings": settings, "runs": 1, "shards": listing, "failed": {}}, indent=1))
    if out.exists():  # a partial directory of an interrupted run: move it aside, then drop it
      stale = out.with_name(f"{shards.TMP_PREFIX}{out.name}-stale-{os.getpid()}")
      os.replace(out, stale)
      shutil.rmtree(stale)
    os.replace(tmp, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  logging.info("wrote %d synthetic clips to %s in %.1f s", num_clips, out,
               time.perf_counter() - started)
  return out

def _atomic_save(path: pathlib.Path, write) -> None:
  temp = path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")
  try:
    write(temp)
    os.replace(temp, path)
  except BaseException:
    temp.unlink(missing_ok=True)
    raise


def _save_npz(path: pathlib.Path, arrays: dict) -> None:
  with open(path, "wb") as handle:  # a handle keeps np.savez from appending ".npz"
    np.savez(handle, **arrays)


def _write_one(out_dir: str, index: int, seed: int, min_frames: int, max_frames: int,
               file_format: str, full_frame_size: int | None, crf: int, preset: str) -> dict:
  import soundfile  # deferred: only writing needs it
  from data_pipelines import video_io
  name = f"clip_{index:05d}"
  entry = {"clip": name, "index": index}
  try:
    clip = generate_clip(clip_seed(seed, index), clip_length(seed, index, min_frames, max_frames),
                         full_frame_size=full_frame_size)
    out = pathlib.Path(out_dir)
    gt = {k: v for k, v in clip.to_dict()["gt"].items()}
    if file_format == "mp4":
      video = clip.full_frames if clip.full_frames is not None else clip.frames
      video_io.write_video(out / f"{name}.mp4", video, fps=clip.fps, audio=clip.wav,
                           audio_sr=clip.sample_rate, crf=crf, preset=preset)
      _atomic_save(out / f"{name}.wav", lambda p: soundfile.write(
          p, clip.wav, clip.sample_rate, subtype="PCM_16", format="WAV"))
      entry.update(video=f"{name}.mp4", wav=f"{name}.wav")
    else:
      gt.update(frames=clip.frames, wav=clip.wav, mel=clip.mel)
    _atomic_save(out / f"{name}.npz", lambda p: _save_npz(p, gt))
    entry.update(seed=clip.seed, num_frames=clip.num_frames, gt=f"{name}.npz",
                 identity=clip.identity)
  except Exception as error:  # record and go on: one bad clip must not stop the batch
    entry["error"] = f"{type(error).__name__}: {error}"
  return entry


def write_dataset(out_dir: str | os.PathLike, num_clips: int, seed: int = 0, min_frames: int = 50,
                  max_frames: int = 75, file_format: str = "mp4",
                  full_frame_size: int | None = None, crf: int = 18, preset: str = "veryfast",
                  workers: int = 1) -> pathlib.Path:
  """Write clips and a ``manifest.jsonl`` (one JSON line per clip, failures with ``error``).

  ``file_format="mp4"``: ``clip_XXXXX.mp4`` (H.264 + AAC; face crops, or VoxCeleb2-style full
  frames if ``full_frame_size``), ``clip_XXXXX.wav`` (16 kHz PCM16) and ``clip_XXXXX.npz``
  (ground truth). ``file_format="npz"``: one npz per clip holding frames, wav, mel and the
  ground truth. Returns the manifest path.
  """
  if file_format not in ("mp4", "npz"):
    raise ValueError(f"file_format must be 'mp4' or 'npz', got {file_format!r}")
  if not 1 <= min_frames <= max_frames:
    raise ValueError(f"need 1 <= min_frames <= max_frames, got {min_frames}, {max_frames}")
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  jobs = [(os.fspath(out), i, seed, min_frames, max_frames, file_format, full_frame_size, crf,
           preset) for i in range(num_clips)]
  if workers > 1:
    # spawn, not fork: forking a process that already runs JAX/XLA threads can deadlock.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      entries = list(pool.map(_write_one, *zip(*jobs), chunksize=4)) if jobs else []
  else:
    entries = [_write_one(*job) for job in jobs]
  manifest = out / "manifest.jsonl"
  _atomic_save(manifest, lambda p: p.write_text("".join(json.dumps(e) + "\n" for e in entries)))
  return manifest


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m data_pipelines.synthetic",
      description="Write a synthetic talking-face dataset with known per-frame mouth opening.")
  parser.add_argument("--out", required=True, help="output directory (created if missing)")
  parser.add_argument("--num-clips", type=int, default=200)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--min-frames", type=int, default=50, help="shortest clip, frames at 25 fps")
  parser.add_argument("--max-frames", type=int, default=75, help="longest clip, frames at 25 fps")
  parser.add_argument("--format", choices=("mp4", "npz"), default="mp4")
  parser.add_argument("--full-frame-size", type=int, default=None,
                      help="write VoxCeleb2-style FxF frames instead of 128x128 crops (mp4)")
  parser.add_argument("--crf", type=int, default=18, help="H.264 quality (lower = better)")
  parser.add_argument("--preset", default="veryfast",
                      help="x264 speed preset (ultrafast ... veryslow)")
  parser.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
  args = parser.parse_args(argv)
  start = time.perf_counter()
  manifest = write_dataset(args.out, args.num_clips, args.seed, args.min_frames, args.max_frames,
                           args.format, args.full_frame_size, args.crf, args.preset,
                           args.workers)
  entries = [json.loads(line) for line in manifest.read_text().splitlines()]
  failed = [e for e in entries if "error" in e]
  print(f"wrote {len(entries) - len(failed)} clips to {args.out} in "
        f"{time.perf_counter() - start:.1f} s ({len(failed)} failed; see {manifest})")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
