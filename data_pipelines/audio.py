"""Audio front end of Wav2Lip / Diff2Lip: 16 kHz waveform -> normalised log-mel spectrogram.

Orientation: every mel spectrogram here is ``[T, 80]`` (time rows, mel-bin columns), the
layout the reference uses after its ``.T`` and the one stored in ``audio_golden.npz``.
Per-frame windows handed to the model are ``[80, 16]`` (mel bins x time), the layout of the
golden ``indiv_mels`` and of SyncNet's audio input.

At 16 kHz with hop 200 there are 80 mel rows per second, so one 25 fps video frame spans
3.2 rows and a 16-row window spans 5 video frames (0.2 s).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Union

import numpy as np
import scipy.signal
import scipy.sparse
import soxr

SAMPLE_RATE = 16000
MEL_STEPS_PER_SECOND = 80.0
MEL_WINDOW_STEPS = 16
VIDEO_FPS = 25.0

PathOrArray = Union[str, os.PathLike, np.ndarray]


@dataclasses.dataclass(frozen=True)
class MelConfig:
  """Wav2Lip ``hparams`` that shape the mel spectrogram (defaults = the reference)."""
  sample_rate: int = SAMPLE_RATE
  n_fft: int = 800
  hop_size: int = 200
  win_size: int = 800
  num_mels: int = 80
  fmin: float = 55.0
  fmax: float = 7600.0
  preemphasis: float = 0.97
  min_level_db: float = -100.0
  ref_level_db: float = 20.0
  max_abs_value: float = 4.0

  def __post_init__(self):
    if self.fmax > self.sample_rate / 2:
      raise ValueError(f"fmax={self.fmax} is above the Nyquist frequency of "
                       f"sample_rate={self.sample_rate}")


DEFAULT_MEL_CONFIG = MelConfig()


@functools.lru_cache(maxsize=8)
def mel_basis(config: MelConfig = DEFAULT_MEL_CONFIG) -> np.ndarray:
  """[num_mels, n_fft//2 + 1] float32 slaney-scale, slaney-normalised filter bank."""
  import librosa  # deferred: importing librosa costs ~1 s and only the filter bank needs it
  return librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.num_mels,
                             fmin=config.fmin, fmax=config.fmax, htk=False, norm="slaney")


@functools.lru_cache(maxsize=8)
def _sparse_mel_basis(config: MelConfig) -> scipy.sparse.csr_array:
  # Each triangle covers a few FFT bins; a sparse product avoids multi-threaded BLAS, whose
  # start-up and spinning cost more than the work for clips this short.
  return scipy.sparse.csr_array(mel_basis(config).astype(np.float64))


def _stft(signal: np.ndarray, config: MelConfig) -> np.ndarray:
  """[n_fft//2 + 1, 1 + len(signal) // hop] complex STFT, same as ``librosa.stft`` defaults.

  Frames are centred (zero padding of n_fft // 2 on both sides: librosa's default since 0.10
  and what the goldens used; reflect padding would change the first and last rows) and use a
  periodic Hann window of ``win_size`` zero-padded to ``n_fft``. Written out because it is
  ~7x faster than librosa's general version for these short clips.
  """
  window = scipy.signal.get_window("hann", config.win_size, fftbins=True)
  if config.win_size < config.n_fft:
    left = (config.n_fft - config.win_size) // 2
    window = np.pad(window, (left, config.n_fft - config.win_size - left))
  padded = np.pad(signal, (config.n_fft // 2, config.n_fft // 2))
  frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft)[::config.hop_size]
  return np.fft.rfft(frames * window, axis=1).T


def melspectrogram(wav_16k: np.ndarray, config: MelConfig = DEFAULT_MEL_CONFIG) -> np.ndarray:
  """Normalised log-mel spectrogram of a mono waveform.

  Args:
    wav_16k: [num_samples] float waveform at ``config.sample_rate`` (16 kHz), roughly in [-1, 1].
    config: front-end settings; the default reproduces the reference.
  Returns:
    [1 + num_samples // hop_size, num_mels] float32 in [-max_abs_value, max_abs_value].
  """
  wav = np.asarray(wav_16k)
  if wav.ndim != 1:
    raise ValueError(f"melspectrogram expects a mono waveform [num_samples], got shape "
                     f"{wav.shape}; use load_audio() to down-mix multi-channel audio")
  if wav.size == 0:
    raise ValueError("melspectrogram got an empty waveform (0 samples)")
  if not np.all(np.isfinite(wav)):
    raise ValueError("melspectrogram got NaN or infinite samples")
  emphasised = scipy.signal.lfilter([1.0, -config.preemphasis], [1.0], wav.astype(np.float64))
  mel = _sparse_mel_basis(config) @ np.abs(_stft(emphasised, config))
  min_level = 10.0 ** (config.min_level_db / 20.0)
  level_db = 20.0 * np.log10(np.maximum(min_level, mel)) - config.ref_level_db
  scaled = (2.0 * config.max_abs_value) * ((level_db - config.min_level_db) /
                                           (-config.min_level_db)) - config.max_abs_value
  normalised = np.clip(scaled, -config.max_abs_value, config.max_abs_value)
  return np.ascontiguousarray(normalised.T, dtype=np.float32)


# --- The 25 fps mel-window rule (the one place it is coded) -----------------------------------
# A window "at frame s" is mel rows int(80 * (s / fps)) : + 16, with the reference's float
# expression so rounding matches. The model's per-frame window of frame k is the window at
# max(k + 1 - 2, 0) (5 frames centred on k); SyncNet's window of a 5-frame face window starting
# at j is the window at j.

def mel_start_row(frame: np.ndarray | int, fps: float = VIDEO_FPS,
                  mel_steps_per_second: float = MEL_STEPS_PER_SECOND) -> np.ndarray:
  """First mel row of the window at video frame(s) ``frame`` (int64, same shape as ``frame``)."""
  return (mel_steps_per_second * (np.asarray(frame, np.float64) / float(fps))).astype(np.int64)


def mel_window_starts(start: int, stop: int, fps: float = VIDEO_FPS, context_frames: int = 2,
                      mel_steps_per_second: float = MEL_STEPS_PER_SECOND) -> np.ndarray:
  """``[stop - start]`` first mel rows of the per-frame windows of frames ``start..stop-1``."""
  frames = np.maximum(np.arange(start, stop) + 1 - context_frames, 0)
  return mel_start_row(frames, fps, mel_steps_per_second)


def count_mel_windows(mel: np.ndarray | int, fps: float = VIDEO_FPS,
                      window_steps: int = MEL_WINDOW_STEPS,
                      mel_steps_per_second: float = MEL_STEPS_PER_SECOND) -> int:
  """How many video frames (from frame 0) get a whole per-frame window of ``mel [M, 80]``.

  ``mel`` may also be the row count ``M``. Window starts grow with the frame, so the frames
  that fit are a prefix.
  """
  rows = int(mel) if np.ndim(mel) == 0 else len(mel)
  upper = int(rows * fps / mel_steps_per_second) + 3
  ends = mel_window_starts(0, upper, fps, mel_steps_per_second=mel_steps_per_second)
  return int(np.searchsorted(ends + window_steps, rows, side="right"))


def mel_windows(mel: np.ndarray, start: int, stop: int, fps: float = VIDEO_FPS,
                window_steps: int = MEL_WINDOW_STEPS) -> np.ndarray:
  """``[stop - start, 80, window_steps]`` per-frame windows of frames ``start..stop-1``.

  Equals ``frame_mel_windows(mel, stop)[start:]`` without building the earlier windows, so
  long audio can be processed chunk by chunk. Raises ``ValueError`` when a window runs past
  the spectrogram (see :func:`count_mel_windows`).
  """
  mel = _check_mel(mel)
  rows = mel_window_starts(start, stop, fps)[:, None] + np.arange(window_steps)
  if rows.size and rows.max() >= len(mel):
    raise ValueError(f"frames {start}..{stop - 1} need mel rows up to {rows.max()}, the audio "
                     f"has {len(mel)} (use count_mel_windows)")
  return np.ascontiguousarray(mel[rows].transpose(0, 2, 1))


def sync_mel_window(mel: np.ndarray, frame_index: int, fps: float = VIDEO_FPS,
                    window_steps: int = MEL_WINDOW_STEPS,
                    mel_steps_per_second: float = MEL_STEPS_PER_SECOND) -> np.ndarray:
  """Mel window that starts at video frame ``frame_index`` (Wav2Lip's ``crop_audio_window``).

  With the defaults it covers 16 rows = 5 video frames starting at the given frame, the
  audio SyncNet compares with frames ``frame_index .. frame_index + 4``.
  Args:
    mel: [T, num_mels] spectrogram from :func:`melspectrogram`.
    frame_index: 0-based video frame where the window starts.
  Returns:
    [num_mels, window_steps] float32 (mel bins x time).
  """
  mel = _check_mel(mel)
  if frame_index < 0:
    raise ValueError(f"frame_index must be >= 0, got {frame_index}")
  start = int(mel_start_row(frame_index, fps, mel_steps_per_second))
  if start + window_steps > mel.shape[0]:
    raise ValueError(f"sync window for frame {frame_index} needs mel rows [{start}, "
                     f"{start + window_steps}) but the spectrogram has only {mel.shape[0]} rows "
                     "(audio shorter than the video)")
  return np.ascontiguousarray(mel[start:start + window_steps].T)


def frame_mel_windows(mel: np.ndarray, num_frames: int, fps: float = VIDEO_FPS,
                      window_steps: int = MEL_WINDOW_STEPS,
                      mel_steps_per_second: float = MEL_STEPS_PER_SECOND,
                      context_frames: int = 2, pad_end: bool = False) -> np.ndarray:
  """Per-video-frame mel windows as built by the reference inference (``load_all_indiv_mels``).

  Frame k (0-based) gets the window at frame ``s = max(k + 1 - context_frames, 0)``.
  Frames whose window runs past the end of the spectrogram are dropped (reference
  behaviour), so the result may have fewer than ``num_frames`` windows; with ``pad_end=True``
  the spectrogram is instead extended by repeating its last row so that every frame gets one.
  Args:
    mel: [T, num_mels] spectrogram.
    num_frames: number of video frames.
  Returns:
    [N, num_mels, window_steps] float32 with N <= num_frames (== num_frames if pad_end).
  """
  mel = _check_mel(mel)
  if num_frames < 0:
    raise ValueError(f"num_frames must be >= 0, got {num_frames}")
  starts = mel_window_starts(0, num_frames, fps, context_frames, mel_steps_per_second)
  if pad_end:
    mel = pad_mel_to_frames(mel, num_frames, fps, window_steps, mel_steps_per_second,
                            context_frames)
  starts = starts[starts + window_steps <= mel.shape[0]]
  if not starts.size:
    return np.zeros((0, mel.shape[1], window_steps), np.float32)
  rows = starts[:, None] + np.arange(window_steps)[None, :]
  return np.ascontiguousarray(mel[rows].transpose(0, 2, 1))


def pad_mel_to_frames(mel: np.ndarray, num_frames: int, fps: float = VIDEO_FPS,
                      window_steps: int = MEL_WINDOW_STEPS,
                      mel_steps_per_second: float = MEL_STEPS_PER_SECOND,
                      context_frames: int = 2) -> np.ndarray:
  """``mel [M, 80]`` extended by repeating its last row until frames ``0..num_frames-1`` all
  get a whole per-frame window (unchanged when they already do; existing rows never change).

  The last frames of a clip have windows centred on them, so the final ~0.1 s of speech would
  otherwise have no frame: this is how the whole speech track gets frames.
  """
  mel = _check_mel(mel)
  if num_frames <= 0:
    return mel
  last = mel_window_starts(num_frames - 1, num_frames, fps, context_frames, mel_steps_per_second)
  needed = int(last[0]) + window_steps - mel.shape[0]
  if needed <= 0:
    return mel
  return np.concatenate([mel, np.repeat(mel[-1:], needed, axis=0)], axis=0)


def frames_spanned(num_samples: int, sample_rate: float, fps: float = VIDEO_FPS) -> int:
  """Video frames at ``fps`` needed to show ``num_samples`` of audio: ceil(duration * fps)."""
  frames = num_samples * fps / sample_rate
  return int(np.ceil(frames - 1e-6))  # a duration of exactly k frames needs k, not k + 1


def _check_mel(mel: np.ndarray) -> np.ndarray:
  mel = np.asarray(mel, dtype=np.float32)
  if mel.ndim != 2:
    raise ValueError(f"expected a mel spectrogram [T, num_mels], got shape {mel.shape}")
  return mel


def _to_float_mono(samples: np.ndarray) -> np.ndarray:
  """Integer or float PCM, [n] / [n, channels] / [channels, n] -> float32 [n] in [-1, 1]."""
  samples = np.asarray(samples)
  if np.issubdtype(samples.dtype, np.integer):
    info = np.iinfo(samples.dtype)
    if info.min == 0:  # unsigned PCM is offset by half the range
      samples = (samples.astype(np.float64) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    else:
      samples = samples.astype(np.float64) / (info.max + 1)
  elif not np.issubdtype(samples.dtype, np.floating):
    raise ValueError(f"audio samples must be integer or float, got dtype {samples.dtype}")
  if samples.ndim == 2:
    # Channels are the short axis: soundfile gives [n, c], librosa [c, n].
    channel_axis = 0 if samples.shape[0] < samples.shape[1] else 1
    samples = samples.mean(axis=channel_axis)
  elif samples.ndim != 1:
    raise ValueError(f"audio must be [n], [n, channels] or [channels, n], got {samples.shape}")
  return samples.astype(np.float32)


def resample(wav: np.ndarray, orig_sr: float, target_sr: float = SAMPLE_RATE) -> np.ndarray:
  """High-quality resampling (soxr HQ, librosa's default ``res_type``). [n] -> [n * target/orig]."""
  if orig_sr <= 0 or target_sr <= 0:
    raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
  wav = np.asarray(wav, dtype=np.float32)
  if orig_sr == target_sr:
    return wav
  return soxr.resample(wav, orig_sr, target_sr, quality="HQ").astype(np.float32)


def load_audio(path_or_array: PathOrArray, sr: float | None = None,
               target_sr: int = SAMPLE_RATE) -> np.ndarray:
  """Mono float32 waveform at ``target_sr`` (16 kHz) from a file or an array.

  Args:
    path_or_array: any file FFmpeg reads (wav, mp3, m4a, flac, the audio track of a video), or
      samples as [n], [n, channels] or [channels, n] (integer PCM is scaled to [-1, 1]).
    sr: sample rate of ``path_or_array`` when it is an array (None: already ``target_sr``).
      Ignored for files, whose rate is read from the container.
    target_sr: output rate.
  Returns:
    [num_samples] float32. Channels are averaged (as ``librosa.load(mono=True)`` does).
  Raises:
    FileNotFoundError, video_io.MediaFileError (unreadable file),
    video_io.NoAudioStreamError, ValueError (zero-length audio).
  """
  if isinstance(path_or_array, (str, os.PathLike)):
    from data_pipelines import video_io  # local: audio.py stays importable without PyAV
    samples, source_sr = video_io.read_audio_track(path_or_array)
    source = os.fspath(path_or_array)
  else:
    samples = _to_float_mono(path_or_array)
    source_sr = target_sr if sr is None else sr
    source = "the given array"
  if samples.size == 0:
    raise ValueError(f"zero-length audio in {source}: nothing to compute a spectrogram from")
  return resample(samples, source_sr, target_sr)
