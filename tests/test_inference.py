"""Inference library: mel windows, the jitted crop sampler, and the streamed video pipeline."""
import fractions
import random

import av
import numpy as np
import pytest

from data_pipelines import audio, video_io
from data_pipelines.face_detection import NoFaceError
from diff2lip_jax import checkpoints, inference
from tests import reference
from tests.inference_helpers import (BATCH, FULL, RESPACING, StubDetector, face_clip,
                                     lossless_round_trip, mouth_region_mask, random_params,
                                     reference_crops, tiny_config,
                                     voxceleb2_box, write_face_video, write_wav)


@pytest.fixture(scope="module")
def sampler(tiny_checkpoint):
  return inference.Diff2LipSampler.from_checkpoint(tiny_checkpoint)


def test_mel_windows_chunk_by_chunk_equal_the_reference_windows():
  golden = reference.load_npz("audio_golden.npz")
  mel, expected = golden["mel"], golden["indiv_mels"]
  assert inference.count_mel_windows(mel) == len(expected)
  chunks = [inference.mel_windows(mel, a, min(a + 7, len(expected)))
            for a in range(0, len(expected), 7)]
  np.testing.assert_array_equal(np.concatenate(chunks), expected)
  for rows in (15, 16, 17, 40, 81):  # short spectrograms: count agrees with the reference rule
    assert inference.count_mel_windows(mel[:rows]) == len(audio.frame_mel_windows(mel[:rows], 99))
  with pytest.raises(ValueError, match="mel rows"):
    inference.mel_windows(mel, 0, len(expected) + 1)


def _speech_frames(path) -> int:
  """Frames (25 fps) the audio track of ``path`` spans."""
  samples, rate = video_io.read_audio_track(path)
  return audio.frames_spanned(len(samples), rate)


def test_pingpong_covers_the_video_back_and_forth():
  assert inference.pingpong_index(np.arange(9), 3).tolist() == [0, 1, 2, 1, 0, 1, 2, 1, 0]
  assert inference.pingpong_index(np.arange(3), 1).tolist() == [0, 0, 0]


def test_generate_matches_the_trainer_path_and_is_batch_independent(tiny_checkpoint, sampler):
  clip = face_clip(11, 14)
  mel = clip.mel
  frames = clip.frames[:inference.count_mel_windows(mel)]  # frames with a full mel window
  mels = inference.mel_windows(mel, 0, len(frames))
  crops = sampler.generate(frames, frames, mels)
  assert crops.shape == frames.shape and crops.dtype == np.uint8
  np.testing.assert_array_equal(crops[:, :16], frames[:, :16])  # unmasked upper half
  assert np.abs(crops[:, 16:].astype(int) - frames[:, 16:]).mean() > 5
  params, config = checkpoints.load_inference_checkpoint(tiny_checkpoint)
  expected = reference_crops(params, config, frames, frames, mels, RESPACING, seed=7,
                             batch_size=BATCH)
  np.testing.assert_array_equal(crops, expected)
  # A whole clip driven by its spectrogram: frames without a full mel window are dropped.
  np.testing.assert_array_equal(sampler.lip_sync_crops(clip.frames, mel), crops)
  with pytest.raises(inference.InferenceInputError, match="0.2 s of audio"):
    sampler.lip_sync_crops(clip.frames, mel[:15])
  split = np.concatenate([sampler.generate(frames[:5], frames[:5], mels[:5]),
                          sampler.generate(frames[5:], frames[5:], mels[5:])])
  np.testing.assert_array_equal(split, crops)
  other_ref = sampler.generate(frames, np.repeat(frames[:1], len(frames), 0), mels)
  assert not np.array_equal(other_ref, crops)
  expected_shape = rf"mels must be \[{len(frames)}, 80, 16\]"
  with pytest.raises(inference.InferenceInputError, match=expected_shape):
    sampler.generate(frames, frames, mels[:, :, :8])


def test_mismatched_params_name_the_layers():
  config = tiny_config()
  params = random_params(config.model)
  config.model.num_channels = 64
  with pytest.raises(checkpoints.CheckpointError, match="mis-shaped"):
    inference.Diff2LipSampler(params, config)
  with pytest.raises(checkpoints.CheckpointError, match="does not exist"):
    inference.Diff2LipSampler.from_checkpoint("/nonexistent/ckpt")


def _streams(path):
  with av.open(str(path)) as container:
    video, sound = container.streams.video[0], container.streams.audio
    return (float(video.average_rate), float(video.duration * video.time_base),
            float(sound[0].duration * sound[0].time_base) if sound else None)


@pytest.fixture(scope="module")
def face_video(tmp_path_factory):
  directory = tmp_path_factory.mktemp("face")
  clip = face_clip(5, 30)
  path = write_face_video(directory / "face.mp4", clip)
  decoded, _ = video_io.read_video(path)
  return path, decoded, clip


def test_scan_and_frame_plan(face_video, tmp_path):
  video, decoded, _ = face_video
  s3fd = inference.parse_crop("s3fd", pads=(0, 4, 0, 0))
  scan = inference.scan_video(str(video), s3fd, detector=StubDetector(), max_frames=12,
                              cache_dir=str(tmp_path))
  assert scan.count == 12 and scan.frame_size == (FULL, FULL) and len(scan.detections) == 12
  np.testing.assert_array_equal(scan.first, decoded[0])
  np.testing.assert_array_equal(scan.cache, decoded[:12])
  np.testing.assert_array_equal(inference.frame_at(str(video), scan, 5), decoded[5])
  # Longer audio and loop_video: the cached frames play back and forth.
  plan = inference.FramePlan.create(str(video), scan, s3fd, audio_frames=20, loop_video=True)
  assert plan.looped and plan.total == 20 and plan.boxes.tolist() == [[20, 4, 76, 72]] * 12
  ks, frames = zip(*plan.chunks(8))
  assert [k.tolist() for k in ks] == [list(range(8)), list(range(8, 16)), list(range(16, 20))]
  source = inference.pingpong_index(np.arange(20), 12)
  np.testing.assert_array_equal(np.concatenate(frames), decoded[source])
  assert [f for _, f in plan.chunks(8, pixels=False)] == [None] * 3
  # Without a cache, the second pass decodes again and stops at the shorter of the two.
  fixed = inference.CropSpec()
  scan = inference.scan_video(str(video), fixed, max_frames=12)
  assert scan.detections is None and scan.cache is None
  np.testing.assert_array_equal(inference.frame_at(str(video), scan, 5), decoded[5])
  plan = inference.FramePlan.create(str(video), scan, fixed, audio_frames=30, loop_video=False)
  assert not plan.looped and plan.total == 12
  np.testing.assert_array_equal(np.concatenate([f for _, f in plan.chunks(5)]), decoded[:12])


def test_cross_mode_regenerates_only_the_mouth_and_plays(sampler, face_video, tmp_path):
  video, decoded, clip = face_video
  speech = face_clip(6, 24).wav  # shorter than the video: 24 frames of audio
  result = inference.lip_sync_video(sampler, video, write_wav(tmp_path / "s.wav", speech),
                                    tmp_path / "out.mp4", crf=0, preset="ultrafast")
  expected = 24  # every frame the speech spans: the last windows are padded, none dropped
  assert result.num_frames == expected and not result.looped
  assert inference.length_note(result).startswith("the video is longer than the speech")
  out, info = video_io.read_video(result.out_path)
  assert out.shape == (expected, FULL, FULL, 3) and info.has_audio
  fps, duration, audio_seconds = _streams(result.out_path)
  assert fps == 25.0 and duration == pytest.approx(expected / 25, abs=1e-3)
  assert audio_seconds == pytest.approx(expected / 25, abs=0.03)
  keep = mouth_region_mask(FULL, FULL, voxceleb2_box(FULL, FULL))
  baseline = lossless_round_trip(decoded[:expected], tmp_path)
  np.testing.assert_array_equal(out[:, keep], baseline[:, keep])
  assert np.abs(out[:, ~keep].astype(int) - baseline[:, ~keep]).mean() > 5


def test_reconstruction_mode_drives_the_first_frame(sampler, face_video, tmp_path):
  video, decoded, clip = face_video
  result = inference.lip_sync_video(sampler, video, video, tmp_path / "recon.mp4",
                                    mode="reconstruction", crf=0, preset="ultrafast")
  out, _ = video_io.read_video(result.out_path)
  own_audio = _speech_frames(video)
  assert result.ref_index == 0 and len(out) == result.num_frames == min(30, own_audio)
  keep = mouth_region_mask(FULL, FULL, voxceleb2_box(FULL, FULL))
  first = lossless_round_trip(decoded[:1], tmp_path)[0]
  for frame in out:  # every frame is the first frame outside the generated mouth
    np.testing.assert_array_equal(frame[keep], first[keep])
  assert not np.array_equal(decoded[5][keep], decoded[0][keep])  # the input does move
  mouths = out[:, ~keep].astype(int)
  assert np.abs(np.diff(mouths, axis=0)).mean() > 1  # mouths follow the audio, not frozen


def test_random_and_first_frame_references(sampler, face_video, tmp_path):
  video, _, _ = face_video
  outs = {}
  for ref in ("gt", "random", "first_frame"):
    result = inference.lip_sync_video(sampler, video, video, tmp_path / f"{ref}.mp4",
                                      ref_frame=ref, preset="ultrafast")
    outs[ref] = video_io.read_video(result.out_path)[0]
    if ref == "random":
      assert result.ref_index == random.Random(7).randint(0, result.num_frames - 1)
  keep = mouth_region_mask(FULL, FULL, voxceleb2_box(FULL, FULL))
  for ref in ("random", "first_frame"):
    assert np.abs(outs[ref][:, ~keep].astype(int) - outs["gt"][:, ~keep]).mean() > 1


def test_loop_video_plays_back_and_forth_to_cover_the_audio(sampler, face_video, tmp_path):
  video, decoded, clip = face_video
  speech = face_clip(8, 70).wav
  result = inference.lip_sync_video(sampler, video, write_wav(tmp_path / "long.wav", speech),
                                    tmp_path / "loop.mp4", loop_video=True, crf=0,
                                    preset="ultrafast", cache_dir=str(tmp_path))
  assert result.looped and result.video_frames == 30
  assert result.num_frames == 70  # the speech's 70 frames, the last ones included
  out, _ = video_io.read_video(result.out_path)
  keep = mouth_region_mask(FULL, FULL, voxceleb2_box(FULL, FULL))
  baseline = lossless_round_trip(decoded, tmp_path)
  source = inference.pingpong_index(np.arange(len(out)), 30)
  np.testing.assert_array_equal(out[:, keep], baseline[source][:, keep])
  assert [p.name for p in tmp_path.iterdir() if "diff2lip_frames" in p.name] == []


def test_stereo_speech_longer_than_the_video_is_kept_and_reported(sampler, face_video,
                                                                  tmp_path):
  video, _, _ = face_video  # 30 frames
  left = face_clip(13, 40).wav[:40 * 640]
  stereo = np.stack([left, -0.5 * left], axis=1)  # two different channels, 1.6 s
  result = inference.lip_sync_video(sampler, video, write_wav(tmp_path / "st.wav", stereo),
                                    tmp_path / "st.mp4", preset="ultrafast")
  assert (result.num_frames, result.video_frames, result.audio_frames) == (30, 30, 40)
  assert inference.length_note(result) == (
      "the speech lasts 1.60 s, the video 1.20 s: the last 0.40 s of speech were cut; pass "
      "--loop_video to cover the whole speech")
  samples, rate = video_io.read_audio_track(result.out_path, mono=False)
  assert samples.shape[1] == 2 and len(samples) / rate == pytest.approx(1.2, abs=0.01)
  assert np.corrcoef(samples[:, 0], samples[:, 1])[0, 1] < -0.95  # channels not mixed
  np.testing.assert_allclose(samples[1000:-1000, 1], -0.5 * samples[1000:-1000, 0], atol=0.05)


def test_grayscale_odd_sized_and_variable_rate_videos(sampler, tmp_path):
  clip = face_clip(9, 30, full=95)
  gray = clip.full_frames.mean(-1).astype(np.uint8)
  path = video_io.write_video(tmp_path / "gray.mp4", gray, audio=clip.wav, audio_sr=16000)
  result = inference.lip_sync_video(sampler, path, path, tmp_path / "g.mp4", preset="ultrafast")
  out, _ = video_io.read_video(result.out_path)
  own_audio = _speech_frames(path)
  assert out.shape == (own_audio, 96, 96, 3)
  # Variable frame rate: frames shown at irregular times are resampled to 25 fps.
  square = face_clip(10, 30).full_frames
  times_ms = np.cumsum([0] + [30, 50, 40, 30] * 10)[:40]
  vfr, ms = tmp_path / "vfr.mp4", fractions.Fraction(1, 1000)
  with av.open(str(vfr), "w") as container:
    stream = container.add_stream("libx264", rate=25)
    stream.width = stream.height = 96
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = stream.time_base = ms
    for i, t in enumerate(times_ms):
      frame = av.VideoFrame.from_ndarray(square[i % 30], format="rgb24")
      frame.pts, frame.time_base = int(t), ms
      container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
  expected, _ = video_io.read_video(vfr)
  result = inference.lip_sync_video(sampler, vfr, write_wav(tmp_path / "a.wav", clip.wav),
                                    tmp_path / "v.mp4", preset="ultrafast")
  assert result.num_frames == min(len(expected), own_audio) and _streams(result.out_path)[0] == 25.0


def test_face_detector_boxes_and_frames_without_a_face(sampler, face_video, tmp_path):
  video, decoded, _ = face_video
  box = (24, 8, 72, 72)
  result = inference.lip_sync_video(sampler, video, video, tmp_path / "d.mp4", crop="s3fd",
                                    detector=StubDetector(box), crf=0, preset="ultrafast")
  out, _ = video_io.read_video(result.out_path)
  keep = mouth_region_mask(FULL, FULL, box)
  baseline = lossless_round_trip(decoded[:len(out)], tmp_path)
  np.testing.assert_array_equal(out[:, keep], baseline[:, keep])
  strict = inference.parse_crop("s3fd", no_face="error")
  with pytest.raises(NoFaceError, match=r"face.mp4: no face detected in 3 of .*3-4, 17"):
    inference.lip_sync_video(sampler, video, video, tmp_path / "e.mp4", crop=strict,
                             detector=StubDetector(box, missing=(3, 4, 17)))
  assert not (tmp_path / "e.mp4").exists()
  filled = inference.parse_crop("s3fd", no_face="nearest")
  result = inference.lip_sync_video(sampler, video, video, tmp_path / "f.mp4", crop=filled,
                                    detector=StubDetector(box, missing=(3,)), preset="ultrafast")
  assert result.num_frames == min(30, _speech_frames(video))


def test_a_failure_while_writing_leaves_no_file(tiny_checkpoint, face_video, tmp_path,
                                                monkeypatch):
  video, _, _ = face_video
  # One frame per device and call: the 30-frame video takes several calls on any device count,
  # so the failure comes after frames were already encoded.
  sampler = inference.Diff2LipSampler.from_checkpoint(tiny_checkpoint, batch_size=1)
  assert 30 > 2 * sampler.num_devices
  calls = []
  original = sampler.submit

  def failing_submit(*args):
    calls.append(1)
    if len(calls) == 3:
      raise RuntimeError("device lost")
    return original(*args)

  monkeypatch.setattr(sampler, "submit", failing_submit)
  with pytest.raises(RuntimeError, match="device lost"):
    inference.lip_sync_video(sampler, video, video, tmp_path / "broken.mp4")
  assert list(tmp_path.iterdir()) == []


def test_ddpm_and_bfloat16_samplers(tiny_checkpoint, face_video):
  clip = face_clip(12, 14)
  frames = clip.frames[:8]
  mels = inference.mel_windows(clip.mel, 0, 8)
  params, config = checkpoints.load_inference_checkpoint(tiny_checkpoint)
  ddpm = inference.Diff2LipSampler(params, config, use_ddim=False, respacing="2")
  first, second = (ddpm.generate(frames, frames, mels) for _ in range(2))
  assert ddpm.describe()["sampler"] == "ddpm" and not np.array_equal(first, second)
  np.testing.assert_array_equal(first[:, :16], frames[:, :16])
  bf16 = inference.Diff2LipSampler(params, config, dtype="bfloat16")
  f32 = inference.Diff2LipSampler(params, config)
  low, full = bf16.generate(frames, frames, mels), f32.generate(frames, frames, mels)
  assert bf16.config.model.dtype == "bfloat16" and config.model.dtype == "float32"
  assert 0 < np.abs(low.astype(int) - full).mean() < 12


def test_background_iteration_reraises_and_stops_with_its_consumer():
  def failing():
    yield 1
    yield 2
    raise OSError("disk full")

  items = inference.in_background(failing())
  assert [next(items), next(items)] == [1, 2]
  with pytest.raises(OSError, match="disk full"):
    next(items)
  produced = []

  def endless():
    while True:
      produced.append(len(produced))
      yield produced[-1]

  items = inference.in_background(endless(), depth=2)
  assert next(items) == 0
  items.close()  # stops and joins the worker
  assert len(produced) <= 5
