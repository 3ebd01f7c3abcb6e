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
import multiprocessing
import os
import pathlib
import sys
import time
from typing import Iterator, Sequence

import numpy as np
import scipy.signal

from data_pipelines import audio as audio_lib
from data_pipelines import synthetic_render as render

FPS = 25.0
SAMPLE_RATE = audio_lib.SAMPLE_RATE
OPENING_FLOOR_DB = -50.0
OPENING_CEIL_DB = -18.0
OPENING_WINDOW_SECONDS = 0.08
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240],
                    [530, 1840, 2480], [570, 840, 2410], [660, 1720, 2410]], np.float64)
_FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])
_PEAK_SYLLABLE_RMS = 0.1  # loudest syllable at -20 dBFS


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


def _resonate(signal: np.ndarray, frequency: float, bandwidth: float, sr: int) -> np.ndarray:
  radius = np.exp(-np.pi * bandwidth / sr)
  angle = 2 * np.pi * frequency / sr
  gain = (1 - radius) * np.sqrt(1 - 2 * radius * np.cos(2 * angle) + radius ** 2)
  return scipy.signal.lfilter([gain], [1, -2 * radius * np.cos(angle), radius ** 2], signal)


def synthesize_speech(rng: np.random.Generator, num_samples: int, sample_rate: int = SAMPLE_RATE,
                      f0: float = 140.0, tract_scale: float = 1.0) -> np.ndarray:
  """Speech-like audio: [num_samples] float32, syllables separated by gaps and pauses."""
  wav = np.zeros(num_samples)
  cursor = int(rng.uniform(0.03, 0.25) * sample_rate)
  attack, release = int(0.025 * sample_rate), int(0.045 * sample_rate)
  while cursor < num_samples:
    if rng.random() < 0.5:  # fricative onset: high-passed noise burst
      burst = int(rng.uniform(0.02, 0.06) * sample_rate)
      noise = np.diff(rng.standard_normal(burst + 1)) * rng.uniform(0.05, 0.2)
      end = min(cursor + burst, num_samples)
      wav[cursor:end] += (noise * np.hanning(burst))[:end - cursor]
      cursor = end
    length = int(rng.uniform(0.12, 0.32) * sample_rate)
    t = np.arange(length) / sample_rate
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6))
                  - 0.1 * t)
    phase = np.cumsum(pitch) / sample_rate
    source = 2 * (phase % 1.0) - 1 + 0.02 * rng.standard_normal(length)
    vowel = _VOWELS[rng.integers(len(_VOWELS))] * tract_scale
    voiced = source
    for frequency, bandwidth in zip(vowel, _FORMANT_BANDWIDTHS):
      voiced = _resonate(voiced, frequency, bandwidth, sample_rate)
    envelope = np.ones(length)
    envelope[:attack] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, attack))
    envelope[-release:] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, release))
    envelope *= 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(3, 7) * t)
    voiced *= envelope * rng.uniform(0.25, 1.0) / (np.sqrt(np.mean(voiced ** 2)) + 1e-12)
    end = min(cursor + length, num_samples)
    wav[cursor:end] += voiced[:end - cursor]
    gap = rng.uniform(0.25, 0.6) if rng.random() < 0.15 else rng.uniform(0.03, 0.15)
    cursor = end + int(gap * sample_rate)
  # Scale so a full-amplitude syllable sits at -20 dBFS, whatever the random draws were.
  wav *= _PEAK_SYLLABLE_RMS
  wav += 3e-4 * rng.standard_normal(num_samples)  # room noise floor, about -70 dBFS
  return np.clip(wav, -1.0, 1.0).astype(np.float32)


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
    wav = synthesize_speech(speech_rng, num_samples, sample_rate, f0=face.f0,
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


def write_mp4_dataset(out_dir: str | os.PathLike, num_clips: int, seed: int = 0,
                      **kwargs) -> pathlib.Path:
  """:func:`write_dataset` with mp4 + wav + ground-truth files."""
  return write_dataset(out_dir, num_clips, seed, file_format="mp4", **kwargs)


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
