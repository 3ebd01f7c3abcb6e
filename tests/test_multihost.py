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
ROUNDING = 1e-4  # state differences from reductions ordered differently on another mesh
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
def test_preempted_then_killed_run_restarts_bit_identical(uninterrupted, cache, tmp_path):
  """SIGTERM to one process (a preemption notice): both processes save the same step (a
  collective save, committed only when every process wrote its part) and exit 0. The
  restarted run then loses process 1 to a SIGKILL after a checkpoint, which fails the run.
  Restarted once more, it ends bit-identical to the uninterrupted run."""
  _, _, want = uninterrupted
  workdir = tmp_path / "preempted"
  proc = _launch(workdir, cache)
  seen = _signal_after(proc, f"[0] step 1/{STEPS}", process=1, sig=signal.SIGTERM)
  code, output = _finish(proc, seen)
  assert code == 0, output[-4000:]
  assert "[0] stopped at step" in output and "[launch] exit status 0" in output
  stopped = int(output.split("[0] stopped at step ")[1].split("/")[0])
  assert "[1] stopped at step" not in output  # the summary comes from process 0 only
  with checkpoints.open_manager(workdir / "checkpoints") as manager:
    assert manager.latest_step() == stopped < STEPS - 1

  proc = _launch(workdir, cache)
  seen = _signal_after(proc, f"[0] step {STEPS - 1}/{STEPS}", process=1, sig=signal.SIGKILL)
  code, output = _finish(proc, seen)
  # Which process the launcher sees fail first (the killed one, or its peer whose next
  # collective or shutdown barrier fails) is a race; the run as a whole must fail.
  assert code != 0 and "[launch] exit status 0" not in output, output[-4000:]
  _run(workdir, cache)
  got = _final_state(workdir)
  for name in STATE_FIELDS:
    assert _max_diff(want[name], got[name]) == 0.0, name


def _rewind(source, target, step: int) -> None:
  """``target``: a copy of the run in ``source`` as if it had stopped after saving ``step``."""
  shutil.copytree(source, target)
  for saved in (target / "checkpoints").iterdir():
    if saved.name.isdigit() and int(saved.name) > step:
      shutil.rmtree(saved)


def _single_process(workdir, cache_dir, devices: int, *extra) -> None:
  done = subprocess.run(_train(workdir, *extra), env=_env(cache_dir, devices=devices), cwd=REPO,
                        capture_output=True, text=True, timeout=RUN_LIMIT_S)
  assert done.returncode == 0, done.stderr[-4000:]


@LONG
def test_checkpoints_resume_on_other_topologies(uninterrupted, cache, tmp_path):
  """2 x 4 -> 1 x 8 -> 1 x 1: state restored onto each new mesh, and the data stream goes on
  where it stopped (the global batches do not depend on the host count), so the runs end
  where the uninterrupted 2 x 4 run ended up to the rounding of differently ordered
  reductions (different data or a repeated batch would move the parameters by ~lr)."""
  source, _, want = uninterrupted
  one_host = tmp_path / "one_host"
  _rewind(source, one_host, 2)  # saved by 2 processes x 4 devices
  _single_process(one_host, cache, 8, "--config.train.checkpoint_every=1")
  moved = _final_state(one_host)
  assert int(moved["step"]) == STEPS
  single = tmp_path / "single"
  _rewind(one_host, single, STEPS - 1)  # saved by 1 process x 8 devices
  _single_process(single, cache, 1)
  alone = _final_state(single)
  for got in (moved, alone):
    for name in ("params", "ema", "opt_state"):  # measured: <= 5e-5 after 1-2 steps
      assert _max_diff(want[name], got[name]) < ROUNDING, name
    assert _max_diff(want["rng"], got["rng"]) == 0.0
  # The check has teeth: two steps of updates move the parameters 10x further than that.
  with checkpoints.open_manager(source / "checkpoints") as manager:
    target = checkpoints.local_target(checkpoints.saved_shapes(manager, 2, "state"))
    earlier = checkpoints.restore(manager, 2, {"state": target})["state"]
  assert _max_diff(want["params"], earlier["params"]) > 10 * ROUNDING


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
