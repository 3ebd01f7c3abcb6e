"""The training loop: data, sharded state, jitted step, checkpoints, logs and samples."""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from diff2lip_jax.diffusion import create_diffusion
from diff2lip_jax.models import create_model, init_params
from diff2lip_jax.training import checkpointing, data, reporting, sharding
from diff2lip_jax.training.state import create_train_state, inference_params
from diff2lip_jax.training.step import make_train_step


class NonFiniteError(RuntimeError):
  """Too many consecutive steps with a non-finite loss or gradient."""


def check_nonfinite(metrics: dict, config: ml_collections.ConfigDict, step: int,
                    workdir: str) -> None:
  """Stops the run once more than ``train.max_nonfinite_streak`` updates in a row were skipped."""
  streak = int(metrics["nonfinite_streak"])
  if streak > int(config.train.max_nonfinite_streak):
    raise NonFiniteError(
        f"{streak} consecutive steps had a non-finite loss or gradient (step {step}); lower "
        "optimizer.lr, check the data, or use float32 (--config.model.dtype=float32). The last "
        f"good checkpoint is in {checkpointing.checkpoint_dir(workdir)}")


def frozen_networks(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
  """Loads the frozen expert nets the loss weights ask for: ``(apply_fns, variables)``.

  A term whose weights file is not configured is switched off with a warning, so the
  default configs run anywhere.
  """
  fns, variables = {}, {}
  if config.loss.sync:
    if config.syncnet.checkpoint:
      from diff2lip_jax.models.syncnet import SyncNetColor
      from diff2lip_jax.syncnet.expert import load_syncnet_expert
      variables["syncnet"] = load_syncnet_expert(config.syncnet.checkpoint)
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


def _discriminator(config: ml_collections.ConfigDict, rng: jax.Array):
  if not config.loss.adversarial:
    return None, None
  from diff2lip_jax.models import discriminator as disc_lib
  disc = config.discriminator
  model = disc_lib.SequenceDiscriminator(nframes=int(config.model.nframes),
                                         base_features=int(disc.width),
                                         num_downsamples=int(disc.depth))
  size, f = int(config.model.image_size), int(config.model.nframes)
  params = model.init(rng, jnp.zeros((1, f, size // 2, size, 3)))["params"]
  return model, params


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop: Any = None,
                       max_steps: int | None = None) -> Any:
  """Trains until ``config.train.num_steps`` (or ``max_steps`` more steps, for tests).

  Returns the final :class:`TrainState`.
  """
  os.makedirs(workdir, exist_ok=True)
  config = config.copy_and_resolve_references()
  train_shards, eval_shards = data.resolve_shards(config, workdir)
  model = create_model(config.model)
  train_diffusion = create_diffusion(config.diffusion, timestep_respacing="")
  mesh = sharding.create_mesh(config)
  sharding.check_batch_divisible(int(config.train.batch_size), mesh)

  rng = jax.random.PRNGKey(int(config.train.seed))
  init_rng, disc_rng, state_rng = jax.random.split(rng, 3)
  disc_model, _ = _discriminator(config, disc_rng)

  def make_state():
    params = init_params(model, config.model, init_rng)
    disc_params = _discriminator(config, disc_rng)[1] if disc_model is not None else None
    return create_train_state(state_rng, params, config, disc_params)

  abstract = jax.eval_shape(make_state)
  state_sharding = sharding.state_shardings(abstract, mesh)
  state = jax.jit(make_state, out_shardings=state_sharding)()

  iterator = data.train_iterator(config, train_shards)
  manager = checkpointing.create_manager(workdir, config)
  step, restored = checkpointing.restore_latest(
      manager, checkpointing.abstract_with_shardings(state, state_sharding), iterator)
  if restored is not None:
    state = restored
    logging.info("resumed from step %d in %s", step, checkpointing.checkpoint_dir(workdir))

  fns, frozen = frozen_networks(config)
  train_step = make_train_step(model, train_diffusion, config,
                               syncnet_apply=fns.get("syncnet"), lpips_apply=fns.get("lpips"),
                               discriminator=disc_model)
  frozen = jax.device_put(frozen, sharding.replicated(mesh))
  step_fn = jax.jit(train_step, in_shardings=(state_sharding, None, None),
                    out_shardings=(state_sharding, None), donate_argnums=(0,))

  writer = samples.RunLogger(workdir, config, model, eval_shards or train_shards)
  start_step = int(state.step)
  end_step = int(config.train.num_steps)
  if max_steps is not None:
    end_step = min(end_step, start_step + max_steps)
  windows_per_step = int(config.train.batch_size)
  frames_per_window = int(config.model.nframes)
  last_log_time, last_log_step = time.time(), start_step
  metrics = None
  for step in range(start_step, end_step):
    batch = sharding.global_batch(next(iterator), mesh)
    state, metrics = step_fn(state, batch, frozen)
    done = step + 1
    check_nonfinite(metrics, config, done, workdir)
    if done % int(config.train.log_every) == 0 or done == end_step:
      now = time.time()
      rate = (done - last_log_step) / max(now - last_log_time, 1e-9)
      writer.scalars(done, jax.device_get(metrics), steps_per_s=rate,
                     samples_per_s=rate * windows_per_step * frames_per_window,
                     skipped_records=iterator.skipped_records)
      last_log_time, last_log_step = now, done
    stopping = stop is not None and stop.requested
    if done % int(config.train.checkpoint_every) == 0 or done == end_step or stopping:
      checkpointing.save(manager, done, state, inference_params(state, config), iterator, config)
    if done % int(config.train.sample_every) == 0 and jax.process_index() == 0:
      writer.samples(done, inference_params(state, config))
    if stopping:
      logging.warning("stopped at step %d after SIGTERM; re-run the same command to resume",
                      done)
      break
  else:
    if jax.process_index() == 0 and metrics is not None and end_step == int(config.train.num_steps):
      writer.samples(end_step, inference_params(state, config), demo_video=True)
  manager.close()
  writer.close()
  return state
