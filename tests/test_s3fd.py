"""S3FD detector: network golden, converter, box decoding/NMS, video face-box policy."""
import jax
import numpy as np
import pytest

from data_pipelines import face_detection as fd
from diff2lip_jax.porting.torch_io import StateDictMismatchError
from tests import reference

try:
  import torch
except ImportError:
  torch = None


@pytest.fixture(scope="module")
def state_dict():
  return reference.deterministic_state_dict(reference.load_manifest("manifest_s3fd.json"))


@pytest.fixture(scope="module")
def golden():
  return reference.load_npz("s3fd_golden.npz")


@pytest.fixture(scope="module")
def detector(state_dict):
  return fd.FaceDetector(fd.params_from_torch(state_dict))


def test_network_matches_reference_golden(state_dict, golden):
  outputs = jax.jit(fd.S3FD().apply)(fd.params_from_torch(state_dict),
                                     reference.nchw_to_nhwc(golden["image"]))
  assert len(outputs) == 12
  for i, out in enumerate(outputs):
    want = golden[f"out{i}"]
    got = reference.nhwc_to_nchw(np.asarray(out))
    assert got.shape == want.shape, i
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=f"out{i}")


def _reference_detections(outputs, score_threshold=0.5):
  """The reference's batch_detect + nms + score filter, transcribed loop by loop (batch of 1)."""
  candidates = []
  for i in range(6):
    cls, reg = outputs[2 * i][0], outputs[2 * i + 1][0]  # NCHW without batch
    e = np.exp(cls - cls.max(axis=0))
    face = e[1] / e.sum(axis=0)
    stride = 2 ** (i + 2)
    for h, w in zip(*np.where(face > 0.05)):
      cx, cy, side = stride / 2 + w * stride, stride / 2 + h * stride, stride * 4
      loc = reg[:, h, w]
      bcx, bcy = cx + loc[0] * 0.1 * side, cy + loc[1] * 0.1 * side
      bw, bh = side * np.exp(loc[2] * 0.2), side * np.exp(loc[3] * 0.2)
      x1, y1 = bcx - bw / 2, bcy - bh / 2
      candidates.append([x1, y1, x1 + bw, y1 + bh, face[h, w]])
  dets = np.array(candidates)
  x1, y1, x2, y2, s = dets.T
  areas = (x2 - x1 + 1) * (y2 - y1 + 1)
  order, keep = s.argsort()[::-1], []
  while order.size:
    i = order[0]
    keep.append(i)
    ww = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
    hh = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
    ovr = ww * hh / (areas[i] + areas[order[1:]] - ww * hh)
    order = order[np.where(ovr <= 0.3)[0] + 1]
  return np.array([d for d in dets[keep] if d[-1] > score_threshold])


def test_detect_matches_reference_post_processing(detector, golden):
  # Undo the reference preprocessing to get RGB frames in 0..255 (floats: the golden is not
  # an integer image), then run the whole detector.
  bgr = reference.nchw_to_nhwc(golden["image"]) + np.array([104, 117, 123], np.float32)
  frames = np.ascontiguousarray(bgr[..., ::-1])
  want = _reference_detections([golden[f"out{i}"] for i in range(12)])
  got = detector.detect(frames)
  assert len(got) == 1 and len(want) > 5
  assert got[0].shape == want.shape
  np.testing.assert_allclose(got[0], want, atol=1e-3, rtol=1e-5)


def test_batches_and_padding_do_not_change_results(detector):
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 256, (3, 96, 128, 3), dtype=np.uint8)
  padded = detector.detect(frames, batch_size=2)  # second batch padded with a repeated frame
  single = [detector.detect(frames[i:i + 1], batch_size=1)[0] for i in range(3)]
  assert len(padded) == 3
  for a, b in zip(padded, single):
    assert a.shape == b.shape and len(a) > 0
    np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-5)


def _synthetic_outputs(sizes, face_at, reg_at=(0.0, 0.0, 0.0, 0.0)):
  """NHWC S3FD outputs: background everywhere except a face logit at (scale, row, col)."""
  outputs = []
  for scale, (h, w) in enumerate(sizes):
    cls = np.zeros((1, h, w, 2), np.float32)
    cls[..., 0] = 5.0
    reg = np.zeros((1, h, w, 4), np.float32)
    if scale == face_at[0]:
      cls[0, face_at[1], face_at[2]] = [0.0, np.log(9.0)]  # softmax face prob 0.9
      reg[0, face_at[1], face_at[2]] = reg_at
    outputs += [cls, reg]
  return outputs


SIZES = [(24, 32), (12, 16), (6, 8), (7, 8), (4, 4), (2, 2)]
_scores_and_boxes = jax.jit(fd.scores_and_boxes)


@pytest.mark.parametrize("scale,row,col", [(0, 5, 7), (2, 1, 3), (5, 1, 0)])
def test_decoding_single_anchor_gives_its_prior(scale, row, col):
  scores, boxes = _scores_and_boxes(_synthetic_outputs(SIZES, (scale, row, col)))
  dets = fd.select_detections(np.asarray(scores[0]), np.asarray(boxes[0]))
  stride = 4 * 2 ** scale
  cx, cy, half = stride / 2 + col * stride, stride / 2 + row * stride, 2 * stride
  np.testing.assert_allclose(dets, [[cx - half, cy - half, cx + half, cy + half, 0.9]],
                             rtol=1e-6, atol=1e-4)


def test_decoding_applies_variances():
  # dx = 1 moves the centre by 0.1 * side; dw = ln(2) / 0.2 doubles the width.
  reg = (1.0, -0.5, np.log(2.0) / 0.2, 0.0)
  scores, boxes = _scores_and_boxes(_synthetic_outputs(SIZES, (1, 3, 4), reg))
  dets = fd.select_detections(np.asarray(scores[0]), np.asarray(boxes[0]))
  side = 32.0
  cx, cy = 4 + 4 * 8 + 0.1 * side, 4 + 3 * 8 - 0.05 * side
  np.testing.assert_allclose(dets[0, :4], [cx - side, cy - side / 2, cx + side, cy + side / 2],
                             rtol=1e-5)


def test_nms_plus_one_convention():
  dets = np.array([[0, 0, 9, 9, 0.9],      # area 100 (inclusive pixels)
                   [5, 0, 14, 9, 0.8],     # overlap 5x10 -> IoU 1/3 > 0.3: suppressed
                   [6, 0, 15, 9, 0.7],     # overlap 4x10 -> IoU 0.25: kept
                   [100, 100, 120, 120, 0.6]], np.float32)
  np.testing.assert_array_equal(fd.nms(dets, 0.3), [0, 2, 3])
  np.testing.assert_array_equal(fd.nms(dets[::-1].copy(), 0.3), [3, 1, 0])
  assert fd.nms(np.zeros((0, 5), np.float32), 0.3).size == 0


def test_prefiltering_at_score_threshold_is_exact():
  rng = np.random.default_rng(1)
  centres = rng.uniform(0, 60, (400, 2))
  sizes = rng.uniform(5, 30, (400, 2))
  boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)
  scores = rng.uniform(0, 1, 400).astype(np.float32)
  two_stage = np.concatenate([boxes, scores[:, None]], 1)
  two_stage = two_stage[scores > 0.05]
  two_stage = two_stage[fd.nms(two_stage, 0.3)]
  two_stage = two_stage[two_stage[:, 4] > 0.5]
  np.testing.assert_array_equal(fd.select_detections(scores, boxes), two_stage)


def test_converter_reports_all_problems(state_dict):
  broken = dict(state_dict)
  del broken["conv4_3_norm.weight"]
  broken["fc7.weight"] = np.zeros((1024, 1024, 3, 3), np.float32)
  broken["conv8_1.weight"] = np.zeros((1,), np.float32)
  with pytest.raises(StateDictMismatchError) as err:
    fd.params_from_torch(broken)
  text = str(err.value)
  assert "missing (1): conv4_3_norm.weight" in text
  assert "unexpected (1): conv8_1.weight" in text
  assert "fc7.weight: file (1024, 1024, 3, 3) vs model (1024, 1024, 1, 1)" in text
  assert len(fd.expected_torch_shapes()) == len(state_dict)


@pytest.mark.skipif(torch is None, reason="torch writes the checkpoint fixture")
def test_load_checkpoint_file(tmp_path, state_dict):
  path = tmp_path / "s3fd.pth"
  torch.save({k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in state_dict.items()},
             path, _use_new_zipfile_serialization=False)
  jax.tree.map(np.testing.assert_array_equal, fd.load_s3fd_params(path),
               fd.params_from_torch(state_dict))
  assert fd.FaceDetector.from_checkpoint(path, score_threshold=0.6).score_threshold == 0.6


class _FakeDetector:
  def __init__(self, detections):
    self.detections = detections

  def detect(self, frames, batch_size=16):
    assert len(frames) == len(self.detections)
    return self.detections


def _det(x1, y1, x2, y2, score=0.9):
  return np.array([[x1, y1, x2, y2, score]], np.float32)


def test_video_boxes_pads_clip_and_smoothing():
  frames = np.zeros((6, 100, 80, 3), np.uint8)
  dets = [_det(10.7, 20.2, 50.9, 60.5), _det(-3.0, 22, 52, 62),
          np.concatenate([_det(0, 0, 5, 5, 0.6), _det(14, 24, 54, 95, 0.95)]),
          _det(16, 26, 56, 66), _det(18, 28, 58, 68), _det(20, 30, 60, 70)]
  raw = np.array([[10, 20, 50, 60], [0, 22, 52, 62], [14, 24, 54, 95], [16, 26, 56, 66],
                  [18, 28, 58, 68], [20, 30, 60, 70]])
  unsmoothed = fd.face_boxes_for_video(frames, _FakeDetector(dets), pads=(1, 10, 2, 3),
                                       smooth_window=1)
  padded = raw + np.array([-2, -1, 3, 10])
  padded[:, 0] = np.maximum(padded[:, 0], 0)
  padded[:, 3] = np.minimum(padded[:, 3], 100)   # frame 2's chin is clamped to the frame
  np.testing.assert_array_equal(unsmoothed, padded)
  smoothed = fd.face_boxes_for_video(frames, _FakeDetector(dets), pads=(1, 10, 2, 3))
  want = padded.copy()
  for i in range(6):  # in place, end-anchored windows, int truncation
    rows = want[1:] if i + 5 > 6 else want[i:i + 5]
    want[i] = np.floor(rows.mean(axis=0))
  np.testing.assert_array_equal(smoothed, want)
  np.testing.assert_array_equal(smoothed[0], np.floor(padded[:5].mean(0)))


def test_smoothing_short_video_uses_all_frames():
  boxes = np.array([[0, 0, 10, 10], [2, 2, 13, 13]])
  # Row 1's window already holds the smoothed row 0 (in place, as the reference).
  np.testing.assert_array_equal(fd.smooth_boxes(boxes, 5), [[1, 1, 11, 11], [1, 1, 12, 12]])
  np.testing.assert_array_equal(fd.smooth_boxes(boxes, 1), boxes)


def test_no_face_policies():
  frames = np.zeros((6, 100, 100, 3), np.uint8)
  empty = np.zeros((0, 5), np.float32)
  dets = [empty, _det(10, 10, 50, 50), empty, empty, _det(40, 10, 80, 50), empty]
  detector = _FakeDetector(dets)
  # The two boxes do not overlap, so the default tracking sees two faces; the reference's
  # per-frame best detection (select="best") treats them as one face that moved.
  with pytest.raises(fd.NoFaceError, match=r"4 of 6 frames \(0-based indices: 0, 2-3, 5\)"):
    fd.face_boxes_for_video(frames, detector, select="best")
  kw = dict(pads=(0, 0, 0, 0), smooth_window=1, select="best")
  skipped = fd.face_boxes_for_video(frames, detector, no_face="skip", **kw)
  np.testing.assert_array_equal(skipped[[0, 2, 3, 5]], -1)
  np.testing.assert_array_equal(skipped[[1, 4]], [[10, 10, 50, 50], [40, 10, 80, 50]])
  nearest = fd.face_boxes_for_video(frames, detector, no_face="nearest", **kw)
  np.testing.assert_array_equal(nearest[:, 0], [10, 10, 10, 40, 40, 40])
  interp = fd.face_boxes_for_video(frames, detector, no_face="interpolate", **kw)
  np.testing.assert_array_equal(interp[:, 0], [10, 10, 20, 30, 40, 40])
  np.testing.assert_array_equal(interp[:, 2], [50, 50, 60, 70, 80, 80])
  # Skipped frames are left out of the smoothing: frames 1 and 4 form a 2-box sequence.
  smoothed = fd.face_boxes_for_video(frames, detector, no_face="skip", pads=(0, 0, 0, 0),
                                     select="best")
  np.testing.assert_array_equal(smoothed[[1, 4]], [[25, 10, 65, 50], [32, 10, 72, 50]])
  np.testing.assert_array_equal(smoothed[[0, 2, 3, 5]], -1)
  with pytest.raises(fd.NoFaceError, match="any of the 6 frames"):
    fd.face_boxes_for_video(frames, _FakeDetector([empty] * 6), no_face="nearest")
  with pytest.raises(ValueError, match="no_face must be one of"):
    fd.face_boxes_for_video(frames, detector, no_face="ignore")
