"""Scene cuts: injected cuts between synthetic shots are found at the right frames; motion,
flashes and lighting changes are not cuts."""
import numpy as np
import pytest

from data_pipelines import crops, synthetic
from data_pipelines.curation import scene_cuts


def _faces(seed: int, frames: int, size: int = 96) -> np.ndarray:
  return synthetic.generate_clip(seed, frames, full_frame_size=size).full_frames


def _zoomed(frames: np.ndarray, factor: float) -> np.ndarray:
  size = frames.shape[1]
  inner = int(round(size / factor))
  lo = (size - inner) // 2
  out = crops.crop_and_resize(frames, np.array([lo, lo, lo + inner, lo + inner]), size)
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cuts_between_people_are_found_at_their_frames(seed):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(12, 30, 3)
  clip = np.concatenate([_faces(100 * seed + i, int(n)) for i, n in enumerate(lengths)])
  expected = np.cumsum(lengths)[:-1].tolist()
  assert scene_cuts.detect_scene_cuts(clip) == expected
  shots = scene_cuts.shots_from_cuts(expected, len(clip))
  assert [end - start for start, end in shots] == lengths.tolist()


def test_cut_to_a_closer_framing_of_the_same_scene_is_found():
  clip = _faces(7, 40)
  joined = np.concatenate([clip[:22], _zoomed(clip[22:], 1.4)])
  assert scene_cuts.detect_scene_cuts(joined) == [22]


def test_motion_flashes_and_lighting_are_not_cuts():
  rng = np.random.default_rng(3)
  wide = _faces(11, 40, 96 + 24)
  offsets = rng.integers(0, 25, (2, 40))     # hand-held shake: up to 12 px every frame
  shaky = np.stack([wide[t, y:y + 96, x:x + 96] for t, (y, x) in enumerate(offsets.T)])
  clip = _faces(12, 40).astype(np.float32)
  flashes = clip.copy()
  flashes[[10, 12, 30]] *= 1.8                # single-frame flashes, two of them 2 frames apart
  ramp = clip * np.concatenate([np.ones(15), np.linspace(1, 0.6, 10), np.full(15, 0.6)]
                               )[:, None, None, None]
  for frames in (shaky, flashes, ramp, clip):
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    assert scene_cuts.detect_scene_cuts(frames) == []


def test_persistence_is_what_rejects_a_flash():
  clip = _faces(12, 30).astype(np.float32)
  clip[15] *= 1.8
  clip = np.clip(clip, 0, 255).astype(np.uint8)
  assert scene_cuts.detect_scene_cuts(clip) == []
  # Without the persistence test the flash's first frame is taken for a cut.
  no_persistence = scene_cuts.SceneCutConfig(persist=0)
  assert scene_cuts.detect_scene_cuts(clip, no_persistence) == [15]


def test_signatures_work_in_chunks_and_are_histograms():
  clip = np.concatenate([_faces(1, 20), _faces(2, 20)])
  whole = scene_cuts.frame_signatures(clip)
  chunks = np.concatenate([scene_cuts.frame_signatures(c) for c in np.split(clip, [7, 25])])
  np.testing.assert_array_equal(whole, chunks)
  assert whole.shape == (40, scene_cuts.SIGNATURE_SIZE) and whole.dtype == np.float32
  saturation_value = whole[:, scene_cuts.HUE_BINS:scene_cuts.HISTOGRAM_SIZE]
  np.testing.assert_allclose(saturation_value.sum(axis=1), 2.0, rtol=1e-5)
  assert scene_cuts.cuts_from_signatures(whole) == [20]
  jumps = scene_cuts.frame_jumps(whole)
  assert jumps[0] == 0 and jumps.argmax() == 20


def test_distance_of_known_pictures():
  black = np.zeros((1, 32, 32, 3), np.uint8)
  white = np.full((1, 32, 32, 3), 255, np.uint8)
  sig_black, sig_white = (scene_cuts.frame_signatures(f)[0] for f in (black, white))
  assert scene_cuts.signature_distance(sig_black, sig_black) == 0
  # Grey pictures: hue histograms empty, saturation identical; value and layout fully differ.
  np.testing.assert_allclose(scene_cuts.signature_distance(sig_black, sig_white), 0.5)


def test_clear_errors():
  with pytest.raises(ValueError, match="uint8"):
    scene_cuts.detect_scene_cuts(np.zeros((3, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match="at least 8x8"):
    scene_cuts.detect_scene_cuts(np.zeros((3, 4, 32, 3), np.uint8))
  with pytest.raises(ValueError, match="ascending"):
    scene_cuts.shots_from_cuts([5, 3], 10)
  with pytest.raises(ValueError, match="min_distance"):
    scene_cuts.SceneCutConfig(min_distance=0)
  assert scene_cuts.detect_scene_cuts(np.zeros((0, 32, 32, 3), np.uint8)) == []
