"""MFCC front end of joonson/syncnet_python: `python_speech_features.mfcc` with its defaults.

syncnet_python reads 16 kHz 16-bit PCM with `scipy.io.wavfile` (integer sample values, NOT
scaled to [-1, 1]) and calls `mfcc(audio, 16000)`:
  pre-emphasis 0.97 on the whole signal; 25 ms frames (400 samples) every 10 ms (160 samples,
  100 frames/s = 4 per 25 fps video frame), the last frame zero-padded, no window function;
  power spectrum `|rfft(frame, 512)|^2 / 512`; 26 triangular mel filters from 0 Hz to 8 kHz
  (edges on FFT bins `floor(513 * mel2hz(m) / 16000)`); natural log (zeros -> float eps);
  orthonormal DCT-II, first 13 coefficients; sinusoidal lifter 22; coefficient 0 replaced by
  the log of the frame's total power.
The same numpy/scipy operations in the same order, so the output matches the package to the
last bits (checked against it in tests). Sample scale matters (it shifts every log energy), so
float audio is first brought to 16-bit values the way ffmpeg writes a `pcm_s16le` WAV.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

SAMPLE_RATE = 16000
FRAME_LENGTH = 400        # 0.025 s
FRAME_STEP = 160          # 0.01 s -> 100 MFCC frames per second
N_FFT = 512
N_FILTERS = 26
N_CEPSTRA = 13
PREEMPHASIS = 0.97
CEPSTRAL_LIFTER = 22
MFCC_FRAMES_PER_VIDEO_FRAME = 4   # 100 MFCC frames/s over 25 video frames/s
SAMPLES_PER_VIDEO_FRAME = 640     # 16000 / 25


def to_pcm16(wav: np.ndarray) -> np.ndarray:
  """Mono audio as 16-bit sample values (int16), the scale syncnet_python computes MFCCs on.

  int16 input is returned unchanged. Float input is taken as [-1, 1] audio and converted as
  ffmpeg converts float to `s16` (`round-half-even(x * 32768)`, clipped), which inverts the
  usual `int16 / 32768` decoding exactly.
  """
  wav = np.asarray(wav)
  if wav.ndim != 1:
    raise ValueError(f"audio must be mono [num_samples], got shape {wav.shape}")
  if wav.dtype == np.int16:
    return wav
  if not np.issubdtype(wav.dtype, np.floating):
    raise ValueError(f"audio must be int16 PCM or float in [-1, 1], got dtype {wav.dtype}")
  if not np.all(np.isfinite(wav)):
    raise ValueError("audio contains NaN or infinite samples")
  return np.clip(np.rint(wav.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray | float:
  return 2595 * np.log10(1 + hz / 700.)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray | float:
  return 700 * (10 ** (mel / 2595.0) - 1)


def mel_filterbank(num_filters: int = N_FILTERS, n_fft: int = N_FFT,
                   sample_rate: int = SAMPLE_RATE, low_hz: float = 0.0,
                   high_hz: float | None = None) -> np.ndarray:
  """`[num_filters, n_fft // 2 + 1]` float64 triangular filters (python_speech_features')."""
  high_hz = high_hz or sample_rate / 2
  if high_hz > sample_rate / 2:
    raise ValueError(f"high_hz {high_hz} is above the Nyquist frequency {sample_rate / 2}")
  mels = np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), num_filters + 2)
  edges = np.floor((n_fft + 1) * mel_to_hz(mels) / sample_rate)
  bins = np.arange(n_fft // 2 + 1, dtype=np.float64)
  bank = np.zeros((num_filters, n_fft // 2 + 1))
  for j in range(num_filters):
    lo, mid, hi = edges[j], edges[j + 1], edges[j + 2]
    rising = (bins >= lo) & (bins < mid)
    falling = (bins >= mid) & (bins < hi)
    # Empty ranges (lo == mid) never divide: the masks select nothing there.
    bank[j, rising] = (bins[rising] - lo) / (mid - lo) if mid > lo else 0.0
    bank[j, falling] = (hi - bins[falling]) / (hi - mid) if hi > mid else 0.0
  return bank


def frame_signal(signal: np.ndarray, frame_length: int = FRAME_LENGTH,
                 frame_step: int = FRAME_STEP) -> np.ndarray:
  """`[num_frames, frame_length]`: one frame if the signal fits in one, otherwise
  `1 + ceil((n - frame_length) / frame_step)` frames, the tail zero-padded."""
  n = len(signal)
  num_frames = 1 if n <= frame_length else 1 + int(np.ceil((n - frame_length) / frame_step))
  padded = np.zeros((num_frames - 1) * frame_step + frame_length)
  padded[:n] = signal
  starts = np.arange(num_frames)[:, None] * frame_step
  return padded[starts + np.arange(frame_length)[None, :]]


def syncnet_mfcc(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """syncnet_python's MFCCs of one mono clip.

  Args:
    wav: `[num_samples]` int16 PCM, or float in [-1, 1] (converted with `to_pcm16`).
    sample_rate: must be 16000 (the rate syncnet_python extracts audio at).
  Returns:
    `[num_frames, 13]` float64, 100 frames per second (syncnet_python feeds its transpose,
    `[13, num_frames]`, as float32).
  """
  if sample_rate != SAMPLE_RATE:
    raise ValueError(f"syncnet_python MFCCs are defined at {SAMPLE_RATE} Hz, got {sample_rate}; "
                     "resample first (e.g. data_pipelines.audio.resample)")
  pcm = to_pcm16(wav)
  if pcm.size == 0:
    raise ValueError("audio is empty")
  signal = pcm.astype(np.float64)
  emphasized = np.append(signal[0], signal[1:] - PREEMPHASIS * signal[:-1])
  frames = frame_signal(emphasized)
  power = 1.0 / N_FFT * np.square(np.absolute(np.fft.rfft(frames, N_FFT)))
  energy = np.sum(power, 1)
  energy = np.where(energy == 0, np.finfo(float).eps, energy)
  bands = np.dot(power, mel_filterbank().T)
  bands = np.where(bands == 0, np.finfo(float).eps, bands)
  cepstra = scipy.fft.dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :N_CEPSTRA]
  lift = 1 + (CEPSTRAL_LIFTER / 2.) * np.sin(np.pi * np.arange(N_CEPSTRA) / CEPSTRAL_LIFTER)
  cepstra = lift * cepstra
  cepstra[:, 0] = np.log(energy)
  return cepstra
