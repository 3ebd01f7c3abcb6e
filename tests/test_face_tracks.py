"""syncnet_python run_pipeline parity: IoU face tracking (`track_shot`) and the 224x224 face
crops (`crop_video`), goldens from the original functions (tests/goldens/README.md)."""
import numpy as np
import pytest

from data_pipelines import face_tracks
from tests.metric_goldens import load_golden


@pytest.fixture(scope="module")
def golden():
  return load_golden("face_tracks_golden.npz")


def _detections(golden):
  return [frame[~np.isnan(frame[:, 0])] for frame in golden["detections"]]


def test_tracks_match_track_shot(golden):
  tracks = face_tracks.track_faces(_detections(golden), min_track=10, num_failed_det=5,
                                   min_face_size=20)
  np.testing.assert_array_equal([len(t.frames) for t in tracks], golden["track_lengths"])
  np.testing.assert_array_equal(np.concatenate([t.frames for t in tracks]),
                                golden["track_frames"])
  np.testing.assert_allclose(np.concatenate([t.boxes for t in tracks]), golden["track_boxes"],
                             rtol=1e-12, atol=1e-9)


def test_tracking_rules():
  box = np.array([[0.0, 0, 50, 50, 0.99]])
  moved = box + [[30, 0, 30, 0, 0]]              # IoU 0.25: not the same face
  frames = [box] * 3 + [np.zeros((0, 5))] * 2 + [box] * 3 + [moved]
  (track,) = face_tracks.track_faces(frames, min_track=3, num_failed_det=3, min_face_size=40,
                                     first_frame=100)
  np.testing.assert_array_equal(track.frames, np.arange(100, 108))   # gap of 3 bridged
  np.testing.assert_array_equal(track.boxes[3], box[0, :4])          # interpolated
  # A gap of 3 > 2 splits it into two tracks of 3 detections, neither longer than 3.
  assert face_tracks.track_faces(frames, min_track=3, num_failed_det=2, min_face_size=40) == []
  assert face_tracks.track_faces(frames, min_track=3, num_failed_det=3, min_face_size=50) == []
  assert face_tracks.box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)


def test_crop_geometry_matches_crop_video(golden):
  size, centre_x, centre_y = face_tracks.smoothed_track_geometry(golden["crop_boxes"])
  np.testing.assert_allclose(size, golden["smoothed_s"], rtol=1e-12)
  np.testing.assert_allclose(centre_x, golden["smoothed_x"], rtol=1e-12)
  np.testing.assert_allclose(centre_y, golden["smoothed_y"], rtol=1e-12)


def test_crops_match_crop_video(golden):
  crops = face_tracks.syncnet_face_crops(golden["crop_frames"], golden["crop_boxes"])
  assert crops.shape == (20, 224, 224, 3) and crops.dtype == np.uint8
  diff = np.abs(crops[golden["crop_indices"]].astype(int) - golden["crops"].astype(int))
  # cv2's fixed-point uint8 bilinear rounds differently by one level on some pixels; a crop
  # window off by one pixel would differ by far more.
  assert diff.max() <= 1 and diff.mean() < 0.2
  assert np.any(crops == face_tracks.PAD_VALUE)      # the crop reaches into the padding


def test_crop_window_formula():
  boxes = np.tile([40.0, 60.0, 80.0, 110.0], (30, 1))    # s = 25, centre (60, 85)
  pad, r0, r1, c0, c1 = face_tracks.syncnet_crop_windows(boxes)[15]
  assert pad == int(25 * 1.8)
  assert (r0, r1) == (int(85 + pad - 25), int(85 + pad + 25 * 1.8))
  assert (c0, c1) == (int(60 + pad - 25 * 1.4), int(60 + pad + 25 * 1.4))


def test_bad_inputs():
  frames = np.zeros((20, 64, 64, 3), np.uint8)
  with pytest.raises(ValueError, match="one box per frame"):
    face_tracks.syncnet_face_crops(frames, np.zeros((2, 4)))
  with pytest.raises(ValueError, match=r"\[T, 4\]"):
    face_tracks.syncnet_crop_windows(np.zeros((3, 3)))
  with pytest.raises(ValueError, match="out-of-frame"):
    face_tracks.syncnet_face_crops(frames, np.tile([0.0, -500, 10, -480], (20, 1)))
  with pytest.raises(ValueError, match="empty"):   # 13-frame median of a 3-frame track is 0
    face_tracks.syncnet_face_crops(frames[:3], np.tile([10.0, 10, 30, 30], (3, 1)))
  with pytest.raises(ValueError, match="frame 1"):
    face_tracks.track_faces([np.zeros((1, 4)), np.zeros((1, 3))])
