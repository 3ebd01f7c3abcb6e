"""syncnet_python's MFCC front end vs python_speech_features (goldens; the package if installed)."""
import numpy as np
import pytest

from data_pipelines import mfcc
from tests.metric_goldens import load_golden

# Same numpy/scipy operations in the same order: equal up to FFT-library rounding.
RTOL, ATOL = 1e-10, 1e-10


@pytest.fixture(scope="module")
def golden():
  return load_golden("lse_golden.npz")


@pytest.mark.parametrize("case", ["", "_short", "_silence"])
def test_matches_python_speech_features_goldens(golden, case):
  signal = golden["wav_int16" if not case else f"mfcc{case}_int16"]
  got = mfcc.syncnet_mfcc(signal)
  want = golden[f"mfcc{case}"]
  assert got.shape == want.shape and got.dtype == np.float64
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_frame_count_and_rate():
  # 100 frames per second: 1 + ceil((n - 400) / 160), one frame for n <= 400.
  for n, frames in ((1, 1), (400, 1), (401, 2), (560, 2), (561, 3), (16000, 99)):
    assert mfcc.syncnet_mfcc(np.ones(n, np.int16)).shape == (frames, 13)
  assert mfcc.MFCC_FRAMES_PER_VIDEO_FRAME * 25 == mfcc.SAMPLE_RATE // mfcc.FRAME_STEP


def test_filterbank_is_triangular_on_fft_bins():
  bank = mfcc.mel_filterbank()
  assert bank.shape == (26, 257)
  assert np.all(bank >= 0) and np.all(bank <= 1)
  peaks = bank.argmax(axis=1)
  assert np.all(np.diff(peaks) > 0) and np.allclose(bank.max(axis=1), 1.0)
  edges = np.floor(513 * mfcc.mel_to_hz(np.linspace(0, mfcc.hz_to_mel(8000), 28)) / 16000)
  np.testing.assert_array_equal(peaks, edges[1:-1])


def test_float_audio_maps_to_pcm16_like_ffmpeg():
  pcm = np.array([-32768, -3, 0, 5, 32767], np.int16)
  np.testing.assert_array_equal(mfcc.to_pcm16(pcm.astype(np.float32) / 32768), pcm)
  np.testing.assert_array_equal(mfcc.to_pcm16(np.array([1.5, -2.0, 2.5 / 32768])),
                                [32767, -32768, 2])                  # clip; half to even
  np.testing.assert_allclose(mfcc.syncnet_mfcc(pcm.astype(np.float64) / 32768),
                             mfcc.syncnet_mfcc(pcm))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((100, 2)), "mono"), (np.zeros(100, np.int32), "int16"),
    (np.array([0.0, np.nan]), "NaN"), (np.zeros(0, np.int16), "empty")])
def test_bad_audio_is_refused(bad, match):
  with pytest.raises(ValueError, match=match):
    mfcc.syncnet_mfcc(bad)


def test_only_16k():
  with pytest.raises(ValueError, match="16000"):
    mfcc.syncnet_mfcc(np.zeros(1000, np.int16), sample_rate=8000)


def test_random_signals_against_the_package():
  psf = pytest.importorskip("python_speech_features")
  rng = np.random.default_rng(5)
  for n in (250, 401, 7777):
    signal = (rng.standard_normal(n) * 4000).astype(np.int16)
    np.testing.assert_allclose(mfcc.syncnet_mfcc(signal), psf.mfcc(signal, 16000),
                               rtol=RTOL, atol=ATOL)
