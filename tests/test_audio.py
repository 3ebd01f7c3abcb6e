"""Audio front end: golden parity with the reference, window indexing, loading and resampling."""
import fractions

import av
import librosa
import numpy as np
import pytest
import soundfile

from data_pipelines import audio, video_io
from tests.reference import load_npz


@pytest.fixture(scope="module")
def golden():
  return load_npz("audio_golden.npz")


def _tone(sample_rate, seconds=1.0, frequencies=(220.0, 1250.0, 3100.0)):
  t = np.arange(int(sample_rate * seconds)) / sample_rate
  envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)  # varying level so the mel is not flat
  wave = sum(np.sin(2 * np.pi * f * t) for f in frequencies) * envelope / len(frequencies)
  return (0.5 * wave).astype(np.float32)


def test_melspectrogram_matches_golden(golden):
  mel = audio.melspectrogram(golden["wav"])
  assert mel.dtype == np.float32
  assert mel.shape == golden["mel"].shape == (1 + golden["wav"].size // 200, 80)
  assert np.abs(mel - golden["mel"]).max() <= 1e-4


def test_melspectrogram_range_and_shape():
  mel = audio.melspectrogram(np.zeros(1600, np.float32))
  assert mel.shape == (9, 80)
  np.testing.assert_array_equal(mel, -4.0)  # silence sits at the clipped floor
  loud = audio.melspectrogram(np.random.default_rng(0).uniform(-1, 1, 4000).astype(np.float32))
  assert loud.max() <= 4.0 and loud.min() >= -4.0 and loud.max() > 0


def test_tone_peaks_in_its_mel_band():
  mel = audio.melspectrogram(_tone(16000, frequencies=(1000.0,)))
  centres = librosa.mel_frequencies(82, fmin=55, fmax=7600)[1:-1]
  assert abs(centres[int(np.argmax(mel[10:-10].mean(0)))] - 1000.0) < 60.0


def test_frame_mel_windows_match_golden(golden):
  windows = audio.frame_mel_windows(golden["mel"], num_frames=1000)
  assert windows.shape == golden["indiv_mels"].shape == (56, 80, 16)
  np.testing.assert_array_equal(windows, golden["indiv_mels"])
  ours = audio.frame_mel_windows(audio.melspectrogram(golden["wav"]), num_frames=56)
  assert np.abs(ours - golden["indiv_mels"]).max() <= 1e-4


def test_frame_mel_windows_indexing_and_padding(golden):
  mel = golden["mel"]
  windows = audio.frame_mel_windows(mel, num_frames=10)
  for k in (0, 1, 2, 7, 9):
    start = int(80.0 * (max(k - 1, 0) / 25.0))
    np.testing.assert_array_equal(windows[k], mel[start:start + 16].T)
  padded = audio.frame_mel_windows(mel, num_frames=60, pad_end=True)
  assert padded.shape == (60, 80, 16)
  np.testing.assert_array_equal(padded[:56], golden["indiv_mels"])
  np.testing.assert_array_equal(padded[-1][:, -1], mel[-1])
  assert audio.frame_mel_windows(mel[:10], num_frames=5).shape == (0, 80, 16)


def test_padding_the_mel_gives_every_spanned_frame_a_window(golden):
  mel = golden["mel"]
  seconds = (len(mel) - 1) / 80.0  # the golden's audio length (1 + samples // 200 rows)
  frames = audio.frames_spanned(int(round(seconds * 16000)), 16000)
  assert frames == int(np.ceil(seconds * 25 - 1e-6)) > audio.count_mel_windows(mel)
  padded = audio.pad_mel_to_frames(mel, frames)
  np.testing.assert_array_equal(padded[:len(mel)], mel)  # existing rows never change
  np.testing.assert_array_equal(padded[len(mel):], np.repeat(mel[-1:], len(padded) - len(mel), 0))
  assert audio.count_mel_windows(padded) >= frames
  assert audio.count_mel_windows(padded[:-1]) < frames  # no more rows than needed
  np.testing.assert_array_equal(audio.mel_windows(padded, 0, frames),
                                audio.frame_mel_windows(mel, frames, pad_end=True))
  assert len(audio.pad_mel_to_frames(mel, 3)) == len(mel)  # already covered: unchanged
  assert [audio.frames_spanned(n, 16000) for n in (640, 641, 16000, 16001, 1)] == [1, 2, 25, 26, 1]
  assert audio.frames_spanned(44100, 44100) == 25


def test_sync_mel_window(golden):
  mel = golden["mel"]
  np.testing.assert_array_equal(audio.sync_mel_window(mel, 10), mel[32:48].T)
  np.testing.assert_array_equal(audio.sync_mel_window(mel, 7), mel[22:38].T)  # int(22.4)
  assert audio.sync_mel_window(mel, 54).shape == (80, 16)
  with pytest.raises(ValueError, match="frame 55"):
    audio.sync_mel_window(mel, 55)


def test_resampled_44k_matches_16k_mel():
  native = audio.melspectrogram(_tone(16000))
  resampled = audio.melspectrogram(audio.load_audio(_tone(44100), sr=44100))
  assert resampled.shape == native.shape
  # Away from the ends (resampler edge transients) the spectrograms agree to ~2e-5.
  assert np.abs(resampled[2:-2] - native[2:-2]).max() < 1e-3


def test_load_audio_from_files(tmp_path):
  stereo = np.stack([_tone(44100), 0.5 * _tone(44100)], axis=1)
  soundfile.write(tmp_path / "stereo.wav", stereo, 44100, subtype="FLOAT")
  wav = audio.load_audio(tmp_path / "stereo.wav")
  expected = audio.resample(stereo.mean(axis=1), 44100)
  assert wav.dtype == np.float32 and wav.shape == (16000,)
  assert np.abs(wav - expected).max() < 1e-5

  frames = np.zeros((25, 32, 32, 3), np.uint8)
  video_io.write_video(tmp_path / "talk.mp4", frames, audio=_tone(16000))
  from_video = audio.load_audio(str(tmp_path / "talk.mp4"))
  assert from_video.shape == (16000,)
  assert np.corrcoef(from_video[2000:14000], _tone(16000)[2000:14000])[0, 1] > 0.98

  mp3 = tmp_path / "clip.mp3"
  with av.open(str(mp3), "w") as container:
    stream = container.add_stream("libmp3lame", rate=22050, layout="mono")
    frame = av.AudioFrame.from_ndarray(_tone(22050)[None], format="fltp", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = 22050, 0, fractions.Fraction(1, 22050)
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  assert abs(audio.load_audio(mp3).size - 16000) <= 1200  # MP3 frame padding


def test_load_audio_arrays():
  pcm = (np.clip(_tone(16000), -1, 1) * 32767).astype(np.int16)
  np.testing.assert_allclose(audio.load_audio(pcm), pcm / 32768.0, atol=1e-7)
  channels_first = np.stack([_tone(16000), np.zeros(16000, np.float32)])
  np.testing.assert_allclose(audio.load_audio(channels_first), _tone(16000) / 2, atol=1e-7)


def test_load_audio_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.wav"):
    audio.load_audio(tmp_path / "missing.wav")
  with pytest.raises(ValueError, match="zero-length"):
    audio.load_audio(np.zeros(0, np.float32))
  soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
  with pytest.raises(video_io.MediaFileError, match="empty.wav"):
    audio.load_audio(tmp_path / "empty.wav")
  video_io.write_video(tmp_path / "silent.mp4", np.zeros((5, 16, 16, 3), np.uint8))
  with pytest.raises(video_io.NoAudioStreamError, match="silent.mp4"):
    audio.load_audio(tmp_path / "silent.mp4")
  with pytest.raises(ValueError, match="mono"):
    audio.melspectrogram(np.zeros((2, 100), np.float32))
  with pytest.raises(ValueError, match="NaN"):
    audio.melspectrogram(np.full(100, np.nan, np.float32))
