"""Beam engine of data preparation (DirectRunner, one process): the same records as the local
engine on good and bad inputs, failures recorded, a killed run's re-run without duplicates."""
from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

from data_pipelines import beam_prepare, prepare, shards
from tests.test_prepare import (EXPECTED_REASONS, _failures, bad_inputs,  # noqa: F401 (fixtures)
                                synthetic_videos)

IN_MEMORY = ["--runner", "DirectRunner", "--direct_running_mode", "in_memory",
             "--direct_num_workers", "1"]


def raw_records(out_dir) -> dict[str, bytes]:
  """Record id -> serialized record of every shard; fails on a record written twice."""
  out = {}
  for path in shards.find_shard_files(out_dir):
    source = shards.open_data_source([path])
    for i in range(len(source)):
      record = source[i]
      clip_id = shards.parse_clip(record).clip_id
      assert clip_id not in out, f"{clip_id} written twice"
      out[clip_id] = record
  return out


@pytest.fixture(scope="module")
def local_reference(bad_inputs, tmp_path_factory):
  pytest.importorskip("apache_beam", reason="the [beam] extra is not installed")
  out = tmp_path_factory.mktemp("local")
  prepare.prepare(str(bad_inputs), str(out), num_workers=0, progress=False)
  return out


def test_beam_cli_writes_the_local_records_and_failures(bad_inputs, local_reference, tmp_path):
  out = tmp_path / "beam"
  code = prepare.main(["--engine", "beam", "--input", str(bad_inputs), "--out_dir", str(out),
                       "--clips_per_shard", "1", "--quiet"] + IN_MEMORY)
  assert code == 0
  expected = raw_records(local_reference)
  assert sorted(expected) == ["good", "vidéo/клип ü"]
  assert raw_records(out) == expected  # byte-identical records
  assert _failures(out) == _failures(local_reference)
  assert _failures(out).keys() == EXPECTED_REASONS.keys()
  manifest = json.loads((out / prepare.MANIFEST).read_text(encoding="utf-8"))
  assert sorted(c for clips in manifest["shards"].values() for c in clips) == sorted(expected)
  assert not (out / beam_prepare.SIDECAR_DIR).exists()
  assert not [n for n in os.listdir(out) if n.startswith(shards.TMP_PREFIX)]
  # Everything is finished (written or failed): a second run starts no clip.
  again = beam_prepare.run(str(bad_inputs), str(out), pipeline_args=IN_MEMORY)
  assert (again["already_done"], again["written"], again["failed"]) == (len(expected) + len(EXPECTED_REASONS), 0, 0)


def test_rerun_after_a_kill_adopts_finished_shards_and_writes_no_duplicates(
    bad_inputs, local_reference, tmp_path):
  out = str(tmp_path / "killed")
  options = prepare.PrepareOptions()
  manifest, jobs, _ = beam_prepare.start(str(bad_inputs), out, options, clips_per_shard=1,
                                         format="tfrecord", root=None, video_ext=".mp4",
                                         retry_failed=False)
  beam_prepare.execute(jobs, out, options, "tfrecord", 0, IN_MEMORY)
  # Killed before the driver's last step: shards and sidecars exist, the manifest has none.
  # One shard was renamed but its sidecar never written; a temporary file is left over.
  shard_of = {clip_id: shard for shard, _, clip_id in jobs}
  side = pathlib.Path(out, beam_prepare.SIDECAR_DIR)
  (side / f"{shard_of['good']}.json").unlink()
  pathlib.Path(out, f"{shards.TMP_PREFIX}99-{shard_of['good']}").write_bytes(b"partial")
  assert json.loads(pathlib.Path(out, prepare.MANIFEST).read_text())["shards"] == {}
  summary = beam_prepare.run(str(bad_inputs), out, options, clips_per_shard=1,
                             pipeline_args=IN_MEMORY)
  # The orphan is replaced (only "good" is redone), the rest was adopted from the sidecars.
  assert (summary["already_done"], summary["written"], summary["failed"]) == (len(EXPECTED_REASONS) + 1, 1, 0)
  assert [os.path.basename(p) for p in summary["shards"]] == ["clips-r001-00000.tfrecord"]
  assert raw_records(out) == raw_records(local_reference)
  assert _failures(out) == _failures(local_reference)
  manifest = json.loads(pathlib.Path(out, prepare.MANIFEST).read_text(encoding="utf-8"))
  # Readers only take the manifest's shards; no other shard file is left on disk either.
  assert sorted(manifest["shards"]) == sorted(n for n in os.listdir(out)
                                              if n.endswith(".tfrecord"))
  assert not [n for n in os.listdir(out) if n.startswith(shards.TMP_PREFIX)]


def test_missing_beam_says_how_to_install(monkeypatch, tmp_path, capsys):
  monkeypatch.setitem(sys.modules, "apache_beam", None)  # import apache_beam -> ImportError
  with pytest.raises(SystemExit) as exit_info:
    prepare.main(["--engine", "beam", "--input", str(tmp_path), "--out_dir",
                  str(tmp_path / "o")])
  assert exit_info.value.code == 2
  assert "pip install 'diff2lip-jax[beam]'" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # Beam options are only accepted with the Beam engine
    prepare.main(["--input", str(tmp_path), "--out_dir", str(tmp_path / "o"), "--runner", "X"])
