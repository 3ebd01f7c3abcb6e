"""Square (aspect-keeping) crops, their inverse paste, the soft mask and colour matching."""
import importlib.util
import os

import numpy as np
import pytest
from scipy.special import ndtr

from data_pipelines import crops

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "bench_seams.py")
_SPEC = importlib.util.spec_from_file_location("bench_seams", _PATH)
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_square_boxes_keep_the_centre_and_shift_inside_or_reach_past_the_frame():
  boxes = np.array([[10, 20, 30, 60],    # 20x40 -> 40x40, centred: x 0..40
                    [0, 20, 20, 60],     # centred would start at x -10: shifted to 0
                    [80, 10, 100, 50],   # centred would end at x 110: shifted to 60..100
                    [40, 30, 71, 40]])   # 31x10 -> 31x31, y 30 - 10 = 20 .. 51
  want = [[0, 20, 40, 60], [0, 20, 40, 60], [60, 10, 100, 50], [40, 20, 71, 51]]
  assert crops.square_boxes(boxes, (100, 100)).tolist() == want
  # A side larger than the frame's width stays centred and reaches past both edges.
  assert crops.square_boxes(np.array([5, 0, 25, 50]), (60, 30)).tolist() == [-10, 0, 40, 50]


def test_crop_past_the_frame_replicates_its_edges_and_paste_inverts_it():
  rng = np.random.default_rng(0)
  frames = rng.integers(0, 240, (1, 60, 30, 3)).astype(np.uint8)
  box = np.array([-10, 0, 40, 50])
  with pytest.raises(ValueError, match="0 <= x1"):
    crops.crop_and_resize(frames, box, size=50)
  # At the box's own size the bilinear resize is the identity: the crop is the edge-padded frame.
  crop = crops.crop_and_resize(frames, box, size=50, method="bilinear", allow_outside=True)
  padded = np.pad(frames[0], ((0, 0), (10, 10), (0, 0)), mode="edge")[:50]
  np.testing.assert_array_equal(crop[0], padded)
  # Pasting the crop back writes exactly the frame's own pixels (only the in-frame part).
  changed = crops.paste_back(frames, crop + 7, box, "box")
  np.testing.assert_array_equal(changed[0, :50].astype(int), frames[0, :50].astype(int) + 7)
  np.testing.assert_array_equal(changed[0, 50:], frames[0, 50:])


def _disc_aspect(image: np.ndarray) -> float:
  ys, xs = np.nonzero(image[..., 0] > 127)
  return float(xs.var() / ys.var())


def test_square_crop_keeps_a_round_face_round():
  frame = np.zeros((1, 200, 300, 3), np.float32)
  yy, xx = np.mgrid[:200, :300]
  frame[0][(xx - 150) ** 2 + (yy - 100) ** 2 <= 30 ** 2] = 255.0
  box = np.array([120, 60, 180, 150])  # 60 wide, 90 tall around the disc
  squashed = crops.crop_and_resize(frame, box, 128)
  square = crops.crop_and_resize(frame, crops.square_boxes(box, (200, 300)), 128)
  # Squashing 60x90 into a square widens x by 128/60 and y by 128/90: variance ratio (90/60)^2.
  assert _disc_aspect(squashed[0]) == pytest.approx((90 / 60) ** 2, rel=0.05)
  assert _disc_aspect(square[0]) == pytest.approx(1.0, rel=0.05)


def test_feather_profile_is_the_blurred_eroded_interval():
  length, sigma, erode = 40, 3.0, 7.5
  profile = crops.feather_profile(length, sigma, erode)
  # Numerical convolution of the eroded interval with the Gaussian, at the pixel centres.
  fine = np.linspace(-30, 70, 100001)
  step = fine[1] - fine[0]
  inside = ((fine >= erode) & (fine <= length - erode)).astype(float)
  centres = np.arange(length) + 0.5
  numeric = [(inside * np.exp(-0.5 * ((c - fine) / sigma) ** 2)).sum() * step
             / (sigma * np.sqrt(2 * np.pi)) for c in centres]
  np.testing.assert_allclose(profile, numeric, atol=1e-4)
  np.testing.assert_allclose(profile, profile[::-1], atol=1e-12)
  assert profile[0] == pytest.approx(ndtr((0.5 - erode) / sigma)) and profile[0] < 0.01
  assert profile[length // 2] > 0.999
  np.testing.assert_array_equal(crops.feather_profile(5, 0.0, 0.0), np.ones(5))


def test_soft_paste_blends_only_inside_the_lower_half():
  frames = np.full((1, 80, 90, 3), 100, np.uint8)
  generated = np.full((1, 64, 64, 3), 200.0, np.float32)
  box = np.array([10, 8, 74, 72])  # 64x64: lower half rows 40..71
  soft = crops.paste_back(frames, generated, box, "soft")
  hard = crops.paste_back(frames, generated, box, "lower_half")
  changed = np.argwhere(np.any(soft[0] != 100, axis=-1))
  assert changed[:, 0].min() >= 40 and changed[:, 0].max() <= 71
  assert changed[:, 1].min() >= 10 and changed[:, 1].max() <= 73
  mask = crops.soft_mask(32, 64)
  np.testing.assert_array_equal(soft[0, 40:72, 10:74, 0], np.round(100 + 100 * mask))
  # The core of the region is the generated face, as in the hard paste.
  assert soft[0, 56, 42, 0] == hard[0, 56, 42, 0] == 200
  with pytest.raises(ValueError, match="paste mode"):
    crops.paste_back(frames, generated, box, "feathered")


def test_color_match_moves_the_ring_statistics_to_the_frame():
  rng = np.random.default_rng(1)
  original = rng.uniform(50, 150, (30, 40, 3))
  mask = crops.soft_mask(30, 40)
  patch = original * 1.5 + np.array([30.0, -20.0, 5.0])
  matched = crops.match_colors(patch, original, mask)
  ring = (mask * (1 - mask))[..., None]
  mean = lambda a: (a * ring).sum((0, 1)) / ring.sum()
  np.testing.assert_allclose(mean(matched), mean(original), atol=1e-9)
  # An affine change of the frame is undone exactly.
  np.testing.assert_allclose(matched, original, atol=1e-9)


def test_soft_paste_hides_the_seam_on_a_real_face():
  from skimage import data
  frame = data.astronaut()
  face = (180, 67, 265, 176)  # dlib HOG's box of her face (docs/face_detection.md)
  box = crops.square_boxes(np.array(face), frame.shape[:2])
  rows = bench.measure(frame, box, face, "shift")["rows"]
  assert rows["soft"]["seam/face"] < 0.6 * rows["lower_half"]["seam/face"]
  assert rows["soft"]["line"] < 0.1 * rows["lower_half"]["line"]
  assert rows["soft+color_match"]["seam/face"] <= rows["soft"]["seam/face"]
  # The measure sees no seam where nothing changed.
  assert bench.seam_energy(frame, frame, (10, 10, 50, 50), face, 4)["seam/face"] == 0.0
