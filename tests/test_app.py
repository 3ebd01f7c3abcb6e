"""The web app (diff2lip_jax.app): its work without a browser, and end to end in a real one.

The browser tests start ``python -m diff2lip_jax.app`` on a tiny random checkpoint and drive
Debian's chromium (``/usr/bin/chromium``) with Playwright: bad uploads show one error line,
an uploaded synthetic clip + speech is lip-synced, and the result plays in the page, has video
frames and an audio track, and downloads. Every request the page makes must stay on this
machine. Without chromium or Playwright they are skipped, except under CI=true, where
``.ci/run`` installs them and their absence is a failure.
"""
from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from data_pipelines import video_io
from diff2lip_jax import sample as sample_cli
from diff2lip_jax.app import jobs, server
from diff2lip_jax.inference import pipeline
from tests import inference_helpers as helpers

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 180   # s: imports, checkpoint, example clip (slow when the 2 cores are shared)
RUN_TIMEOUT = 240     # s: the first run compiles the sampler
STOP_TIMEOUT = 30


# ---------------------------------------------------------------- without a browser

def test_choices_are_the_sample_cli_ones():
  parser = sample_cli.build_parser()
  choices = jobs.cli_choices("ddim7")
  assert set(pipeline.CROP_KINDS) <= set(choices.crops)
  assert choices.crop == " ".join(parser.get_default("crop")).split()[0]
  assert set(pipeline.PASTE_MODES) <= set(choices.pastes)
  assert choices.paste == parser.get_default("paste")
  assert set(pipeline.MODES) <= set(choices.modes) and choices.mode == parser.get_default("mode")
  assert choices.steps[0] == "ddim7" and choices.step == "ddim7"
  assert set(jobs.STEP_CHOICES) <= set(choices.steps)


def test_help_explains_every_flag():
  parser = server.build_parser()
  text = parser.format_help()
  flags = []
  for action in parser._actions:
    assert action.help, action.dest
    flags += action.option_strings
  assert all(flag in text for flag in flags)
  assert "--share" not in flags and "127.0.0.1" in text and '".[app]"' in text


def test_missing_gradio_says_how_to_install():
  code = ("import sys; sys.modules['gradio'] = None; "
          "from diff2lip_jax.app.server import main; sys.exit(main(['--checkpoint', 'x']))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 1
  assert 'pip install -e ".[app]"' in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def lip_sync_jobs(tmp_path_factory, tiny_checkpoint):
  samplers = jobs.SamplerCache(tiny_checkpoint, max_entries=2)
  return jobs.LipSyncJobs(samplers, tmp_path_factory.mktemp("app_jobs"))


def test_sampler_cache_builds_each_setting_once(lip_sync_jobs):
  cache = lip_sync_jobs.samplers
  assert cache.default.respacing == helpers.RESPACING
  assert cache.get(None) is cache.default and cache.get(helpers.RESPACING) is cache.default
  three = cache.get("ddim3")
  assert three.respacing == "ddim3" and cache.get("ddim3") is three
  cache.get("ddim4")  # max_entries=2: ddim3 goes, the startup sampler stays
  assert cache.get("") is cache.default and cache.get("ddim3") is not three


def test_input_errors_are_one_line(lip_sync_jobs, tmp_path):
  clip = helpers.face_clip(5, 10)
  video = str(helpers.write_face_video(tmp_path / "face.mp4", clip))
  speech = str(helpers.write_wav(tmp_path / "speech.wav", clip.wav))
  short = str(helpers.write_wav(tmp_path / "short.wav", clip.wav[:1600]))
  text = tmp_path / "notes.mp4"
  text.write_text("not a video\n")
  cases = {  # request -> words the message must hold
      jobs.JobRequest(None, speech, "voxceleb2"): "upload a face video",
      jobs.JobRequest(video, None, "voxceleb2"): "upload a speech",
      jobs.JobRequest(str(text), speech, "voxceleb2"): "notes.mp4",
      jobs.JobRequest(video, short, "voxceleb2"): "0.2 s",
      jobs.JobRequest(video, speech, "voxceleb2", steps="ddimX"): "sampler steps 'ddimX'",
      jobs.JobRequest(video, speech, "box", box="1,2,3"): "four integers",
      jobs.JobRequest(video, speech, "box", box="0,0,500,500"): "outside",
      jobs.JobRequest(video, str(tmp_path / "gone.wav"), "voxceleb2"): "gone.wav",
  }
  for request, words in cases.items():
    result = lip_sync_jobs.run(request)
    assert not result.ok and result.message.startswith("Error: "), (request, result)
    assert words in result.message and "\n" not in result.message, result.message
  assert video_io.read_audio_track(speech)[0].size == clip.wav.size  # inputs untouched


# ---------------------------------------------------------------- in a real browser

def _browser_or_skip():
  """Playwright's sync API, or skip (fail under CI=true) naming what is missing."""
  missing = []
  try:
    from playwright import sync_api
  except ImportError:
    sync_api, missing = None, missing + ['playwright (pip install -e ".[test]")']
  try:
    server.import_gradio()
  except ImportError as error:
    missing.append(str(error))
  if not os.access(CHROMIUM, os.X_OK):
    missing.append(f"{CHROMIUM} (apt-get install chromium)")
  if missing:
    reason = "browser test needs " + "; ".join(missing)
    if os.environ.get("CI") == "true":
      pytest.fail(reason + " — .ci/run installs these under CI=true")
    pytest.skip(reason)
  return sync_api


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_until_serving(proc: subprocess.Popen, url: str, log: pathlib.Path) -> None:
  deadline = time.monotonic() + START_TIMEOUT
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()}")
    try:
      with urllib.request.urlopen(url, timeout=5) as response:
        if response.status == 200:
          return
    except OSError:
      time.sleep(0.5)
  pytest.fail(f"the app did not serve {url} within {START_TIMEOUT} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, tiny_checkpoint):
  """A running app on a free loopback port; stopped with SIGTERM, its temp files checked."""
  _browser_or_skip()
  root = tmp_path_factory.mktemp("app_server")
  tmp, log = root / "tmp", root / "server.log"
  tmp.mkdir()
  port = _free_port()
  env = dict(os.environ, TMPDIR=str(tmp))
  with open(log, "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "diff2lip_jax.app", "--checkpoint",
                             tiny_checkpoint, "--port", str(port)],
                            stdout=out, stderr=subprocess.STDOUT, env=env)
  try:
    url = f"http://127.0.0.1:{port}/"
    _wait_until_serving(proc, url, log)
    yield url
  finally:
    proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
  text = log.read_text()
  assert proc.returncode == 0, text
  assert "Traceback" not in text, text
  assert not list(tmp.glob("diff2lip_app_*")), "the app left its temporary directory behind"


@pytest.fixture(scope="module")
def page(app_url, tmp_path_factory):
  """A chromium page with a fresh profile; requests off this machine are refused and listed."""
  sync_api = _browser_or_skip()
  outside: list[str] = []

  def only_local(route):
    host = urllib.parse.urlsplit(route.request.url).hostname
    if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
      route.continue_()
    else:
      outside.append(route.request.url)
      route.abort()

  with sync_api.sync_playwright() as playwright:
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium_profile")), executable_path=CHROMIUM,
        args=CHROMIUM_ARGS, headless=True)
    try:
      tab = context.new_page()
      tab.set_default_timeout(60_000)
      tab.route("**/*", only_local)
      yield tab
    finally:
      context.close()
  assert not outside, f"the page fetched from outside this machine: {outside}"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
  """A synthetic face clip (96x96, 1.2 s), another clip's speech, and two bad files."""
  directory = tmp_path_factory.mktemp("app_media")
  face, voice = helpers.face_clip(1, 30), helpers.face_clip(2, 30)
  text = directory / "not_a_video.mp4"
  text.write_text("this is a text file\n")
  return {"video": str(helpers.write_face_video(directory / "face.mp4", face)),
          "speech": str(helpers.write_wav(directory / "speech.wav", voice.wav)),
          "short": str(helpers.write_wav(directory / "short.wav", voice.wav[:1600])),
          "text": str(text)}


def _upload(page, elem_id: str, path: str) -> None:
  page.locator(f"#{elem_id} input[type=file]").set_input_files(path)
  # The drop zone (and its file input) gives way to a player once the upload is in.
  page.locator(f"#{elem_id} input[type=file]").wait_for(state="detached")


def _run_and_wait(page, expect_progress: bool = False) -> str:
  page.click("#run")
  if expect_progress:  # the pipeline's tqdm bar, counted in frames, over the result
    page.wait_for_function(
        r"() => /\d+\/\d+ frame/.test(document.querySelector('#result').innerText)",
        timeout=RUN_TIMEOUT * 1000)
  page.wait_for_function("() => document.querySelector('#status textarea').value.length > 0",
                         timeout=RUN_TIMEOUT * 1000)
  return page.locator("#status textarea").input_value()


@pytest.mark.parametrize("video,audio,words", [("text", "speech", "not_a_video.mp4"),
                                               ("video", "short", "0.2 s")])
def test_bad_upload_shows_an_error(page, app_url, media, video, audio, words):
  page.goto(app_url)
  _upload(page, "video_in", media[video])
  _upload(page, "audio_in", media[audio])
  status = _run_and_wait(page)
  assert status.startswith("Error: ") and words in status, status
  assert "Traceback" not in page.content()
  assert page.locator("#result video").count() == 0


def test_example_fills_the_inputs(page, app_url):
  page.goto(app_url)
  page.get_by_text("synthetic_speech.wav").click()
  page.locator("#video_in video").wait_for()
  page.locator("#audio_in input[type=file]").wait_for(state="detached")


def _fetch(page, url: str, path: pathlib.Path) -> pathlib.Path:
  response = page.request.get(url)
  assert response.ok, (url, response.status)
  path.write_bytes(response.body())
  return path


def test_upload_run_play_and_download(page, app_url, media, tmp_path):
  page.goto(app_url)
  _upload(page, "video_in", media["video"])
  _upload(page, "audio_in", media["speech"])
  status = _run_and_wait(page, expect_progress=True)
  assert status.startswith("Done: "), status
  frames_done = int(status.split()[1])
  video = page.locator("#result video")
  video.wait_for()
  played = page.evaluate("""async () => {
      const v = document.querySelector('#result video');
      v.muted = true;
      await v.play();
      const start = performance.now();
      while (v.currentTime === 0 && performance.now() - start < 10000)
        await new Promise(r => setTimeout(r, 50));
      return {readyState: v.readyState, duration: v.duration, time: v.currentTime};
    }""")
  assert played["readyState"] >= 2 and played["duration"] > 0 and played["time"] > 0, played
  assert abs(played["duration"] - frames_done / 25.0) < 0.1, (played, status)

  result = _fetch(page, video.get_attribute("src"), tmp_path / "played.mp4")
  frames, info = video_io.read_video(result)
  samples, rate = video_io.read_audio_track(result)
  assert len(frames) == frames_done > 0 and info.fps == 25.0 and info.has_audio, info
  assert frames.shape[1:] == (helpers.FULL, helpers.FULL, 3) and frames.std() > 0
  assert samples.size > 0.9 * frames_done / 25.0 * rate and np.abs(samples).max() > 0

  assert page.locator("button[aria-label='Share']").count() == 0  # no upload to HF Spaces

  link = page.locator("#download a[download]")
  assert link.get_attribute("download").endswith(".mp4")
  downloaded = _fetch(page, link.get_attribute("href"), tmp_path / "downloaded.mp4")
  assert downloaded.read_bytes() == result.read_bytes()
