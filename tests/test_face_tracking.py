"""Face tracking (largest face, IoU linking), no-face policies with the found mask, detection
downscaling (plumbing, also for S3FD) and the `create_detector` entry point."""
import sys

import numpy as np
import pytest

from data_pipelines import face_detection as fd
from data_pipelines.face_detection import factory, scaling
from tests import reference

EMPTY = np.zeros((0, 5), np.float32)


def _box(x1, y1, x2, y2, score=0.9):
  return np.array([[x1, y1, x2, y2, score]], np.float32)


def _frames(*per_frame):
  return [np.concatenate(dets) if dets else EMPTY for dets in per_frame]


def test_box_iou_analytic():
  a = np.array([[0, 0, 10, 10]])
  b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
  np.testing.assert_allclose(fd.box_iou(a, b), [[50 / 150, 1.0, 0.0, 25 / 100]])


def test_largest_face_is_tracked_and_never_swapped_for_another():
  # A: large, drifting right, missing in frames 3-4; B: small but higher-scoring everywhere.
  dets = []
  for t in range(8):
    frame = [_box(20, 10, 60, 50, 0.99)]                        # B, 40x40
    if t not in (3, 4):
      frame.append(_box(100 + 3 * t, 20, 200 + 3 * t, 140, 0.6))  # A, 100x120
    dets.append(np.concatenate(frame))
  boxes, found = fd.select_face_track(dets)
  np.testing.assert_array_equal(found, [t not in (3, 4) for t in range(8)])
  np.testing.assert_allclose(boxes[found, 0], [100 + 3 * t for t in range(8) if t not in (3, 4)])
  np.testing.assert_array_equal(boxes[~found], -1)
  # The reference's per-frame best score picks B in every frame.
  best, best_found = fd.best_face_boxes(dets)
  assert best_found.all() and (best[:, 0] == 20).all()


def test_tracks_link_by_overlap_across_short_gaps_only():
  moving = [_box(10 + 4 * t, 10, 60 + 4 * t, 60) for t in range(6)]
  gap = _frames([moving[0]], [moving[1]], [], [], [], [moving[5]])  # 3 empty frames
  assert len(fd.link_tracks(gap, max_gap=3)) == 1
  assert len(fd.link_tracks(gap, max_gap=2)) == 2
  jump = _frames([_box(0, 0, 40, 40)], [_box(60, 0, 100, 40)])      # no overlap: new face
  assert len(fd.link_tracks(jump)) == 2


def test_shot_change_adds_a_time_disjoint_track_but_not_short_false_positives():
  shot_a = [[_box(10, 10, 110, 130)] for _ in range(5)]
  false_positive = [[_box(300, 300, 330, 330)]]                    # 1 frame, inside no span
  shot_b = [[_box(200, 40, 280, 140)] for _ in range(4)]
  dets = _frames(*shot_a, *false_positive, *shot_b)
  boxes, found = fd.select_face_track(dets)
  np.testing.assert_array_equal(found, [True] * 5 + [False] + [True] * 4)
  np.testing.assert_array_equal(boxes[6:, 0], 200)
  np.testing.assert_array_equal(boxes[5], -1)


def test_passthrough_keeps_missing_rows_and_reports_found():
  dets = _frames([_box(10, 10, 50, 50)], [], [_box(12, 10, 52, 50)], [_box(14, 10, 54, 50)])
  kw = dict(frame_size=(100, 100), pads=(0, 0, 0, 0), smooth_window=1)
  boxes, found = fd.face_boxes_and_found(dets, no_face="passthrough", **kw)
  np.testing.assert_array_equal(found, [True, False, True, True])
  np.testing.assert_array_equal(boxes[1], -1)
  np.testing.assert_array_equal(boxes[[0, 2, 3], 0], [10, 12, 14])
  filled, found_filled = fd.face_boxes_and_found(dets, no_face="interpolate", **kw)
  np.testing.assert_array_equal(found_filled, found)   # found says what was detected
  np.testing.assert_array_equal(filled[:, 0], [10, 11, 12, 14])
  with pytest.raises(fd.NoFaceError, match="no_face='passthrough'"):
    fd.face_boxes_and_found(dets, no_face="error", **kw)
  with pytest.raises(fd.NoFaceError, match="any of the 2 frames"):
    fd.face_boxes_and_found([EMPTY, EMPTY], no_face="passthrough", **kw)
  with pytest.raises(ValueError, match="select must be one of"):
    fd.face_boxes_and_found(dets, no_face="skip", select="largest", **kw)


def test_detection_size_and_box_scaling():
  assert scaling.detection_size(1080, 1920, 640) == (360, 640)
  assert scaling.detection_size(1920, 1080, 640) == (640, 360)
  assert scaling.detection_size(320, 320, 640) == (320, 320)      # never upscaled
  assert scaling.detection_size(1080, 1920, None) == (1080, 1920)
  with pytest.raises(ValueError, match="max_side"):
    scaling.detection_size(1080, 1920, 4)
  scaled = scaling.scale_detections([_box(10, 20, 30, 40, 0.7), EMPTY], 3.0, 2.0)
  np.testing.assert_allclose(scaled[0], [[30, 40, 90, 80, 0.7]])
  assert scaled[1].shape == (0, 5)
  frames = np.zeros((2, 90, 120, 3), np.uint8)
  frames[:, 30:60, 60:120] = 200                                  # right half of a band
  small = scaling.resize_frames(frames, (30, 40))
  assert small.shape == (2, 30, 40, 3)
  np.testing.assert_array_equal(small[:, 12:18, 22:], 200)        # inside the band
  np.testing.assert_array_equal(small[:, :8], 0)


def test_s3fd_downscaled_detection_is_detection_on_the_scaled_frames():
  params = fd.params_from_torch(
      reference.deterministic_state_dict(reference.load_manifest("manifest_s3fd.json")))
  rng = np.random.default_rng(3)
  frames = rng.integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
  detector = fd.FaceDetector(params)   # one jitted network: the two calls share a compile
  small = scaling.resize_frames(frames, (32, 64))
  want = scaling.scale_detections(detector.detect(small, batch_size=2), 2.0, 2.0)
  detector.max_side = 64
  scaled = detector.detect(frames, batch_size=2)
  assert len(scaled) == 2 and all(len(d) for d in scaled)
  for got, ref in zip(scaled, want):
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


@pytest.fixture
def no_s3fd_weights(monkeypatch, tmp_path):
  monkeypatch.delenv(fd.S3FD_WEIGHTS_ENV, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))          # the default location does not exist
  return tmp_path


def test_create_detector_auto_prefers_s3fd_weights(no_s3fd_weights, monkeypatch):
  calls = []
  monkeypatch.setattr(factory.FaceDetector, "from_checkpoint",
                      classmethod(lambda cls, path, **kw: calls.append((path, kw)) or "s3fd"))
  default = no_s3fd_weights / ".cache" / "diff2lip" / "s3fd.pth"
  default.parent.mkdir(parents=True)
  default.write_bytes(b"weights")
  assert fd.create_detector() == "s3fd"
  env_file = no_s3fd_weights / "env.pth"
  env_file.write_bytes(b"weights")
  monkeypatch.setenv(fd.S3FD_WEIGHTS_ENV, str(env_file))
  assert fd.create_detector(max_side=None) == "s3fd"
  explicit = no_s3fd_weights / "explicit.pth"
  explicit.write_bytes(b"weights")
  assert fd.create_detector("s3fd", s3fd_weights=explicit, score_threshold=0.6) == "s3fd"
  assert calls == [(default, {"max_side": 320}), (env_file, {"max_side": None}),
                   (explicit, {"max_side": 320, "score_threshold": 0.6})]


def test_create_detector_errors_say_what_to_do(no_s3fd_weights, monkeypatch):
  with pytest.raises(fd.DetectorUnavailableError, match=fd.S3FD_WEIGHTS_ENV):
    fd.create_detector("s3fd")
  monkeypatch.setenv(fd.S3FD_WEIGHTS_ENV, str(no_s3fd_weights / "missing.pth"))
  with pytest.raises(fd.DetectorUnavailableError, match="missing.pth.*not a file"):
    fd.create_detector()
  monkeypatch.setitem(sys.modules, "dlib", None)      # import dlib raises ImportError
  with pytest.raises(fd.DetectorUnavailableError, match="pip install dlib-bin"):
    fd.create_detector("hog")
  with pytest.raises(ValueError, match="kind must be one of"):
    fd.create_detector("mtcnn")


def test_create_detector_without_weights_is_the_bundled_hog(no_s3fd_weights):
  pytest.importorskip("dlib")
  detector = fd.create_detector()
  assert isinstance(detector, fd.HogDetector) and detector.max_side == 640
