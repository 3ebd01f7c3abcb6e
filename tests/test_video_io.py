"""PyAV video/audio IO: round trips, frame-rate resampling by timestamp, streaming, errors."""
import fractions
import os

import av
import numpy as np
import pytest

from data_pipelines import video_io
from tests.inference_helpers import write_audio_only

GRAY_STEP = 20  # frame i of the timestamp tests is filled with gray level i * GRAY_STEP


def _smooth_frames(count, height, width):
  """Gradients that drift over time: compress well, so round-trip error is small."""
  rows = np.linspace(0, 1, height)[:, None]
  cols = np.linspace(0, 1, width)[None, :]
  frames = [np.stack([80 + 120 * rows * np.ones_like(cols),
                      60 + 150 * cols * np.ones_like(rows),
                      np.full((height, width), 40 + 4 * i)], axis=-1) for i in range(count)]
  return np.asarray(frames).astype(np.uint8)


def _write_timestamped(path, times_ms, rate=25, size=32):
  """Video whose frame i (gray level i * GRAY_STEP) is shown from times_ms[i]; lossless.

  ``rate`` is the nominal frame rate the container declares (the last frame lasts 1 / rate).
  """
  ms = fractions.Fraction(1, 1000)
  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=fractions.Fraction(rate))
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = ms
    stream.time_base = ms
    stream.options = {"crf": "0"}
    for i, t in enumerate(times_ms):
      frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), i * GRAY_STEP, np.uint8),
                                         format="rgb24")
      frame.pts, frame.time_base = int(t), ms
      container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _indices(frames):
  return np.round(frames[:, 0, 0, 0] / GRAY_STEP).astype(int).tolist()


def _expected_indices(times_ms, end_ms, fps=25.0):
  """FFmpeg fps filter (round=near): slot n shows the newest frame with round(t*fps) <= n."""
  slots = [int(np.floor(t / 1000 * fps + 0.5)) for t in times_ms]
  count = int(np.floor(end_ms / 1000 * fps + 0.5))
  return [max(i for i, s in enumerate(slots) if s <= n or i == 0) for n in range(count)]


def test_round_trip_with_audio(tmp_path):
  frames = _smooth_frames(30, 48, 64)
  t = np.arange(int(1.2 * 16000)) / 16000
  sound = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  path = video_io.write_video(tmp_path / "clip.mp4", frames, fps=25, audio=sound, audio_sr=16000)
  assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]  # no temporary left behind
  decoded, info = video_io.read_video(path)
  assert decoded.shape == (30, 48, 64, 3) and decoded.dtype == np.uint8
  assert info.fps == 25.0 and info.source_fps == 25.0 and info.num_frames == 30
  assert (info.width, info.height) == (64, 48) and info.has_audio
  assert info.audio_sample_rate == 16000
  assert np.abs(decoded.astype(float) - frames).mean() < 2.0
  samples, rate = video_io.read_audio_track(path)
  assert rate == 16000 and samples.dtype == np.float32
  assert samples.size == sound.size  # encoder padding trimmed
  assert np.abs(samples[1000:-1000] - sound[1000:-1000]).max() < 0.05
  assert info.start_time == 0.0 and info.audio_start_time == 0.0
  probed = video_io.probe_video(path)
  assert probed.source_frames == 30 and abs(probed.duration - 1.2) < 1e-6


def test_stereo_audio_tracks_keep_their_channels(tmp_path):
  t = np.arange(16000) / 16000
  left = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  stereo = np.stack([left, -0.5 * left], axis=1)
  path = video_io.write_video(tmp_path / "st.mp4", np.zeros((25, 16, 16, 3), np.uint8),
                              audio=stereo, audio_sr=16000)
  channels, rate = video_io.read_audio_track(path, mono=False)
  mono, _ = video_io.read_audio_track(path)
  assert rate == 16000 and channels.shape == (16000, 2) and mono.shape == (16000,)
  np.testing.assert_allclose(channels[1000:-1000, 0], left[1000:-1000], atol=0.05)
  np.testing.assert_allclose(channels[1000:-1000, 1], -0.5 * left[1000:-1000], atol=0.05)
  assert np.corrcoef(channels[:, 0], channels[:, 1])[0, 1] < -0.99  # not mixed
  np.testing.assert_allclose(mono, channels.mean(axis=1), atol=1e-6)


def test_odd_size_and_grayscale(tmp_path):
  color = _smooth_frames(5, 47, 63)
  path = video_io.write_video(tmp_path / "odd.mp4", color)
  decoded, info = video_io.read_video(path)
  assert decoded.shape == (5, 48, 64, 3)  # padded by one replicated row and column
  assert np.abs(decoded[:, :47, :63].astype(float) - color).mean() < 2.0
  gray = color[..., 0]
  decoded, _ = video_io.read_video(video_io.write_video(tmp_path / "gray.mp4", gray))
  assert np.abs(decoded[:, :47, :63].astype(float) - gray[..., None]).mean() < 2.0


def test_variable_frame_rate_resampled_by_timestamp(tmp_path):
  times = [0, 30, 70, 80, 150, 160, 170, 260, 300, 310, 390]
  _write_timestamped(tmp_path / "vfr.mp4", times)
  frames, info = video_io.read_video(tmp_path / "vfr.mp4", fps=25)
  end = info.duration * 1000  # last frame's display end
  assert _indices(frames) == _expected_indices(times, end) == [0, 1, 3, 3, 6, 6, 6, 7, 9, 9, 10]
  native, _ = video_io.read_video(tmp_path / "vfr.mp4", fps=None)
  assert _indices(native) == list(range(len(times)))


@pytest.mark.parametrize("source_fps, count", [(30, 12), (50, 12), (12.5, 6)])
def test_constant_rate_resampled_to_25(tmp_path, source_fps, count):
  times = [int(1000 * i / source_fps) for i in range(count)]
  _write_timestamped(tmp_path / "cfr.mp4", times, rate=source_fps)
  frames, info = video_io.read_video(tmp_path / "cfr.mp4")
  assert abs(info.source_fps - source_fps) < 0.1
  assert _indices(frames) == _expected_indices(times, 1000 * count / source_fps)
  assert len(frames) == round(count * 25 / source_fps)


def test_streaming_chunks(tmp_path):
  frames = _smooth_frames(23, 16, 16)
  path = video_io.write_video(tmp_path / "long.mp4", frames)
  chunks = list(video_io.iter_video_chunks(path, chunk_size=5))
  assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
  whole, _ = video_io.read_video(path)
  np.testing.assert_array_equal(np.concatenate(chunks), whole)
  first, info = video_io.read_video(path, max_frames=7)
  np.testing.assert_array_equal(first, whole[:7])
  assert info.num_frames == 7


def test_non_ascii_path(tmp_path):
  folder = tmp_path / "vidéos 测试"
  folder.mkdir()
  path = video_io.write_video(folder / "лицо.mp4", _smooth_frames(3, 16, 16),
                              audio=np.zeros(2000, np.float32))
  assert video_io.read_video(path)[0].shape == (3, 16, 16, 3)
  assert video_io.read_audio_track(path)[1] == 16000


def test_read_errors_name_the_file(tmp_path):
  path = video_io.write_video(tmp_path / "good.mp4", _smooth_frames(25, 32, 32))
  data = path.read_bytes()
  truncated = tmp_path / "truncated.mp4"
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(video_io.MediaFileError, match="truncated.mp4"):
    video_io.read_video(truncated)
  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(b"not a video at all" * 10)
  with pytest.raises(video_io.MediaFileError, match="garbage.mp4"):
    video_io.read_video(garbage)
  with pytest.raises(FileNotFoundError, match="nothing.mp4"):
    video_io.read_video(tmp_path / "nothing.mp4")
  with pytest.raises(video_io.NoAudioStreamError, match="good.mp4"):
    video_io.read_audio_track(path)
  audio_only = write_audio_only(tmp_path / "voice.m4a", samples=4000)
  with pytest.raises(video_io.NoVideoStreamError, match="voice.m4a"):
    video_io.read_video(audio_only)


def test_failed_write_leaves_nothing(tmp_path):
  target = tmp_path / "out.mp4"
  target.write_bytes(b"previous")

  def frames():
    yield np.zeros((16, 16, 3), np.uint8)
    yield np.zeros((16, 16, 3), np.float32)  # wrong dtype half way

  with pytest.raises(ValueError, match="frame 1"):
    video_io.write_video(target, frames())
  assert target.read_bytes() == b"previous"
  assert sorted(os.listdir(tmp_path)) == ["out.mp4"]
  with pytest.raises(ValueError, match="size"):
    video_io.write_video(tmp_path / "x.mp4", [np.zeros((16, 16, 3), np.uint8),
                                              np.zeros((18, 16, 3), np.uint8)])
  with pytest.raises(FileNotFoundError):
    video_io.write_video(tmp_path / "no" / "dir.mp4", np.zeros((1, 16, 16, 3), np.uint8))
  with pytest.raises(ValueError, match="single frame"):
    video_io.write_video(tmp_path / "one.mp4", np.zeros((16, 16, 3), np.uint8))
