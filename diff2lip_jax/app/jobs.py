"""The web app's work, free of any web framework (so it is testable without a browser).

* :func:`cli_choices`: the crop / paste / mode choices and defaults of
  ``python -m diff2lip_jax.sample`` (its parser and the pipeline constants own them).
* :class:`SamplerCache`: the checkpoint is read once; one jitted sampler per sampler-steps
  setting (``respacing``), built on first use and kept (a few, least recently used dropped).
* :class:`LipSyncJobs`: runs one upload pair through ``inference.lip_sync_video`` into a
  private output directory and turns every input error into one line for the page.
* :func:`write_examples`: a synthetic talking-face clip and another clip's speech, so a
  newcomer can try the app without files of their own.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
import pathlib
import re
import shutil
import threading
from typing import Any, Callable

import numpy as np
import soundfile

from data_pipelines import synthetic, video_io
from diff2lip_jax import checkpoints, inference
from diff2lip_jax import sample as sample_cli
from diff2lip_jax.inference import pipeline

STEP_CHOICES = ("ddim10", "ddim25", "ddim50")
EXAMPLE_SIZE = 256       # full-frame side of the bundled example video (pixels)
EXAMPLE_FRAMES = 50      # 2 s at 25 fps
KEEP_RUNS = 8            # finished result directories kept for the page to serve

log = logging.getLogger(__name__)
Report = Callable[[float, str], None]


@dataclasses.dataclass(frozen=True)
class Choices:
  """What the page offers, with the defaults the sample CLI uses."""
  crops: tuple[str, ...]
  crop: str
  pastes: tuple[str, ...]
  paste: str
  modes: tuple[str, ...]
  mode: str
  steps: tuple[str, ...]
  step: str
  loop_video: bool


def _with_default(options: tuple[str, ...], default: str) -> tuple[str, ...]:
  return options if default in options else (default,) + tuple(options)


def cli_choices(default_steps: str) -> Choices:
  """Choices of the sample CLI (defaults from its parser) plus the sampler steps to offer.

  ``default_steps`` is the respacing of the sampler built at startup; it comes first when it
  is not one of :data:`STEP_CHOICES`.
  """
  parser = sample_cli.build_parser()
  crop_default = parser.get_default("crop")
  if not isinstance(crop_default, str):
    crop_default = " ".join(crop_default)
  crop_kind = crop_default.split()[0]
  return Choices(
      crops=_with_default(tuple(pipeline.CROP_KINDS), crop_kind), crop=crop_kind,
      pastes=_with_default(tuple(pipeline.PASTE_MODES), parser.get_default("paste")),
      paste=parser.get_default("paste"),
      modes=_with_default(tuple(pipeline.MODES), parser.get_default("mode")),
      mode=parser.get_default("mode"),
      steps=_with_default(STEP_CHOICES, default_steps), step=default_steps,
      loop_video=bool(parser.get_default("loop_video")))


class SamplerCache:
  """Reads a checkpoint once and hands out one ``Diff2LipSampler`` per sampler-steps setting.

  Building a sampler re-uses the loaded parameters; the jitted function of a setting is
  compiled on its first batch (``inference`` keeps compiled functions per setting too).
  """

  def __init__(self, checkpoint: str, respacing: str | None = None, max_entries: int = 3,
               **overrides: Any):
    self._params, self._config = checkpoints.load_inference_checkpoint(checkpoint)
    self._overrides, self._max = overrides, max(1, max_entries)
    self._samplers: collections.OrderedDict[str, inference.Diff2LipSampler] = (
        collections.OrderedDict())
    self._lock = threading.Lock()
    self._default_key: str | None = None
    self.default = self.get(respacing)  # checks the parameters against the config now

  def get(self, respacing: str | None) -> inference.Diff2LipSampler:
    """The sampler for ``respacing`` (e.g. "ddim25"; None or "" for the startup default).

    Raises ValueError for a respacing the diffusion cannot use.
    """
    key = (respacing or "").strip() or self._default_key or ""
    with self._lock:
      if key in self._samplers:
        self._samplers.move_to_end(key)
        return self._samplers[key]
      sampler = inference.Diff2LipSampler(self._params, self._config, respacing=key or None,
                                          **self._overrides)
      key = key or sampler.respacing
      self._samplers[key] = sampler
      if self._default_key is None:
        self._default_key = key
      # The startup sampler stays; the others are dropped least recently used first.
      others = [k for k in self._samplers if k != self._default_key]
      for old in others[:max(0, len(others) - (self._max - 1))]:
        del self._samplers[old]
      return sampler


@dataclasses.dataclass(frozen=True)
class JobRequest:
  """One press of Run: the two uploads and the options, as the page sends them."""
  video: str | None
  audio: str | None
  crop: str
  box: str = ""
  steps: str = ""
  paste: str = "lower_half"
  mode: str = "cross"
  loop_video: bool = False


@dataclasses.dataclass(frozen=True)
class JobResult:
  """``path`` of the lip-synced mp4 (None on failure) and one line for the page."""
  path: str | None
  message: str

  @property
  def ok(self) -> bool:
    return self.path is not None


def user_message(error: BaseException) -> str:
  """One line that says what went wrong, without a traceback."""
  text = " ".join(str(error).split()) or type(error).__name__
  if isinstance(error, FileNotFoundError) and error.filename:
    text = f"file not found: {error.filename}"
  return f"Error: {text}"


def _safe_stem(path: str) -> str:
  stem = re.sub(r"[^A-Za-z0-9_-]+", "_", pathlib.Path(path).stem).strip("_")
  return stem[:40] or "input"


class LipSyncJobs:
  """Runs lip-sync jobs for the page; outputs live under ``work_dir`` until the app exits."""

  def __init__(self, samplers: SamplerCache, work_dir: str | os.PathLike,
               s3fd_weights: str | None = None):
    self.samplers = samplers
    self.out_root = pathlib.Path(work_dir) / "results"
    self.out_root.mkdir(parents=True, exist_ok=True)
    self._s3fd_weights, self._detector = s3fd_weights, None
    self._counter = itertools.count(1)

  def _detector_for(self, crop: inference.CropSpec) -> Any:
    """The S3FD detector (built once) when the crop needs it and weights were given."""
    if crop.kind != "s3fd" or not self._s3fd_weights:
      return None
    if self._detector is None:
      from data_pipelines.face_detection import FaceDetector
      self._detector = FaceDetector.from_checkpoint(self._s3fd_weights)
    return self._detector

  def _prune(self) -> None:
    """Drops the oldest result directories beyond :data:`KEEP_RUNS`."""
    runs = sorted((p for p in self.out_root.iterdir() if p.is_dir()),
                  key=lambda p: p.stat().st_mtime)
    for old in runs[:-KEEP_RUNS]:
      shutil.rmtree(old, ignore_errors=True)

  def _sampler(self, steps: str) -> inference.Diff2LipSampler:
    try:
      return self.samplers.get(steps)
    except ValueError as error:
      raise inference.InferenceInputError(f"sampler steps {steps!r}: {error}") from error

  def _lip_sync(self, request: JobRequest, report: Report) -> JobResult:
    words = [request.crop] + ([request.box] if request.crop == "box" else [])
    defaults = sample_cli.build_parser()  # the CLI's no-face policy and aspect handling
    crop = inference.parse_crop(" ".join(words), no_face=defaults.get_default("no_face"),
                                aspect=defaults.get_default("aspect"))
    report(0.0, "loading the sampler")
    sampler = self._sampler(request.steps)
    run_dir = self.out_root / f"run{next(self._counter):04d}"
    run_dir.mkdir()
    out = run_dir / f"{_safe_stem(request.video)}_{_safe_stem(request.audio)}.mp4"
    report(0.0, "reading the inputs")
    result = inference.lip_sync_video(
        sampler, request.video, request.audio, out, mode=request.mode, crop=crop,
        detector=self._detector_for(crop), loop_video=request.loop_video,
        paste=request.paste, progress=True)
    looped = ", video looped" if result.looped else ""
    return JobResult(result.out_path, (
        f"Done: {result.num_frames} frames ({result.num_frames / pipeline.FPS:.2f} s at 25 fps"
        f"{looped}) in {result.seconds:.1f} s with {sampler.respacing or 'all'} sampler steps"))

  def run(self, request: JobRequest, report: Report | None = None) -> JobResult:
    """Lip-syncs ``request.video`` to ``request.audio``; never raises for a user error.

    ``report(fraction, text)`` is told what stage the job is in (frame progress itself comes
    from the pipeline's tqdm bars).
    """
    if not request.video:
      return JobResult(None, "Error: upload a face video (or click an example) first")
    if not request.audio:
      return JobResult(None, "Error: upload a speech audio file (or click an example) first")
    try:
      return self._lip_sync(request, report or (lambda fraction, text: None))
    except (ValueError, OSError) as error:  # input errors: the pipeline's messages say why
      return JobResult(None, user_message(error))
    except Exception as error:  # noqa: BLE001 - a bug must not stop the server
      log.exception("lip sync failed")
      return JobResult(None, f"Error: internal error ({type(error).__name__}: {error}); "
                             "the server log has the details")
    finally:
      self._prune()


def write_examples(directory: str | os.PathLike, size: int = EXAMPLE_SIZE,
                   num_frames: int = EXAMPLE_FRAMES) -> list[list[str]]:
  """Writes one example pair and returns ``[[video, audio]]`` for the page.

  The video is a synthetic VoxCeleb2-framed talking face (``size`` x ``size``, 25 fps, its own
  speech as the audio track); the audio is the speech of another synthetic clip, so the
  result's mouth should follow a voice the video never had.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  face = synthetic.generate_clip(3, num_frames=num_frames, image_size=32,
                                 full_frame_size=size, noise_std=0.0)
  video = video_io.write_video(directory / "synthetic_face.mp4", face.full_frames,
                               fps=synthetic.FPS, audio=face.wav, audio_sr=face.sample_rate,
                               preset="veryfast")
  speech = synthetic.generate_clip(11, num_frames=num_frames, image_size=32, noise_std=0.0)
  audio = directory / "synthetic_speech.wav"
  soundfile.write(str(audio), np.asarray(speech.wav, np.float32), speech.sample_rate)
  return [[str(video), str(audio)]]
