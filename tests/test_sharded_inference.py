"""Inference on every device: crops split over a device mesh equal one device's bit for bit;
sampler selection; a filelist split over processes."""
import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from diff2lip_jax import inference, sample
from tests.inference_helpers import (face_clip, random_params, tiny_config, write_face_video,
                                     write_wav)

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs in a fresh process with DEVICES simulated CPU devices; writes the float x0 and the uint8
# crops of every (name, devices, fsdp, sampler) case to OUT (an .npz).
CHILD = r"""
import json, sys
import jax, numpy as np
from diff2lip_jax import inference
from tests.inference_helpers import face_clip, random_params, tiny_config
out, cases = sys.argv[1], json.loads(sys.argv[2])
config = tiny_config()
params = random_params(config.model)
clip = face_clip(21, 20)
frames = clip.frames[:13]
mels = inference.mel_windows(clip.mel, 0, 13)
results = {"device_count": np.asarray(jax.local_device_count())}
for name, count, fsdp, sampler_name in cases:
  sampler = inference.Diff2LipSampler(params, config, batch_size=2, sampler=sampler_name,
                                      devices=jax.local_devices()[:count], fsdp=fsdp)
  sharded = [leaf for leaf in jax.tree_util.tree_leaves(sampler.params)
             if not leaf.sharding.is_fully_replicated]
  results[name + "_sharded_params"] = np.asarray(len(sharded))
  pending = [sampler.submit(frames[i:i + sampler.batch_size], frames[i:i + sampler.batch_size],
                            mels[i:i + sampler.batch_size])
             for i in range(0, len(frames), sampler.batch_size)]
  results[name + "_x0"] = np.concatenate([p.samples() for p in pending])
  results[name + "_crops"] = np.concatenate([p.result() for p in pending])
np.savez(out, **results)
"""


def _run_child(tmp_path, devices: int, cases: list) -> dict:
  out = tmp_path / f"child{devices}.npz"
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
  proc = subprocess.run([sys.executable, "-c", CHILD, str(out), json.dumps(cases)], env=env,
                        cwd=ROOT, capture_output=True, text=True, timeout=800)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with np.load(out) as data:
    return dict(data)


def test_crops_on_8_devices_equal_one_device_bit_for_bit(tmp_path):
  one = _run_child(tmp_path, 1, [["one", 1, 1, "ddim"]])
  many = _run_child(tmp_path, 8, [["d8", 8, 1, "ddim"], ["fsdp", 8, 2, "ddim"]])
  assert int(one["device_count"]) == 1 and int(many["device_count"]) == 8
  assert one["one_crops"].shape == (13, 32, 32, 3)
  for name in ("d8", "fsdp"):
    np.testing.assert_array_equal(many[name + "_x0"], one["one_x0"], err_msg=name)
    np.testing.assert_array_equal(many[name + "_crops"], one["one_crops"], err_msg=name)
  assert int(many["d8_sharded_params"]) == 0 and int(many["fsdp_sharded_params"]) > 0


def test_batch_is_per_device_and_padded_to_the_mesh():
  import jax
  config = tiny_config()
  params = random_params(config.model)
  devices = jax.local_devices()
  sampler = inference.Diff2LipSampler(params, config, batch_size=3, devices=devices[:4])
  assert sampler.batch_size == 12 and sampler.num_devices == 4
  assert sampler.describe()["mesh"] == {"data": 4, "fsdp": 1}
  clip = face_clip(22, 10)
  mels = inference.mel_windows(clip.mel, 0, 4)
  pending = sampler.submit(clip.frames[:4], clip.frames[:4], mels)
  assert pending.samples().shape == (4, 32, 32, 3)
  leaf = jax.tree_util.tree_leaves(sampler.params)[0]
  assert len(leaf.sharding.device_set) == 4 and leaf.sharding.is_fully_replicated
  with pytest.raises(inference.InferenceInputError, match="fsdp=3 must divide"):
    inference.Diff2LipSampler(params, config, devices=devices[:4], fsdp=3)


def test_sampler_comes_from_the_argument_or_the_config():
  config = tiny_config()
  params = random_params(config.model)
  build = lambda cfg=config, **kw: inference.Diff2LipSampler(params, cfg, check=False, **kw)
  assert config.sampling.sampler == "ddim" and build().sampler == "ddim"
  assert build(sampler="dpmpp_2m").describe()["sampler"] == "dpmpp_2m"
  assert build(use_ddim=False).sampler == "ddpm" and not build(use_ddim=False).use_ddim
  unipc = config.copy_and_resolve_references()
  unipc.sampling.sampler = "unipc"
  assert build(unipc).sampler == "unipc"
  legacy = config.copy_and_resolve_references()  # configs written before sampling.sampler
  del legacy.sampling["sampler"]
  legacy.sampling.use_ddim = False
  assert build(legacy).sampler == "ddpm"
  with pytest.raises(inference.InferenceInputError, match="unknown sampler 'dpm'"):
    build(sampler="dpm")
  with pytest.raises(inference.InferenceInputError, match="eta must be 0"):
    build(sampler="unipc", eta=0.5)
  contradiction = config.copy_and_resolve_references()
  contradiction.sampling.use_ddim = False
  with pytest.raises(inference.InferenceInputError, match="config sampling: use_ddim=False"):
    build(contradiction)


def test_filelist_share_of_each_process(tmp_path):
  entries = list(range(7))
  shares = [sample.process_share(entries, i, 3) for i in range(3)]
  assert shares == [[0, 3, 6], [1, 4], [2, 5]]
  assert sorted(sum(shares, [])) == entries
  assert sample.process_share(entries, 0, 1) == entries
  with pytest.raises(ValueError, match="not in 0..1"):
    sample.process_share(entries, 2, 2)
  assert sample.failures_name(0, 1) == "failures.txt"
  assert sample.failures_name(1, 2) == "failures.1.txt"

  filelist = tmp_path / "pairs.txt"
  filelist.write_text("".join(f"a{i}.wav v{i}.mp4\n" for i in range(5)))
  seen = []

  def run_pair(video, audio, out):
    seen.append(audio.name)
    if audio.name == "a3.wav":
      raise ValueError("bad pair")
    return types.SimpleNamespace(num_frames=1, frames_per_second=1.0)

  args = types.SimpleNamespace(out_dir=str(tmp_path / "out"), root=str(tmp_path),
                               filelist=str(filelist), skip_existing=False, quiet=True,
                               overwrite=False)
  # Planning takes this process's share; the inputs do not exist, so each pair is a failure.
  pairs, failures, skipped = sample.plan_filelist(args, (1, 2))
  assert (pairs, skipped) == ([], 0)
  assert [line.split(":")[0] for line in failures] == ["line 2", "line 4"]

  out = tmp_path / "out"
  def planned(numbers):
    return ([(n, tmp_path / f"v{n - 1}.mp4", tmp_path / f"a{n - 1}.wav", out / f"{n}.mp4")
             for n in numbers], [], 0)
  assert sample.run_filelist(args, planned([2, 4]), run_pair, (1, 2)) == 1
  assert seen == ["a1.wav", "a3.wav"]
  assert [p.name for p in out.iterdir()] == ["failures.1.txt"]
  text = (out / "failures.1.txt").read_text()
  assert text.startswith("line 4: ") and "bad pair" in text
  seen.clear()
  assert sample.run_filelist(args, planned([1, 3, 5]), run_pair, (0, 2)) == 0
  assert seen == ["a0.wav", "a2.wav", "a4.wav"]
  assert (out / "failures.0.txt").read_text() == ""


@pytest.mark.parametrize("flags, message", [
    (["--sampler", "dpm"], "--sampler must be one of ddim, ddpm, dpmpp_2m, unipc"),
    (["--ddpm", "--sampler", "unipc"], "contradicts --sampler unipc"),
])
def test_sample_cli_sampler_usage_errors(tmp_path, capsys, flags, message):
  with pytest.raises(SystemExit) as exit_info:
    sample.main(["--checkpoint", str(tmp_path / "none"), "--video", "v.mp4", "--audio", "a.wav",
                 "--out", str(tmp_path / "o.mp4"), *flags])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
  assert list(tmp_path.iterdir()) == []


def test_sample_cli_sampler_reaches_the_sampler(tiny_checkpoint, tmp_path, capsys):
  # Inputs are checked before the model loads, so the run needs real (short) inputs.
  clip = face_clip(3, 8)
  video = write_face_video(tmp_path / "face.mp4", clip)
  speech = write_wav(tmp_path / "speech.wav", clip.wav)
  height, width = clip.full_frames.shape[1:3]
  code = sample.main(["--checkpoint", tiny_checkpoint, "--video", str(video),
                      "--audio", str(speech), "--out", str(tmp_path / "o.mp4"),
                      "--crop", "box", f"0,0,{width},{height}",
                      "--sampler", "unipc", "--respacing", "ddim5", "--batch_size", "2"])
  err = capsys.readouterr().err
  assert code == 0 and (tmp_path / "o.mp4").is_file(), err
  for setting in ("'sampler': 'unipc'", "'respacing': 'ddim5'", "'batch_size': 2",
                  "'devices': 8", "'frames_per_call': 16"):
    assert setting in err
