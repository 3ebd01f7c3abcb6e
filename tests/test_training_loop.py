"""Trainer behaviour: sharded steps equal single-device steps; exact resume after SIGTERM or
SIGKILL (including the data iterator); config overrides from the command line."""
import io
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from diff2lip_jax import checkpoints
from diff2lip_jax.training import console, sharding
from diff2lip_jax.training.periodic import Periodic
from diff2lip_jax.training.loop import NonFiniteError, check_nonfinite
from diff2lip_jax.training.step import make_train_step
from tests.training_utils import model_and_state, random_batch, tiny_config, tree_max_abs_diff

REPO = pathlib.Path(__file__).resolve().parents[1]


def _one_sharded_step(devices, fsdp):
  config = tiny_config(batch_size=8)
  config.model.nframes = 1
  # Attention at 16x16: on CPU it maps over the (sharded) batch, which must not change results.
  config.model.attention_resolutions = "16"
  config.mesh.fsdp = fsdp
  # Adam's first step is lr * sign(g): a small lr keeps reduction-order noise in tiny
  # gradients from dominating; the gradients themselves are compared through Adam's mu.
  config.optimizer.lr = 1e-5
  # ... and with Adam's eps above that noise (~1e-9 here) an element whose gradient is ~0
  # moves by lr * g / (|g| + eps), not by +-lr on the sign of rounding noise.
  config.optimizer.eps = 1e-6
  model, diffusion, state = model_and_state(config)
  mesh = sharding.create_mesh(config, devices)
  shardings = sharding.state_shardings(jax.eval_shape(lambda: state), mesh, min_size=1024)
  state = jax.device_put(state, shardings)
  step = jax.jit(make_train_step(model, diffusion, config),
                 in_shardings=(shardings, None, None), out_shardings=(shardings, None))
  new, _ = step(state, sharding.global_batch(random_batch(config, 8), mesh), {})
  if fsdp > 1:  # the fsdp variant really splits parameters
    specs = [s.spec for s in jax.tree_util.tree_leaves(shardings.params)]
    assert any("fsdp" in tuple(spec) for spec in specs)
  return jax.device_get(new)


@pytest.mark.slow
def test_eight_device_data_and_fsdp_steps_match_one_device():
  assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
  single = _one_sharded_step(jax.devices()[:1], 1)
  for fsdp in (1, 4):
    multi = _one_sharded_step(jax.devices(), fsdp)
    for name in ("params", "ema"):
      diff = tree_max_abs_diff(getattr(single, name), getattr(multi, name))
      assert diff < 2e-6, (fsdp, name, diff)
    mu_single = optax.tree_utils.tree_get(single.opt_state, "mu")  # Adam's first moment
    mu_multi = optax.tree_utils.tree_get(multi.opt_state, "mu")
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-8),
                           mu_single, mu_multi)


def test_param_spec_picks_the_largest_divisible_axis():
  assert sharding.param_spec((3, 3, 64, 128), 4, 1) == jax.sharding.PartitionSpec(
      None, None, None, "fsdp")
  assert sharding.param_spec((3, 3, 6, 10), 4, 1) == jax.sharding.PartitionSpec()
  assert sharding.param_spec((128,), 4, 1024) == jax.sharding.PartitionSpec()


def test_too_many_nonfinite_steps_stop_with_a_clear_message(tmp_path):
  config = tiny_config()
  config.train.max_nonfinite_streak = 2
  check_nonfinite({"nonfinite_streak": 2}, config, 10, str(tmp_path))
  with pytest.raises(NonFiniteError, match="3 consecutive steps"):
    check_nonfinite({"nonfinite_streak": 3}, config, 11, str(tmp_path))


def test_periodic_fires_every_n_steps_and_on_the_last():
  every3 = Periodic(3, last_step=10)
  assert [s for s in range(1, 11) if every3(s)] == [3, 6, 9, 10]
  assert [s for s in range(1, 11) if Periodic(0, 10)(s)] == [10]
  assert [s for s in range(1, 13) if Periodic(5, 10, on_last=False)(s)] == [5]


class _Stream(io.StringIO):
  def __init__(self, tty):
    super().__init__()
    self.tty = tty

  def isatty(self):
    return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_prints_one_line_per_interval_and_a_summary(tty, monkeypatch):
  clock = iter([0.0, 10.0, 30.0, 40.0])  # start, first log, second log, elapsed
  monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))
  stream = _Stream(tty)
  progress = console.Progress(total=100, start=0, stream=stream)
  for step in range(1, 11):
    progress.advance(step)
  line = progress.log(10, {"loss": 0.123456, "mse": 1e-5, "lr": 1e-3}, ["loss", "mse", "sync"],
                      progress.rate(10), extra="9.5 frames/s")
  assert line == ("step 10/100 (10%) loss 0.1235 mse 1.000e-05 | 1.00 steps/s 9.5 frames/s "
                  "ETA 1m30s")
  progress.log(30, {"loss": 0.1}, ["loss"], progress.rate(30))
  progress.close()
  lines = [l.strip("\r") for l in stream.getvalue().splitlines() if l.startswith("step")]
  assert len([l for l in lines if "ETA" in l]) == 2, stream.getvalue()
  assert ("%|" in stream.getvalue()) == tty  # the tqdm bar, on a terminal only
  assert console.format_duration(progress.elapsed()) == "40s"
  assert console.format_duration(3725) == "1h02m"
  out = io.StringIO()
  console.print_summary("done", [("checkpoint", "/w/checkpoints"), ("tensorboard", "x")],
                        "python -m next", stream=out)
  assert out.getvalue() == ("done\n  checkpoint:  /w/checkpoints\n  tensorboard: x\n"
                            "next: python -m next\n")


def test_help_explains_the_flags_and_lists_the_config_fields():
  out = subprocess.run([sys.executable, "-m", "diff2lip_jax.train", "--help"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
  assert out.returncode == 0, out.stderr
  for text in ("--config FILE", "--workdir DIR", "--distributed", "--coordinator_address",
               "--num_processes", "--process_id", "DIFF2LIP_DISTRIBUTED=1",
               "--config.<field>=<value>", "resumes from the latest complete checkpoint",
               "train.num_steps = 500000", "data.pipeline.host_prefetch = 2"):
    assert text in out.stdout, text
  # After --config, the listing shows that file's values.
  out = subprocess.run([sys.executable, "-m", "diff2lip_jax.train", "--config",
                        "configs/synthetic.py", "--help"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
  assert "train.num_steps = 1500" in out.stdout and "model.image_size = 32" in out.stdout


def test_bad_command_lines_give_one_error_line():
  base = [sys.executable, "-m", "diff2lip_jax.train", "--config", "configs/synthetic.py",
          "--workdir", "/nonexistent/never-created"]
  cases = [(["--config.train.num_step=5"], "did you mean 'train.num_steps'"),
           (["--config.train.batch_size=two"], "expected int"),
           (["--config.train.batch_size"], "needs a value")]
  for extra, message in cases:
    out = subprocess.run(base + extra, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2, (extra, out.stderr)
    assert out.stderr.startswith("error: ") and message in out.stderr, (extra, out.stderr)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not pathlib.Path("/nonexistent/never-created").exists()


# ---- exact resume (subprocesses, so a process can really be killed) ----------------------

OVERRIDES = ["--config.train.num_steps=6", "--config.train.batch_size=2",
             "--config.train.checkpoint_every=2", "--config.train.log_every=1",
             "--config.train.sample_every=1000", "--config.model.image_size=32",
             "--config.model.channel_mult=1,2", "--config.model.attention_resolutions=-1",
             "--config.data.synthetic_clips=8", "--config.data.synthetic_eval_clips=0",
             "--config.data.min_frames=20", "--config.data.max_frames=24",
             "--config.data.pipeline.image_size=32", "--config.optimizer.warmup_steps=0"]


def _train_cmd(workdir, async_checkpointing):
  return [sys.executable, "-m", "diff2lip_jax.train", "--config",
          str(REPO / "configs/synthetic.py"), "--workdir", str(workdir)] + OVERRIDES + [
              f"--config.train.async_checkpointing={async_checkpointing}"]


def _env(cache_dir):
  env = dict(os.environ, XLA_FLAGS="", JAX_COMPILATION_CACHE_DIR=str(cache_dir),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return env


def _final_state(workdir):
  with checkpoints.open_manager(os.path.join(workdir, "checkpoints")) as manager:
    assert manager.latest_step() == 6
    target = checkpoints.local_target(checkpoints.saved_shapes(manager, 6, "state"))
    return checkpoints.restore(manager, 6, {"state": target})["state"]


def _start_and_signal(workdir, cache, sig, after_step):
  proc = subprocess.Popen(_train_cmd(workdir, async_checkpointing=True), env=_env(cache),
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 600
  for line in proc.stdout:
    if line.startswith(f"step {after_step}/") or time.time() > deadline:
      proc.send_signal(sig)
      break
  output = proc.stdout.read()
  return proc.wait(timeout=600), output


@pytest.mark.slow
def test_sigterm_and_sigkill_resume_bit_identically(tmp_path):
  """Interrupted runs save asynchronously, the reference synchronously: both give the same
  bits, and a resumed run equals the uninterrupted one."""
  cache = tmp_path / "jax_cache"
  reference = tmp_path / "uninterrupted"
  done = subprocess.run(_train_cmd(reference, async_checkpointing=False), env=_env(cache),
                        cwd=REPO, check=True, capture_output=True, text=True, timeout=900)
  # The console: progress lines and the final summary, no library INFO lines.
  assert "step 6/6 (100%) loss " in done.stdout and "ETA" in done.stdout
  assert "trained 6 steps (6/6)" in done.stdout
  assert f"lipsync_score --checkpoint {reference}" in done.stdout
  assert "orbax" not in (done.stdout + done.stderr).lower(), done.stderr
  want = _final_state(reference)

  # SIGTERM right after step 3: the trainer saves step 3 and exits cleanly.
  termed = tmp_path / "sigterm"
  code, output = _start_and_signal(termed, cache, signal.SIGTERM, after_step=3)
  assert code == 0, output
  assert "stopped at step" in output and "re-run the same command" in output
  steps = sorted(int(p.name) for p in (termed / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] in (3, 4), steps
  # SIGKILL after step 3 (checkpoint 2 is complete; maybe one at 4 is being written).
  killed = tmp_path / "sigkill"
  code, _ = _start_and_signal(killed, cache, signal.SIGKILL, after_step=3)
  assert code == -signal.SIGKILL

  for workdir in (termed, killed):
    subprocess.run(_train_cmd(workdir, async_checkpointing=True), env=_env(cache), cwd=REPO,
                   check=True, capture_output=True, timeout=900)
    got = _final_state(workdir)
    for name in ("params", "opt_state", "ema", "rng", "step"):
      diff = tree_max_abs_diff(want[name], got[name])
      assert diff == 0.0, (workdir.name, name, diff)
