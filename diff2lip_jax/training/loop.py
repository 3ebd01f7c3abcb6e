"""The Diff2Lip training loop: data, sharded state, jitted step, checkpoints, logs and samples."""
from __future__ import annotations

import dataclasses
import glob
import logging
import os
import time
from typing import Any

import jax
import ml_collections

from diff2lip_jax import checkpoints
from diff2lip_jax.diffusion import create_diffusion
from diff2lip_jax.models import create_model, init_params
from diff2lip_jax.models import discriminator as disc_lib
from diff2lip_jax.training import console, data, multihost, reporting, sharding
from diff2lip_jax.training.periodic import Periodic
from diff2lip_jax.training.state import create_train_state, inference_params
from diff2lip_jax.training.step import make_train_step

# Terms of the progress line (loss terms only when weighted); TensorBoard gets every metric.
PROGRESS_KEYS = ("loss", "mse", "vb", "l1", "sync", "lpips", "adversarial", "disc_loss", "lr")


class NonFiniteError(FloatingPointError):
  """Too many consecutive steps with a non-finite loss or gradient."""


def check_nonfinite(metrics: dict, config: ml_collections.ConfigDict, step: int,
                    workdir: str) -> None:
  """Stops the run once more than ``train.max_nonfinite_streak`` updates in a row were skipped."""
  streak = int(metrics["nonfinite_streak"])
  if streak > int(config.train.max_nonfinite_streak):
    raise NonFiniteError(
        f"{streak} consecutive steps had a non-finite loss or gradient (step {step}); lower "
        "optimizer.lr, check the data, or use float32 (--config.model.dtype=float32). The last "
        f"good checkpoint is in {checkpoints.checkpoint_dir(workdir)}")


def frozen_networks(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
  """Loads the frozen expert nets the loss weights ask for: ``(apply_fns, variables)``.

  A term whose weights file is not configured is switched off with a warning, so the
  default configs run anywhere.
  """
  fns, variables = {}, {}
  if config.loss.sync:
    if config.syncnet.checkpoint:
      from diff2lip_jax.models.syncnet import SyncNetColor
      variables["syncnet"] = checkpoints.load_syncnet_expert(config.syncnet.checkpoint)
      fns["syncnet"] = SyncNetColor().apply
    else:
      logging.warning("loss.sync=%s but syncnet.checkpoint is empty: sync loss off",
                      config.loss.sync)
  if config.loss.lpips:
    if config.lpips.backbone_weights and config.lpips.lin_weights:
      from diff2lip_jax.models import lpips
      from diff2lip_jax.porting import lpips as lpips_convert
      params = lpips_convert.load_lpips_params(config.lpips.backbone_weights,
                                               config.lpips.lin_weights, net=config.lpips.net)
      variables["lpips"] = {"params": params}
      fns["lpips"] = lpips.LPIPS(net=config.lpips.net).apply
    else:
      logging.warning("loss.lpips=%s but lpips weights are not set: LPIPS loss off",
                      config.loss.lpips)
  return fns, variables


def make_discriminator(config: ml_collections.ConfigDict) -> Any:
  """The ``SequenceDiscriminator`` of ``config.discriminator``, or None when the adversarial
  term is off. Its params: ``init_discriminator_params(rng, model, S // 2, S)``."""
  if not config.loss.adversarial:
    return None
  disc = config.discriminator
  return disc_lib.SequenceDiscriminator(nframes=int(config.model.nframes),
                                        base_features=int(disc.width),
                                        num_downsamples=int(disc.depth))


@dataclasses.dataclass
class Run:
  """Everything the loop works with, built by :func:`setup`."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  state: Any
  step_fn: Any
  frozen: Any
  iterator: Any
  manager: Any
  logger: reporting.RunLogger


def _initial_state(config: ml_collections.ConfigDict, model: Any, mesh: Any):
  """A fresh state created directly in its shardings: ``(state, shardings, discriminator)``."""
  init_rng, disc_rng, state_rng = jax.random.split(jax.random.PRNGKey(int(config.train.seed)), 3)
  disc_model = make_discriminator(config)
  size = int(config.model.image_size)

  def make_state():
    params = init_params(model, config.model, init_rng)
    disc_params = None if disc_model is None else disc_lib.init_discriminator_params(
        disc_rng, disc_model, size // 2, size)
    return create_train_state(state_rng, params, config, disc_params)

  shardings = sharding.state_shardings(jax.eval_shape(make_state), mesh)
  init = multihost.compile_together(jax.jit(make_state, out_shardings=shardings), name="init")
  return init(), shardings, disc_model


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Data, mesh, state (restored from the latest checkpoint if any) and the jitted step."""
  train_shards, eval_shards = data.resolve_shards(config, workdir)
  model = create_model(config.model)
  mesh = sharding.create_mesh(config)
  sharding.check_batch_divisible(int(config.train.batch_size), mesh)
  state, state_sharding, disc_model = _initial_state(config, model, mesh)
  manager = checkpoints.training_manager(workdir, config)
  # The state restores onto this mesh whatever topology saved it; the data position follows
  # from the step (one batch per step, the same global batches for any host count), so the
  # per-host iterator states saved with it are not needed to resume.
  step, restored = checkpoints.restore_training_state(manager, state, None)
  if restored is not None:
    state = restored
    logging.info("resumed from step %d in %s", step, checkpoints.checkpoint_dir(workdir))
  iterator = data.train_iterator(config, train_shards, start_step=int(step or 0))
  fns, frozen = frozen_networks(config)
  train_step = make_train_step(model, create_diffusion(config.diffusion, timestep_respacing=""),
                               config, syncnet_apply=fns.get("syncnet"),
                               lpips_apply=fns.get("lpips"), discriminator=disc_model)
  step_fn = jax.jit(train_step, in_shardings=(state_sharding, None, None),
                    out_shardings=(state_sharding, None), donate_argnums=(0,))
  logger = reporting.RunLogger(workdir, config, model, eval_shards or train_shards)
  return Run(config, workdir, mesh, state, step_fn,
             jax.device_put(frozen, sharding.replicated(mesh)), iterator, manager, logger)


def _log(run: Run, progress: console.Progress, step: int, metrics: dict) -> None:
  values = {k: float(v) for k, v in jax.device_get(metrics).items() if getattr(v, "ndim", 0) == 0}
  rate = progress.rate(step)
  frames_per_step = int(run.config.train.batch_size) * int(run.config.model.nframes)
  values.update(steps_per_s=rate, samples_per_s=rate * frames_per_step,
                skipped_records=float(run.iterator.skipped_records))
  console.write_scalars(run.logger.writer, "train", step, values)
  skipped = int(values["nonfinite_steps"])
  extra = f"{values['samples_per_s']:.1f} frames/s" + (f" skipped {skipped}" if skipped else "")
  weights = run.config.loss
  keys = [k for k in PROGRESS_KEYS if k not in weights or weights[k]]
  progress.log(step, values, keys, rate, extra=extra)


def _samples(run: Run, step: int, demo_video: bool = False) -> None:
  """Grid (and demo video) on process 0, from a process-local copy of the sampling params
  that every process helps to gather: a sampler over global arrays entered by process 0
  alone would hang a multi-host run."""
  params = multihost.host_local_copy(inference_params(run.state, run.config))
  if jax.process_index() == 0:
    run.logger.samples(step, params, demo_video=demo_video)
  # The others wait here rather than in a collective or exit's shutdown, which time out.
  multihost.barrier(f"samples {step}")


def run_steps(run: Run, end_step: int, stop: Any = None) -> tuple[int, bool]:
  """Steps from ``run.state.step`` to ``end_step``; returns ``(last step, stopped by SIGTERM)``."""
  config, start = run.config, int(run.state.step)
  train = config.train
  log_now = Periodic(train.log_every, end_step)
  save_now = Periodic(train.checkpoint_every, end_step)
  sample_now = Periodic(train.sample_every, int(train.num_steps), on_last=False)
  progress = console.Progress(int(train.num_steps), start, enabled=jax.process_index() == 0)
  done, stopping = start, False
  try:
    for done in range(start + 1, end_step + 1):
      batch = sharding.global_batch(next(run.iterator), run.mesh)
      if done == start + 1:  # all hosts start the first step together
        step_fn = multihost.compile_together(run.step_fn, run.state, batch, run.frozen,
                                             name="train step")
      run.state, metrics = step_fn(run.state, batch, run.frozen)
      check_nonfinite(metrics, config, done, run.workdir)
      progress.advance(done)
      if log_now(done):
        _log(run, progress, done, metrics)
      # Agreed by all processes: a SIGTERM that reached one host stops all at this step.
      stopping = multihost.any_process(stop is not None and stop.requested)
      if save_now(done) or stopping:
        checkpoints.save_training_state(run.manager, done, run.state,
                                        inference_params(run.state, config), run.iterator,
                                        config, wait=stopping)
      if sample_now(done):
        _samples(run, done)
      if stopping:
        break
  finally:
    progress.close()
  return done, stopping


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop: Any = None,
                       max_steps: int | None = None) -> Any:
  """Trains until ``config.train.num_steps`` (or ``max_steps`` more steps, for tests).

  ``stop.requested`` (set by SIGTERM) saves a checkpoint and returns early. Returns the final
  :class:`TrainState`.
  """
  started = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  config = config.copy_and_resolve_references()
  run = setup(config, workdir)
  start, num_steps = int(run.state.step), int(config.train.num_steps)
  end_step = num_steps if max_steps is None else min(num_steps, start + max_steps)
  try:
    done, stopped = run_steps(run, end_step, stop)
    if not stopped and done == num_steps > start:
      _samples(run, done, demo_video=int(config.train.demo_video_frames) > 0)
  finally:
    run.manager.close()  # waits for an async save still being written
    run.logger.close()
  if jax.process_index() == 0:
    print_summary(run, start, done, stopped, time.perf_counter() - started)
  return run.state


def print_summary(run: Run, start: int, done: int, stopped: bool, seconds: float) -> None:
  """Steps done, wall time, where the outputs are, and the command to run next."""
  config, workdir = run.config, os.path.abspath(run.workdir)
  total = int(config.train.num_steps)
  latest = run.manager.latest_step()
  newest = lambda pattern: sorted(glob.glob(os.path.join(workdir, "samples", pattern)))[-1:]
  samples = [os.path.basename(p) for p in newest("grid_*.png") + newest("demo_*.mp4")]
  if stopped:
    title = (f"stopped at step {done}/{total} after SIGTERM ({done - start} steps in "
             f"{console.format_duration(seconds)}); re-run the same command to resume")
  else:
    title = (f"trained {done - start} steps ({done}/{total}) in "
             f"{console.format_duration(seconds)}")
  rows = [("checkpoint", f"{checkpoints.checkpoint_dir(workdir)} (step {latest})"),
          ("samples", os.path.join(workdir, "samples") +
           (f" ({', '.join(samples)})" if samples else "")),
          ("tensorboard", f"tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")]
  if config.data.shards:
    command = (f"python -m diff2lip_jax.sample --checkpoint {workdir} --video FACE.mp4 "
               "--audio SPEECH.wav --out OUT.mp4")
  else:
    command = f"python -m diff2lip_jax.lipsync_score --checkpoint {workdir}"
  console.print_summary(title, rows, None if stopped else command)
