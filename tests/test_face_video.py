"""Video inference on a real photographed face: the default crop finds it (dlib HOG), keeps its
aspect, pastes softly, and frames without a face pass through unchanged."""
import numpy as np
import pytest

from data_pipelines import crops, face_crops, video_io
from data_pipelines.face_detection import create_detector
from diff2lip_jax import inference, sample
from tests.inference_helpers import lossless_round_trip, mouth_region_mask, write_wav

BLANK = (4, 5, 6)  # frames of the test video without a face


def _astronaut(height: int = 256, width: int = 320) -> np.ndarray:
  from skimage import data
  frame = np.full((height, width, 3), 128, np.uint8)
  face = data.astronaut()[:height, 96:96 + min(width, 320)]
  frame[:, :face.shape[1]] = face
  return frame


@pytest.fixture(scope="module")
def face_inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("astronaut")
  face = _astronaut()
  frames = np.stack([np.full_like(face, 128) if t in BLANK else face for t in range(10)])
  video = video_io.write_video(root / "astronaut.mp4", frames, crf=0, preset="ultrafast")
  wide = np.stack([_astronaut(256, 448)] * 5)
  wide_video = video_io.write_video(root / "wide.mp4", wide, crf=0, preset="ultrafast")
  rng = np.random.default_rng(0)
  audio = write_wav(root / "speech.wav", 0.1 * rng.standard_normal(16000))
  return video, wide_video, audio


def test_default_cli_run_finds_the_face_pastes_softly_and_passes_blank_frames(
    tiny_checkpoint, face_inputs, tmp_path, capsys):
  video, _, audio = face_inputs
  out = tmp_path / "out.mp4"
  code = sample.main(["--checkpoint", tiny_checkpoint, "--quiet", "--video", str(video),
                      "--audio", str(audio), "--out", str(out), "--crf", "0",
                      "--preset", "ultrafast"])
  printed = capsys.readouterr()
  assert code == 0, printed.err
  assert "10 frames at 25 fps, 3 passed through unchanged (no face)" in printed.out
  decoded, _ = video_io.read_video(video)
  result, info = video_io.read_video(out)
  assert len(result) == len(decoded) == 10 and info.has_audio
  baseline = lossless_round_trip(decoded, tmp_path)
  # Frames without a face are the input's, bit for bit (after the same lossless codec).
  np.testing.assert_array_equal(result[list(BLANK)], baseline[list(BLANK)])
  # The others change only inside the lower half of the squared HOG box.
  spec = face_crops.CropSpec("auto", no_face="passthrough", aspect="pad")
  detections = create_detector("hog").detect(decoded)
  boxes, found = face_crops.frame_boxes_and_found(spec, decoded.shape[1:3], 10, detections)
  assert found.tolist() == [t not in BLANK for t in range(10)]
  assert np.all(boxes[:, 2] - boxes[:, 0] == boxes[:, 3] - boxes[:, 1])
  x1, y1, x2, y2 = boxes[0]
  assert 60 < (x1 + x2) / 2 < 200 and 80 < (y1 + y2) / 2 < 180  # her face (docs/face_detection.md)
  for t in np.flatnonzero(found):
    keep = mouth_region_mask(256, 320, boxes[t])
    np.testing.assert_array_equal(result[t][keep], baseline[t][keep])
    assert np.any(result[t][~keep] != baseline[t][~keep])


def test_voxceleb2_crop_warns_once_when_the_framing_differs(tiny_checkpoint, face_inputs,
                                                            tmp_path, capsys):
  _, wide_video, audio = face_inputs
  sampler = inference.Diff2LipSampler.from_checkpoint(tiny_checkpoint)
  result = inference.lip_sync_video(sampler, wide_video, audio, tmp_path / "w.mp4",
                                    crop="voxceleb2", paste="box", preset="ultrafast")
  err = capsys.readouterr().err
  assert len(result.warnings) == 1 and err.count("warning:") == 1
  assert "the frames are 448x256" in err and "in frames 0 (face at x" in err
  assert "--crop auto finds it" in err


def test_framing_warning_on_photographs():
  from skimage import data
  hog = create_detector("hog")
  astronaut = data.astronaut()
  # VoxCeleb2-like: a square frame whose middle her face fills.
  framed = np.asarray(__import__("PIL.Image").Image.fromarray(astronaut[10:250, 103:343])
                      .resize((224, 224)))
  assert face_crops.framing_warning([(0, framed)], hog) is None
  # The whole 512x512 photograph: her face is small for the fixed crop.
  message = face_crops.framing_warning([(0, astronaut), (25, np.zeros_like(astronaut))], hog,
                                       source="a.mp4")
  assert message.startswith("a.mp4: --crop voxceleb2 expects VoxCeleb2 framing")
  assert "frames 0 (face 8" in message and "25 (no face)" in message
  # Without a detector only the frame shape is checked.
  assert face_crops.framing_warning([(0, np.zeros((90, 160, 3), np.uint8))]) is not None
  assert face_crops.framing_warning([(0, astronaut)]) is None


def test_crop_help_shows_a_form_the_parser_accepts():
  parser = sample.build_parser()
  text = " ".join(parser.format_help().split())
  assert "'box" not in text and "--crop box 10,20,110,140" in text
  args = parser.parse_args(["--checkpoint", "c", "--crop", "box", "10,20,110,140"])
  assert face_crops.parse_crop(args.crop).box == (10, 20, 110, 140)
  assert face_crops.parse_crop(["box 10,20,110,140"]).box == (10, 20, 110, 140)  # one word
  defaults = parser.parse_args(["--checkpoint", "c"])
  assert (defaults.crop, defaults.paste, defaults.no_face, defaults.aspect) == (
      ["auto"], "soft", "passthrough", "pad")
  assert set(sample.PASTE_MODES) == set(crops.PASTE_MODES)
  assert set(sample.NO_FACE_POLICIES) == set(face_crops.NO_FACE_POLICIES)


def test_passthrough_boxes_keep_a_neighbours_box_and_a_found_mask():
  from data_pipelines.face_detection import NoFaceError
  face = np.array([[40.0, 30.0, 80.0, 90.0, 0.9]])  # 40 wide, 60 tall
  dets = [face, np.zeros((0, 5)), np.zeros((0, 5)), face]
  spec = face_crops.CropSpec("hog", no_face="passthrough", smooth_window=1, aspect="pad")
  boxes, found = face_crops.frame_boxes_and_found(spec, (120, 160), 6, dets)
  assert found.tolist() == [True, False, False, True, True, True]  # past the end: last frame's
  assert boxes.tolist() == [[30, 30, 90, 90]] * 6  # squared around the same centre
  squash = face_crops.CropSpec("hog", no_face="passthrough", smooth_window=1)
  assert face_crops.frame_boxes(squash, (120, 160), 1, dets).tolist() == [[40, 30, 80, 90]]
  with pytest.raises(NoFaceError, match=r"v.mp4: no face detected in any of the 2 frames .*"
                                        "--crop box X1,Y1,X2,Y2"):
    face_crops.frame_boxes_and_found(spec, (120, 160), 2, dets[1:3], source="v.mp4")
