"""Curation: measured offsets equal injected ones, the audio shift re-aligns the clip exactly,
face / confidence / scene filters drop with the right reasons, and the report adds up."""
import csv
import json

import numpy as np
import PIL.Image
import pytest

from data_pipelines import audio, synthetic
from data_pipelines.curation import curate, faces, report, sync

PER_FRAME = 640           # 16 kHz / 25 fps
MARGIN = 8                # frames rendered beyond the clip so audio can be shifted into it
NO_SCENES = curate.CurationConfig(scene_detection=False, min_confidence=1.5)


@pytest.fixture(scope="module")
def source():
  return synthetic.generate_clip(21, 60 + 2 * MARGIN)


def _shifted(clip, lead: int, frames: int = 60):
  """Video frames MARGIN.. and audio that leads them by `lead` frames (> 0: heard earlier)."""
  video = clip.frames[MARGIN:MARGIN + frames]
  wav = clip.wav[(MARGIN + lead) * PER_FRAME:(MARGIN + lead + frames) * PER_FRAME]
  return video, wav, np.tile([8.0, 6.0, 120.0, 126.0], (frames, 1))


@pytest.mark.parametrize("lead", range(-5, 6))
def test_measured_offset_is_the_injected_one_and_the_shift_realigns(source, lead):
  frames, wav, boxes = _shifted(source, lead)
  result = curate.curate_clip(frames, wav, boxes, config=NO_SCENES,
                              measurer=sync.synthetic_measurer(), clip_id=f"lead{lead}")
  (seg,) = result.segments
  assert (seg.keep, seg.reason, seg.offset) == (True, "kept", lead)
  assert seg.audio_shift_samples == lead * PER_FRAME
  out_frames, out_wav, out_boxes = curate.apply_segment(frames, wav, seg, boxes)
  # The curated pair is exactly the source's aligned video and audio.
  first = MARGIN + max(lead, 0)
  count = 60 - abs(lead)
  np.testing.assert_array_equal(out_frames, source.frames[first:first + count])
  np.testing.assert_array_equal(out_wav, source.wav[first * PER_FRAME:(first + count) * PER_FRAME])
  assert len(out_boxes) == count
  again = sync.synthetic_measurer().measure(out_frames, out_boxes, out_wav)
  assert again.offset == 0


def test_aligned_span_cases():
  # Audio leads by 3: the first 3 frames lose their sound; the audio keeps its start.
  assert sync.aligned_span(10, 10 * PER_FRAME, 3) == sync.AlignedSpan(3, 10, 0, 7 * PER_FRAME)
  # Audio lags by 2: frame t is paired with audio from frame t + 2; the last 2 frames go.
  assert sync.aligned_span(10, 10 * PER_FRAME, -2) == sync.AlignedSpan(
      0, 8, 2 * PER_FRAME, 10 * PER_FRAME)
  # Audio longer than the video is cut to the kept frames; a partial last frame is kept.
  assert sync.aligned_span(10, 12 * PER_FRAME, 0) == sync.AlignedSpan(0, 10, 0, 10 * PER_FRAME)
  assert sync.aligned_span(10, 9 * PER_FRAME + 5, 0) == sync.AlignedSpan(0, 10, 0,
                                                                         9 * PER_FRAME + 5)
  assert sync.aligned_span(4, 4 * PER_FRAME, 6).num_frames == 0
  assert sync.audio_shift_samples(-3) == -3 * PER_FRAME
  with pytest.raises(ValueError, match="whole number of samples"):
    sync.audio_shift_samples(1, fps=30.0, sample_rate=16000)


def test_mels_follow_the_shifted_waveform(source):
  """A 5-frame shift is 16 mel rows (3.2 per frame): mels of the shifted audio are the
  original's rows 16 later (away from the padded edges)."""
  wav = source.wav
  shifted = wav[5 * PER_FRAME:]
  original, moved = audio.melspectrogram(wav), audio.melspectrogram(shifted)
  np.testing.assert_allclose(moved[4:-4], original[16 + 4:16 + len(moved) - 4], atol=1e-4)


def test_unrelated_audio_is_dropped_for_low_confidence(source):
  other = synthetic.generate_clip(22, 60)
  frames, _, boxes = _shifted(source, 0)
  # No threshold configured: the measurer's default (1.5 for synthetic faces) applies.
  defaults = curate.CurationConfig(scene_detection=False)
  result = curate.curate_clip(frames, other.wav, boxes, config=defaults,
                              measurer=sync.make_measurer("synthetic"))
  (seg,) = result.segments
  assert (seg.keep, seg.reason) == (False, "low_confidence") and seg.confidence < 1.5
  assert seg.detail.endswith("< 1.5")
  with pytest.raises(ValueError, match="dropped"):
    curate.apply_segment(frames, other.wav, seg)
  strict = curate.CurationConfig(scene_detection=False, min_confidence=0.0, max_abs_offset=0)
  frames, wav, boxes = _shifted(source, 4)
  (seg,) = curate.curate_clip(frames, wav, boxes, config=strict,
                              measurer=sync.synthetic_measurer()).segments
  assert (seg.reason, seg.offset) == ("offset_out_of_range", 4)


def test_face_statistics_and_filters(source):
  frames, wav, boxes = _shifted(source, 0, 30)
  boxes = np.tile([10.0, 20.0, 70.0, 100.0], (30, 1))    # 60 x 80 px: shorter side 60
  scores = np.full(30, 0.9)
  boxes[:3], scores[:3] = -1, 0.0                           # no face in 3 of 30 frames
  stats = faces.face_stats(boxes, scores)
  assert (stats.face_size, stats.min_face_size) == (60.0, 60.0)
  np.testing.assert_allclose([stats.mean_score, stats.min_score, stats.missing_fraction],
                             [0.81, 0.0, 0.1])
  base = dict(scene_detection=False, sync=False, min_frames=10)
  expected = {(64.0, 0.2, 0.0): "small_face", (50.0, 0.05, 0.0): "missing_faces",
              (50.0, 0.2, 0.85): "low_detection_score", (50.0, 0.2, 0.8): "kept"}
  for (size, missing, score), reason in expected.items():
    config = curate.CurationConfig(min_face_size=size, max_missing_fraction=missing,
                                   min_mean_score=score, **base)
    (seg,) = curate.curate_clip(frames, wav, boxes, scores, config=config).segments
    assert seg.reason == reason, (size, missing, score)
  detections = [np.array([[1, 2, 30, 40, 0.6], [-4, 10, 50, 60, 0.95]]), np.zeros((0, 5))]
  best, best_scores = faces.best_detections(detections)
  np.testing.assert_array_equal(best, [[-4, 10, 50, 60], [-1, -1, -1, -1]])
  np.testing.assert_array_equal(best_scores, [0.95, 0.0])
  edge = np.array([[-4.0, 10, 50, 60], [-1, -1, -1, -1], [np.nan, 0, 9, 9], [5, 5, 5, 9]])
  np.testing.assert_array_equal(faces.face_found(edge), [True, False, False, False])
  filled = faces.fill_missing(boxes, faces.face_found(boxes, scores))
  np.testing.assert_array_equal(filled, np.tile([10.0, 20.0, 70.0, 100.0], (30, 1)))


def _two_shots():
  a, b = synthetic.generate_clip(31, 40), synthetic.generate_clip(32, 12)
  frames = np.concatenate([a.frames, b.frames])
  wav = np.concatenate([a.wav, b.wav])
  return frames, wav, np.tile([8.0, 6.0, 120.0, 126.0], (52, 1))


def test_scene_policies_split_or_drop():
  frames, wav, boxes = _two_shots()
  split = curate.curate_clip(frames, wav, boxes, config=curate.CurationConfig(
      min_confidence=1.5), measurer=sync.synthetic_measurer(), clip_id="talk")
  assert split.cuts == [40]
  assert [(s.start, s.end, s.reason) for s in split.segments] == [(0, 40, "kept"),
                                                                  (40, 52, "too_short")]
  assert split.segments[0].offset == 0
  assert [curate.segment_clip_id("talk", i, 2) for i in range(2)] == ["talk#0", "talk#1"]
  dropped = curate.curate_clip(frames, wav, boxes, config=curate.CurationConfig(
      scene_policy="drop", sync=False))
  assert [(s.reason, s.keep) for s in dropped.segments] == [("scene_cut", False)]
  assert not dropped.keep and split.keep


def test_each_shot_gets_its_own_offset_and_shift(source):
  """Two people, each shot with its own injected offset, joined at frame 40: the cut is found,
  each shot measured and re-aligned within its own audio."""
  other = synthetic.generate_clip(23, 40 + 2 * MARGIN)
  (fa, wa, ba), (fb, wb, bb) = _shifted(source, 3, 40), _shifted(other, -2, 40)
  result = curate.curate_clip(np.concatenate([fa, fb]), np.concatenate([wa, wb]),
                              np.concatenate([ba, bb]), config=curate.CurationConfig(),
                              measurer=sync.synthetic_measurer())
  assert result.cuts == [40]
  first, second = result.segments
  assert (first.offset, second.offset, first.keep, second.keep) == (3, -2, True, True)
  assert first.span == sync.AlignedSpan(3, 40, 0, 37 * PER_FRAME)
  assert second.span == sync.AlignedSpan(40, 78, 42 * PER_FRAME, 80 * PER_FRAME)
  frames, wav = curate.apply_segment(np.concatenate([fa, fb]), np.concatenate([wa, wb]), second)
  np.testing.assert_array_equal(frames, other.frames[MARGIN:MARGIN + 38])
  np.testing.assert_array_equal(wav, other.wav[MARGIN * PER_FRAME:(MARGIN + 38) * PER_FRAME])


def test_report_counts_files_and_round_trip(tmp_path, source):
  config = curate.CurationConfig(min_confidence=1.5)
  decisions = [curate.curate_clip(*_two_shots(), config=config,
                                  measurer=sync.synthetic_measurer(), clip_id="cut")]
  for lead in (-2, 3):
    decisions.append(curate.curate_clip(*_shifted(source, lead), config=config,
                                        measurer=sync.synthetic_measurer(), clip_id=f"l{lead}"))
  frames, wav, boxes = _shifted(source, 0)
  decisions.append(curate.curate_clip(frames, wav, boxes / 4, config=config,
                                      measurer=sync.synthetic_measurer(), clip_id="tiny"))
  summary = report.write_report(decisions, tmp_path, config)
  assert summary["reasons"] == {"kept": 3, "too_short": 1, "small_face": 1}
  assert (summary["clips"], summary["clips_kept"], summary["shots"]) == (4, 3, 5)
  assert summary["frames_kept"] == 40 + 58 + 57
  assert summary["offset"]["min"] == -2 and summary["offset"]["max"] == 3
  assert json.loads((tmp_path / "summary.json").read_text())["config"]["min_confidence"] == 1.5
  rows = list(csv.DictReader(open(tmp_path / "dropped.csv", encoding="utf-8")))
  assert [(r["clip_id"], r["reason"]) for r in rows] == [("cut", "too_short"),
                                                         ("tiny", "small_face")]
  back = report.read_decisions(tmp_path / "decisions.jsonl")
  assert [d.to_dict() for d in back] == [d.to_dict() for d in decisions]
  for name in ("offset", "confidence", "face_size"):
    image = np.asarray(PIL.Image.open(tmp_path / f"{name}.png").convert("L"))
    assert image.shape == (440, 720) and (image < 128).mean() > 0.01   # axes, bars, labels
  assert "too_short" in (tmp_path / "summary.txt").read_text()
  assert not list(tmp_path.glob("*partial*"))


def test_config_round_trip_and_clear_errors(source):
  config = curate.CurationConfig(min_face_size=32, scene_policy="drop")
  assert curate.CurationConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
  with pytest.raises(ValueError, match="unknown curation settings"):
    curate.CurationConfig.from_dict({"min_face": 3})
  with pytest.raises(ValueError, match="scene_policy"):
    curate.CurationConfig(scene_policy="keep")
  frames, wav, boxes = _shifted(source, 0, 20)
  with pytest.raises(ValueError, match="needs a measurer"):
    curate.curate_clip(frames, wav, boxes)
  with pytest.raises(ValueError, match=r"boxes must be \[T, 4\]"):
    curate.curate_clip(frames, wav, boxes[:5], config=curate.CurationConfig(sync=False))
  with pytest.raises(ValueError, match="scores must be in"):
    curate.curate_clip(frames, wav, boxes, np.full(20, 2.0), config=NO_SCENES,
                       measurer=sync.synthetic_measurer())
  # A measurer without a default threshold needs one in the configuration.
  expert_like = sync.EmbeddingSync(sync.MouthOpeningEmbedder(), lambda f, b: f, "expert_like")
  with pytest.raises(ValueError, match="set CurationConfig.min_confidence for the expert_like"):
    curate.curate_clip(frames, wav, boxes, config=curate.CurationConfig(scene_detection=False),
                       measurer=expert_like)
  with pytest.raises(ValueError, match="needs weights"):
    sync.make_measurer("syncnet_v2")
  with pytest.raises(ValueError, match="must be one of"):
    sync.make_measurer("lse")
  # Too little audio for one sync window: recorded, not raised.
  (seg,) = curate.curate_clip(frames, wav[:2000], boxes, config=curate.CurationConfig(
      scene_detection=False, min_frames=6), measurer=sync.synthetic_measurer()).segments
  assert seg.reason == "sync_failed" and "at least 6 frames" in seg.detail
