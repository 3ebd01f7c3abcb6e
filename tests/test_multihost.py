"""Multi-host training on one machine: the real CLI on 2 processes x 4 CPU devices (gloo
collectives), started by ``launch/local.py``; plus the host-count-independent data stream.

All runs share one compilation cache, so only the first run of each topology compiles.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import released
from data_pipelines import input_pipeline, synthetic
from diff2lip_jax import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "launch" / "local.py"
RUN_LIMIT_S = 840  # one launched run, compile included (the machine may be busy)
STEPS = 4
TINY = [f"--config.train.num_steps={STEPS}", "--config.train.batch_size=8",
        "--config.train.checkpoint_every=2", "--config.train.log_every=1",
        "--config.train.sample_every=1000", "--config.model.channel_mult=1,2",
        "--config.model.attention_resolutions=-1", "--config.data.synthetic_clips=16",
        "--config.data.synthetic_eval_clips=2", "--config.data.min_frames=20",
        "--config.data.max_frames=24", "--config.optimizer.warmup_steps=0",
        "--config.train.demo_video_frames=8", "--config.train.sample_respacing=ddim2",
        "--config.sampling.batch_size=8"]
STATE_FIELDS = ("params", "opt_state", "ema", "rng", "step")
# Each test below launches up to 3 runs (the fixture's run counts toward the first test).
LONG = pytest.mark.timeout(4 * RUN_LIMIT_S)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return tmp_path_factory.mktemp("jax_cache")


def _env(cache_dir, devices: int | None = None) -> dict[str, str]:
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", XLA_FLAGS="")
  if devices:  # a single process with this many CPU devices
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  return env


def _train(workdir, *extra) -> list[str]:
  return [sys.executable, "-m", "diff2lip_jax.train", "--config",
          str(REPO / "configs/synthetic.py"), "--workdir", str(workdir), *TINY, *extra]


def _launch(workdir, cache_dir, *extra) -> subprocess.Popen:
  command = [sys.executable, str(LAUNCHER), "--num_processes", "2", "--cpu_devices", "4",
             "--timeout", str(RUN_LIMIT_S), "--", *_train(workdir, *extra)]
  return subprocess.Popen(command, env=_env(cache_dir), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, seen: list[str]) -> tuple[int, str]:
  try:
    rest, _ = proc.communicate(timeout=RUN_LIMIT_S + 60)
  finally:
    if proc.poll() is None:
      proc.kill()
  return proc.returncode, "".join(seen) + rest


def _run(workdir, cache_dir, *extra) -> str:
  code, output = _finish(_launch(workdir, cache_dir, *extra), [])
  assert code == 0, output[-4000:]
  return output


def _signal_after(proc: subprocess.Popen, text: str, process: int, sig: int) -> list[str]:
  """Reads the launcher's output until ``text``, then sends ``sig`` to training process
  ``process`` (its pid comes from the launcher's first lines). Returns the lines read."""
  pids, seen, deadline = {}, [], time.time() + RUN_LIMIT_S
  for line in proc.stdout:
    seen.append(line)
    if line.startswith("[launch] process ") and ": pid " in line:
      index, pid = line[len("[launch] process "):].split(": pid ")
      pids[int(index)] = int(pid)
    if text in line or time.time() > deadline:
      os.kill(pids[process], sig)
      break
  return seen


def _final_state(workdir):
  with checkpoints.open_manager(os.path.join(workdir, "checkpoints")) as manager:
    assert manager.latest_step() == STEPS
    target = checkpoints.local_target(checkpoints.saved_shapes(manager, STEPS, "state"))
    return checkpoints.restore(manager, STEPS, {"state": target})["state"]


def _max_diff(a, b) -> float:
  import jax
  diffs = jax.tree_util.tree_map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) -
                                                                   np.asarray(y, np.float64)))),
                                 a, b)
  return max(jax.tree_util.tree_leaves(diffs))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache):
  """A whole 2 x 4 run: ``(workdir, console output, final state)``."""
  workdir = tmp_path_factory.mktemp("mh") / "uninterrupted"
  output = _run(workdir, cache)
  return workdir, output, _final_state(workdir)


@LONG
def test_two_process_run_ends_cleanly_and_writes_outputs_once(uninterrupted):
  workdir, output, state = uninterrupted
  assert f"[0] trained {STEPS} steps ({STEPS}/{STEPS})" in output, output[-3000:]
  assert "[1] trained" not in output  # the summary, like every output file, comes from process 0
  assert "[launch] exit status 0" in output
  assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
  samples = sorted(p.name for p in (workdir / "samples").iterdir())
  assert samples == [f"demo_{STEPS:07d}.mp4", f"grid_{STEPS:07d}.png"], samples
  assert int(state["step"]) == STEPS


@LONG
def test_sigkill_of_one_process_then_restart_is_bit_identical(uninterrupted, cache, tmp_path):
  _, _, want = uninterrupted
  workdir = tmp_path / "killed"
  proc = _launch(workdir, cache)
  seen = _signal_after(proc, f"[0] step 3/{STEPS}", process=1, sig=signal.SIGKILL)
  code, output = _finish(proc, seen)
  # Which process the launcher sees fail first (the killed one, or its peer whose next
  # collective or shutdown barrier fails) is a race; the run as a whole must fail.
  assert code != 0 and "[launch] exit status 0" not in output, output[-4000:]
  _run(workdir, cache)
  got = _final_state(workdir)
  for name in STATE_FIELDS:
    assert _max_diff(want[name], got[name]) == 0.0, name


@pytest.mark.xfail(run=False, reason=(
    "known failure (issue 10 closing note): after SIGTERM to one process, process 0 saves and "
    "reaches jax.distributed's shutdown barrier but process 1 does not arrive before its "
    "deadline on the loaded 2-core CI machine, so both abort (exit 134); not yet fixed"))
@LONG
def test_sigterm_to_one_process_stops_all_at_one_step_then_resumes(uninterrupted, cache,
                                                                   tmp_path):
  """Both processes exit 0 after saving the same step (a collective save: it commits only when
  every process wrote its part), and the resumed run equals the uninterrupted one. The same
  checkpoint resumed by one process with 8 devices continues the same data stream."""
  _, _, want = uninterrupted
  workdir = tmp_path / "termed"
  proc = _launch(workdir, cache)
  seen = _signal_after(proc, f"[0] step 2/{STEPS}", process=1, sig=signal.SIGTERM)
  code, output = _finish(proc, seen)
  assert code == 0, output[-4000:]
  assert "[0] stopped at step" in output and "[launch] exit status 0" in output
  stopped = int(output.split("[0] stopped at step ")[1].split("/")[0])
  with checkpoints.open_manager(workdir / "checkpoints") as manager:
    assert manager.latest_step() == stopped < STEPS
  one_host = tmp_path / "one_host"
  shutil.copytree(workdir, one_host)
  _run(workdir, cache)
  got = _final_state(workdir)
  for name in STATE_FIELDS:
    assert _max_diff(want[name], got[name]) == 0.0, name

  # Topology change 2 x 4 -> 1 x 8: state restored onto the new mesh, same global batches.
  subprocess.run(_train(one_host), env=_env(cache, devices=8), cwd=REPO, check=True,
                 capture_output=True, timeout=RUN_LIMIT_S)
  moved = _final_state(one_host)
  assert int(moved["step"]) == STEPS
  # Same data and mesh shape; only the cross-process reductions may round differently.
  assert _max_diff(want["params"], moved["params"]) < 1e-4


def _one_process(argv, cache_dir, timeout=240) -> subprocess.CompletedProcess:
  return subprocess.run(argv, env=_env(cache_dir), cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def test_different_configs_and_missing_coordinator_fail_in_bounded_time(cache, tmp_path):
  sys.path.insert(0, str(REPO / "launch"))
  try:
    import local  # pylint: disable=import-outside-toplevel  (launch/local.py)
  finally:
    sys.path.remove(str(REPO / "launch"))
  port = local.free_port()
  env = local.process_env(cpu_devices=2)
  procs = [subprocess.Popen(local.process_command(_train(tmp_path / "w", *extra), i, 2, port),
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
           for i, extra in enumerate([[], ["--config.optimizer.lr=0.5"]])]
  try:
    outputs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 1, output[-3000:]
    assert "error: the processes were started with different config and --workdir" in output

  started = time.time()
  lonely = _one_process(_train(tmp_path / "lonely") + [
      "--distributed", "--coordinator_address", f"127.0.0.1:{local.free_port()}",
      "--num_processes", "2", "--process_id", "1", "--distributed_timeout", "5"], cache)
  assert lonely.returncode == 1, lonely.stderr[-3000:]
  assert "could not join the run at coordinator 127.0.0.1:" in lonely.stderr
  assert "Traceback" not in lonely.stderr
  assert time.time() - started < 200


def test_global_batches_do_not_depend_on_the_host_count(tmp_path):
  """Host h's batch is rows [h*B, (h+1)*B) of the 1-host global batch; ``start_batch``
  resumes any host count at the same place of the stream."""
  synthetic.write_synthetic_shards(tmp_path, 6, 0, 20, 24, 32)
  config = released.get_config().data.pipeline
  config.update(image_size=32, host_prefetch=0, num_frames=5)
  keys = ("clip_index", "frame_index", "ref_frame_index", "image", "mel")

  def batches(hosts, start=0, count=4):
    iterators = [input_pipeline.create_train_iterator(
        config, tmp_path, seed=3, batch_size=8 // hosts, shard_index=h, shard_count=hosts,
        start_batch=start) for h in range(hosts)]
    out = []
    for _ in range(count):
      parts = [next(it) for it in iterators]
      out.append({k: np.concatenate([p[k] for p in parts]) for k in keys})
    return out

  one = batches(1)
  for hosts in (2, 4):
    for got, want in zip(batches(hosts), one):
      for key in keys:
        np.testing.assert_array_equal(got[key], want[key])
  for got, want in zip(batches(2, start=2, count=2), one[2:]):
    for key in keys:
      np.testing.assert_array_equal(got[key], want[key])
  assert len({int(i) for b in one[:1] for i in b["clip_index"]}) == 6  # a permutation per epoch
