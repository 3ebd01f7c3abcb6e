"""Curation inside data preparation (both engines): an injected audio offset is measured and the
record's audio shifted by it, an injected scene cut splits the clip, dubbed audio is dropped
for low sync confidence, and the report beside the shards adds up."""
from __future__ import annotations

import csv
import json

import numpy as np
import PIL.Image
import pytest

from data_pipelines import audio, curation, prepare, shards, synthetic, video_io
from tests.test_beam_prepare import IN_MEMORY, raw_records

PER_FRAME = 640   # 16 kHz / 25 fps
FRAMES = 40
MARGIN = 6        # frames rendered beyond the clip so its audio can lead the video
LEAD = 3          # injected: the audio leads the video by 3 frames
FLAGS = ["--curate", "--sync_measurer", "synthetic", "--curate_min_frames", "20", "--quiet"]


@pytest.fixture(scope="module")
def curation_inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("curation_inputs")
  clips = [synthetic.generate_clip(s, FRAMES + 2 * MARGIN, full_frame_size=160)
           for s in (31, 32)]
  video = clips[0].full_frames[MARGIN:MARGIN + FRAMES]
  start = (MARGIN + LEAD) * PER_FRAME
  write = lambda name, frames, wav: video_io.write_video(root / f"{name}.mp4", frames, fps=25.0,
                                                        audio=wav, preset="ultrafast")
  write("lead", video, clips[0].wav[start:start + FRAMES * PER_FRAME])
  # Two people, each with their own speech: a cut at frame FRAMES.
  write("cut", np.concatenate([c.full_frames[:FRAMES] for c in clips]),
        np.concatenate([c.wav[:FRAMES * PER_FRAME] for c in clips]))
  write("dubbed", video, clips[1].wav[MARGIN * PER_FRAME:(MARGIN + FRAMES) * PER_FRAME])
  return root


@pytest.fixture(scope="module")
def curated(curation_inputs, tmp_path_factory):
  out = tmp_path_factory.mktemp("curated")
  assert prepare.main(["--input", str(curation_inputs), "--out_dir", str(out), "--num_workers",
                       "0"] + FLAGS) == 0
  return out


def test_offsets_cuts_and_confidence_decide_the_records(curation_inputs, curated):
  records = {k: shards.parse_clip(v) for k, v in raw_records(curated).items()}
  assert sorted(records) == ["cut#0", "cut#1", "lead"]
  assert [records[f"cut#{i}"].num_frames for i in range(2)] == [FRAMES, FRAMES]
  # The audio was delayed by the measured 3 frames: frames 3.. pair with the audio from 0.
  lead = records["lead"]
  assert lead.num_frames == FRAMES - LEAD
  wav = audio.load_audio(str(curation_inputs / "lead.mp4"))
  expected_mel = audio.melspectrogram(wav[:(FRAMES - LEAD) * PER_FRAME])
  np.testing.assert_allclose(lead.mel, expected_mel, atol=1e-5)
  decisions = {d["clip_id"]: d for d in map(json.loads, (curated / "curation" / "decisions.jsonl")
                                            .read_text(encoding="utf-8").splitlines())}
  assert decisions["lead"]["segments"][0]["offset"] == LEAD
  assert decisions["cut"]["cuts"] == [FRAMES]
  assert [s["offset"] for s in decisions["cut"]["segments"]] == [0, 0]
  (dubbed,) = decisions["dubbed"]["segments"]
  assert dubbed["reason"] == "low_confidence" and not dubbed["keep"]
  failures = [json.loads(line) for line in (curated / prepare.FAILURES).read_text().splitlines()]
  assert [f["clip_id"] for f in failures] == ["dubbed"]
  assert failures[0]["reason"].startswith("dropped by curation: frames 0-40 low_confidence")


def test_report_counts_plots_and_dropped_list(curation_inputs, curated):
  report = curated / "curation"
  summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
  assert summary["reasons"] == {"kept": 3, "low_confidence": 1}
  assert (summary["clips"], summary["shots"], summary["clips_with_cuts"]) == (3, 4, 1)
  for name in ("offset", "confidence", "face_size"):
    with PIL.Image.open(report / f"{name}.png") as image:
      assert image.format == "PNG" and image.size[0] > 100
  with open(report / "dropped.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert [(r["clip_id"], r["reason"]) for r in rows] == [("dubbed", "low_confidence")]
  # A re-run decides nothing new and keeps the report of the first run.
  before = (report / "decisions.jsonl").read_text(encoding="utf-8")
  assert prepare.main(["--input", str(curation_inputs), "--out_dir", str(curated),
                       "--num_workers", "0"] + FLAGS) == 0
  assert (report / "decisions.jsonl").read_text(encoding="utf-8") == before


def test_beam_engine_curates_the_same(curation_inputs, curated, tmp_path):
  pytest.importorskip("apache_beam", reason="the [beam] extra is not installed")
  out = tmp_path / "beam"
  assert prepare.main(["--engine", "beam", "--input", str(curation_inputs), "--out_dir",
                       str(out)] + FLAGS + IN_MEMORY) == 0
  assert raw_records(out) == raw_records(curated)
  for name in ("summary.json", "dropped.csv", "decisions.jsonl"):
    assert (out / "curation" / name).read_text() == (curated / "curation" / name).read_text()


def test_curation_needs_sync_weights_or_no_sync(curation_inputs, tmp_path):
  options = prepare.PrepareOptions(curation=curation.CurationConfig())
  with pytest.raises(FileNotFoundError, match="--sync_weights"):
    prepare.prepare(str(curation_inputs), str(tmp_path), options)
  expert = prepare.PrepareOptions(curation=curation.CurationConfig(), sync_measurer="expert",
                                  sync_weights=str(curation_inputs / "lead.mp4"))
  with pytest.raises(ValueError, match="--curate_min_confidence"):
    prepare.prepare(str(curation_inputs), str(tmp_path), expert)
  assert not list(tmp_path.iterdir())  # nothing written before the settings are checked
  flag = next(a for a in prepare.build_parser()._actions if a.dest == "sync_measurer")
  assert tuple(flag.choices) == curation.sync.MEASURERS
  assert prepare.main(["--input", str(curation_inputs), "--out_dir", str(tmp_path / "o"),
                       "--curate", "--no-curate_sync", "--curate_scenes", "drop",
                       "--num_workers", "0", "--quiet"]) == 0
  summary = json.loads((tmp_path / "o" / "curation" / "summary.json").read_text())
  assert summary["reasons"] == {"kept": 2, "scene_cut": 1} and summary["offset"] is None
