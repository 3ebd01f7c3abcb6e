"""Face crops: VoxCeleb2 crop box, crop + resize, paste back; the crop spec and per-frame boxes."""
import numpy as np
import pytest

from data_pipelines import crops, face_crops
from data_pipelines.face_detection import NoFaceError

try:
  import cv2
except ImportError:
  cv2 = None


@pytest.mark.parametrize("height,width", [(224, 224), (256, 341), (720, 1280), (9, 10)])
def test_voxceleb2_crop_box_matches_reference_slicing(height, width):
  frame = np.arange(height * width).reshape(height, width)
  x1, y1, x2, y2 = crops.voxceleb2_crop_box(height, width)
  # Reference: img[:-int(H*2.36/8), int(W*1.8/8):-int(W*1.8/8)]
  want = frame[:-int(height * 2.36 / 8), int(width * 1.8 / 8):-int(width * 1.8 / 8)]
  np.testing.assert_array_equal(frame[y1:y2, x1:x2], want)
  assert crops.voxceleb2_crop_box(224, 224) == (50, 0, 174, 158)


def test_resize_matrices_analytic():
  # Area shrink by 2 = mean of pixel pairs; rows always sum to 1.
  np.testing.assert_allclose(crops.resize_matrix(4, 2, "area"),
                             [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
  # Bilinear x2 enlarge: half-pixel centres, clamped at the edges.
  np.testing.assert_allclose(crops.resize_matrix(2, 4, "bilinear"),
                             [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
  # Area shrink by 1.5: each output pixel covers 1.5 source pixels.
  np.testing.assert_allclose(crops.resize_matrix(3, 2, "area"),
                             [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
  for method in crops.RESIZE_METHODS:
    for src, dst in [(7, 3), (3, 7), (128, 128), (300, 128)]:
      np.testing.assert_allclose(crops.resize_matrix(src, dst, method).sum(1), 1.0)
    np.testing.assert_array_equal(crops.resize_matrix(5, 5, method), np.eye(5))


def test_crop_and_resize_exact_cases():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (3, 40, 50, 3), dtype=np.uint8)
  boxes = np.array([[0, 0, 16, 16], [10, 5, 26, 21], [34, 24, 50, 40]])
  same_size = crops.crop_and_resize(frames, boxes, size=16)
  for t, (x1, y1, x2, y2) in enumerate(boxes):
    np.testing.assert_array_equal(same_size[t], frames[t, y1:y2, x1:x2])
  halved = crops.crop_and_resize(frames, [2, 4, 34, 36], size=16, method="area")
  block = frames[:, 4:36, 2:34].astype(np.float64).reshape(3, 16, 2, 16, 2, 3).mean((2, 4))
  np.testing.assert_allclose(halved, block, atol=1e-4)
  assert halved.dtype == np.float32 and halved.shape == (3, 16, 16, 3)


def test_bilinear_resize_of_a_linear_ramp_is_linear():
  # Away from the clamped border, bilinear interpolation reproduces a linear function exactly.
  ramp = np.broadcast_to(np.arange(64.0)[None, :, None] * 3.0 + 1.0, (1, 64, 64, 1))
  out = crops.crop_and_resize(ramp, [0, 0, 64, 64], size=128, method="bilinear")[0, 5, :, 0]
  src_x = (np.arange(128) + 0.5) / 2 - 0.5
  np.testing.assert_allclose(out[2:-2], 3.0 * src_x[2:-2] + 1.0, atol=1e-4)


@pytest.mark.skipif(cv2 is None, reason="OpenCV not installed (optional comparison)")
@pytest.mark.parametrize("method,flag", [("bilinear", "INTER_LINEAR"), ("area", "INTER_AREA")])
def test_matches_opencv(method, flag):
  rng = np.random.default_rng(1)
  frame = rng.uniform(0, 255, (1, 300, 240, 3)).astype(np.float32)
  want = cv2.resize(frame[0, 10:290, 20:220], (128, 128), interpolation=getattr(cv2, flag))
  got = crops.crop_and_resize(frame, [20, 10, 220, 290], 128, method=method)[0]
  np.testing.assert_allclose(got, want, atol=1e-3)


def _smooth_frames(t=2, h=120, w=160):
  y, x = np.mgrid[0:h, 0:w]
  base = 128 + 60 * np.sin(x / 23.0) * np.cos(y / 31.0)
  frames = np.stack([base + 10 * k for k in range(t)])[..., None] + np.array([0, 20, -20])
  return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def test_crop_then_paste_back_identity():
  frames = _smooth_frames()
  boxes = np.array([[30, 20, 110, 100], [41, 13, 137, 109]])
  face = crops.crop_and_resize(frames, boxes, size=128)
  pasted = crops.paste_back(frames, face, boxes)
  assert pasted.dtype == np.uint8 and pasted is not frames
  diff = np.abs(pasted.astype(int) - frames.astype(int))
  assert diff.max() <= 2  # resize there and back of a smooth image
  for t, (x1, y1, x2, y2) in enumerate(boxes):
    lower = y1 + (y2 - y1) // 2
    outside = np.ones(frames.shape[1:3], bool)
    outside[lower:y2, x1:x2] = False
    # Everything but the lower half of the box is untouched, bit for bit.
    np.testing.assert_array_equal(pasted[t][outside], frames[t][outside])
  whole = crops.paste_back(frames, face, boxes, mode="box")
  assert np.abs(whole.astype(int) - frames.astype(int)).max() <= 2
  np.testing.assert_array_equal(whole[:, :13], frames[:, :13])  # above both boxes


def test_paste_back_replaces_exactly_the_masked_rows():
  frames = np.zeros((1, 50, 60, 3), np.uint8)
  generated = np.full((1, 128, 128, 3), 200.0, np.float32)
  pasted = crops.paste_back(frames, generated, [10, 5, 40, 36])  # 31 rows -> mask from row 15
  changed = np.argwhere(pasted[0, :, :, 0] != 0)
  assert changed[:, 0].min() == 5 + 15 and changed[:, 0].max() == 35
  assert changed[:, 1].min() == 10 and changed[:, 1].max() == 39
  assert np.all(pasted[0, 20:36, 10:40] == 200)
  quarter = crops.paste_back(frames, generated, [10, 5, 40, 36], face_hide_percentage=0.25)
  assert np.argwhere(quarter[0, :, :, 0])[:, 0].min() == 5 + int(31 * 0.75)
  floats = crops.paste_back(frames.astype(np.float32), generated * 2, [10, 5, 40, 36])
  assert floats.max() == 400.0  # float frames are not clipped


def test_invalid_boxes_are_reported_with_frame_indices():
  frames = np.zeros((4, 20, 30, 3), np.uint8)
  boxes = np.array([[0, 0, 10, 10], [-1, -1, -1, -1], [5, 5, 31, 10], [5, 5, 5, 10]])
  with pytest.raises(ValueError, match=r"frame indices \[1, 2, 3\]"):
    crops.crop_and_resize(frames, boxes)
  with pytest.raises(ValueError, match=r"boxes must be \[4\] or \[4, 4\]"):
    crops.crop_and_resize(frames, boxes[:2])
  with pytest.raises(ValueError, match="resize method"):
    crops.crop_and_resize(frames, [0, 0, 10, 10], method="cubic")


def test_crop_uint8_rounds_half_to_even_and_clips():
  frames = np.array([[[[0.5], [1.5]], [[2.5], [300.0]]]], np.float32)  # [1, 2, 2, 1]
  out = crops.crop_uint8(frames, [0, 0, 2, 2], size=2, method="bilinear")
  assert out.dtype == np.uint8 and out[0, :, :, 0].tolist() == [[0, 2], [2, 255]]


def test_parse_crop_and_its_errors():
  assert face_crops.parse_crop("voxceleb2") == face_crops.CropSpec()
  assert face_crops.parse_crop(["box", "1,", "2,3", "4"]).box == (1, 2, 3, 4)
  spec = face_crops.parse_crop("s3fd", pads=[0, 10, 0, 0], no_face="nearest")
  assert spec.pads == (0, 10, 0, 0) and spec.needs_detector and spec.lookahead == 4
  assert face_crops.parse_crop("box 0,0,5,5").lookahead == 0
  for words, message in [("", "empty crop"), ("box 1,2,3", "four integers"),
                         ("box a,b,c,d", "four integers"), ("box 5,0,5,9", "0 <= x1 < x2"),
                         ("s3fd 1", "takes no values"), ("dlib", "must be one of")]:
    with pytest.raises(face_crops.CropError, match=message):
      face_crops.parse_crop(words)
  with pytest.raises(face_crops.CropError, match="needs box"):
    face_crops.CropSpec("box")
  with pytest.raises(face_crops.CropError, match="no_face"):
    face_crops.CropSpec("s3fd", no_face="skip")
  with pytest.raises(face_crops.CropError, match="pads"):
    face_crops.CropSpec("s3fd", pads=(1, 2))
  assert issubclass(face_crops.CropError, ValueError)


def test_fixed_crops_give_one_box_per_frame():
  boxes = face_crops.frame_boxes(face_crops.CropSpec(), (224, 224), 3)
  assert boxes.dtype == np.int64 and boxes.tolist() == [[50, 0, 174, 158]] * 3
  box = face_crops.CropSpec("box", box=(2, 4, 30, 40))
  assert face_crops.frame_boxes(box, (40, 30), 2).tolist() == [[2, 4, 30, 40]] * 2
  with pytest.raises(face_crops.CropError, match=r"v.mp4: crop box \(2, 4, 30, 40\) lies "
                     "outside the 29x40 frames"):
    face_crops.frame_boxes(box, (40, 29), 2, source="v.mp4")


def _detections(boxes):
  return [np.zeros((0, 5)) if b is None else np.array([list(b) + [0.9]], float) for b in boxes]


def test_detected_boxes_pads_smoothing_and_missing_faces():
  spec = face_crops.CropSpec("s3fd", pads=(1, 2, 3, 4), smooth_window=2)
  dets = _detections([(10, 10, 20, 20), (12, 10, 22, 20), (14, 10, 24, 20)])
  boxes = face_crops.frame_boxes(spec, (100, 100), 5, dets)
  # Pads (top 1, bottom 2, left 3, right 4); box i = int(mean of boxes i, i+1), the last window
  # anchored at the end; frames past the detections repeat the last box.
  padded = np.array([[7, 9, 24, 22], [9, 9, 26, 22], [11, 9, 28, 22]])
  want = [list((padded[0] + padded[1]) // 2)]
  last = (padded[1] + padded[2]) // 2
  want += [list(last), list((last + padded[2]) // 2)]
  assert boxes.tolist() == want + [want[-1]] * 2
  missing = _detections([(10, 10, 20, 20), None, (10, 10, 20, 20), None, None])
  with pytest.raises(NoFaceError, match=r"^clip.mp4: no face detected in 3 of 5 frames .*1, 3-4"):
    face_crops.frame_boxes(spec, (100, 100), 5, missing, source="clip.mp4")
  # Frames past the needed ones only feed the smoothing: a face missing there ends them.
  ended = face_crops.frame_boxes(face_crops.CropSpec("s3fd"), (100, 100), 5, missing[:3] + [
      missing[0], missing[1]], needed=1)
  assert ended.tolist() == [[10, 10, 20, 20]] * 5
  filled = face_crops.CropSpec("s3fd", no_face="nearest", smooth_window=1)
  assert face_crops.frame_boxes(filled, (100, 100), 5, missing).tolist() == [[10, 10, 20, 20]] * 5
  with pytest.raises(face_crops.CropError, match="detections"):
    face_crops.frame_boxes(filled, (100, 100), 5)


def test_only_detector_crops_load_a_detector(monkeypatch, tmp_path):
  from data_pipelines import face_detection
  monkeypatch.delenv(face_detection.S3FD_WEIGHTS_ENV, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/diff2lip/s3fd.pth
  assert face_crops.load_detector(face_crops.CropSpec(), None) is None
  with pytest.raises(face_crops.CropError, match=r"--crop s3fd: S3FD needs its weights file"):
    face_crops.load_detector(face_crops.CropSpec("s3fd"), None)
  assert isinstance(face_crops.load_detector(face_crops.CropSpec("auto")),
                    face_detection.HogDetector)
