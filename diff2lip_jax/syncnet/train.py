"""Train Wav2Lip's SyncNet lip-sync expert in JAX, and load experts for the Diff2Lip trainer.

    python -m diff2lip_jax.train_syncnet --config configs/syncnet.py --workdir DIR
        [--config.data.shards=SHARDS] [--config.num_steps=N] [--config.a.b=value ...]

Without ``data.shards`` (or with ``data.synthetic=True``) a small synthetic dataset is written to
``DIR/synthetic_shards`` first, so the command runs anywhere. Training follows Wav2Lip's
``color_syncnet_train.py``: BCE of the cosine similarity between the audio and face embeddings
against the in-sync label (``cosine_loss``), BatchNorm in train mode, Adam (lr 1e-4). Accuracy
counts a pair as predicted in sync when its cosine similarity is > 0.5.

Workdir layout::

  DIR/checkpoints/<step>/{variables,opt,data,config}  Orbax CheckpointManager; resumed from
  DIR/expert/<step>/{variables,config}                the final expert (frozen use)
  DIR/tensorboard/                                   train/*, eval/* scalars
  DIR/synthetic_shards/                              only for synthetic runs

``variables`` is ``{"params", "batch_stats"}`` of ``SyncNetColor``. The face input is BGR (see
``model_inputs``), like the released ``lipsync_expert.pth``, so either expert can be used with
the same preprocessing: ``load_syncnet_expert(path)`` (``syncnet_expert``) reads both.
"""
from __future__ import annotations

import functools
import json
import logging as std_logging
import os
import pathlib
import time
from typing import Any, Iterable, Iterator

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec

from diff2lip_jax import config_utils
from diff2lip_jax.syncnet import data as syncnet_data
from diff2lip_jax.models.syncnet import SyncNetColor, cosine_loss, syncnet_face_input
from diff2lip_jax.syncnet.expert import export_expert, load_syncnet_expert, torch_default_init

DEVICE_KEYS = ("frames", "mel", "label")
# One module object: its bound ``apply`` is a static field of TrainState, compared by identity.
MODEL = SyncNetColor()


class TrainState(train_state.TrainState):
  batch_stats: Any


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam as torch.optim.Adam (optionally after global-norm clipping)."""
  return _optimizer(float(config.learning_rate), float(config.b1), float(config.b2),
                    float(config.eps), float(config.grad_clip_norm or 0.0))


@functools.lru_cache(maxsize=None)
def _optimizer(learning_rate: float, b1: float, b2: float, eps: float,
               clip: float) -> optax.GradientTransformation:
  # One object per setting: the optimizer is a static part of TrainState's tree, so equal
  # settings must give an equal object for jit to reuse its compiled step.
  adam = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  return optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam


def create_train_state(config: ml_collections.ConfigDict,
                       variables: dict | None = None) -> TrainState:
  """Step-0 state: ``variables`` (``{"params", "batch_stats"}``) or :func:`torch_default_init`
  of ``config.seed``, with the optimizer of ``config.optimizer``."""
  variables = variables if variables is not None else torch_default_init(config.seed)
  state = TrainState.create(apply_fn=MODEL.apply, params=variables["params"],
                            batch_stats=variables["batch_stats"],
                            tx=make_optimizer(config.optimizer))
  return state.replace(step=jnp.zeros((), jnp.int32))  # an array: one trace for every step


def model_inputs(batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Batch -> SyncNet inputs ``(mel [B, 80, 16, 1], face [B, 48, 96, 15])``.

  ``frames`` are RGB uint8 crops; ``syncnet_face_input`` rescales them to [0, 1], resizes to
  96x96, keeps the lower half and flips them to BGR: the released Wav2Lip expert was trained on
  cv2 (BGR) frames, and keeping its order makes our experts interchangeable with it.
  """
  frames = batch["frames"].astype(jnp.float32) / 255.0
  return batch["mel"].astype(jnp.float32)[..., None], syncnet_face_input(frames, "rgb")


def cosine_similarity(audio_emb: jax.Array, face_emb: jax.Array) -> jax.Array:
  """``[N]`` torch ``F.cosine_similarity`` (eps 1e-8 on each norm), the expert's sync score."""
  a = audio_emb / jnp.maximum(jnp.linalg.norm(audio_emb, axis=-1, keepdims=True), 1e-8)
  v = face_emb / jnp.maximum(jnp.linalg.norm(face_emb, axis=-1, keepdims=True), 1e-8)
  return jnp.sum(a * v, axis=-1)


def sync_metric_sums(audio_emb: jax.Array, face_emb: jax.Array,
                     labels: jax.Array) -> dict[str, jax.Array]:
  """Sums over a batch, to be pooled across batches by :func:`finalize_metrics`.

  A pair is predicted in sync when cos > 0.5; it is correct when that matches ``labels > 0.5``.
  """
  cos = cosine_similarity(audio_emb.astype(jnp.float32), face_emb.astype(jnp.float32))
  positive = (labels > 0.5).astype(jnp.float32)
  count = jnp.asarray(labels.shape[0], jnp.float32)
  return {"loss_sum": cosine_loss(audio_emb, face_emb, labels) * count,
          "correct": jnp.sum(((cos > 0.5).astype(jnp.float32) == positive).astype(jnp.float32)),
          "count": count,
          "cos_in_sync_sum": jnp.sum(cos * positive), "in_sync": jnp.sum(positive),
          "cos_off_sync_sum": jnp.sum(cos * (1 - positive)), "off_sync": jnp.sum(1 - positive)}


def finalize_metrics(sums: dict[str, Any]) -> dict[str, float]:
  """Pooled sums -> ``loss``, ``accuracy``, mean ``cos_in_sync`` / ``cos_off_sync`` (NaN: none)."""
  sums = {k: float(v) for k, v in sums.items()}
  ratio = lambda a, b: sums[a] / sums[b] if sums[b] else float("nan")
  return {"loss": ratio("loss_sum", "count"), "accuracy": ratio("correct", "count"),
          "cos_in_sync": ratio("cos_in_sync_sum", "in_sync"),
          "cos_off_sync": ratio("cos_off_sync_sum", "off_sync")}


def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
  """One Adam step on ``batch`` (frames, mel, label); BatchNorm statistics are updated.

  Returns the new state and metric sums (see :func:`sync_metric_sums`) plus ``grad_norm``.
  """
  mel, face = model_inputs(batch)
  labels = batch["label"].astype(jnp.float32)

  def loss_fn(params):
    (audio_emb, face_emb), updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, mel, face, train=True,
        mutable=["batch_stats"])
    return cosine_loss(audio_emb, face_emb, labels), (audio_emb, face_emb, updates)

  (_, (audio_emb, face_emb, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  state = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
  metrics = sync_metric_sums(audio_emb, face_emb, labels)
  metrics["grad_norm"] = optax.tree.norm(grads)
  return state, metrics


def eval_step(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """Metric sums of the expert in eval mode (BatchNorm running statistics)."""
  mel, face = model_inputs(batch)
  audio_emb, face_emb = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                                       mel, face, train=False)
  return sync_metric_sums(audio_emb, face_emb, batch["label"].astype(jnp.float32))


def evaluate(step_fn, state: TrainState, batches: Iterable[dict]) -> dict[str, float]:
  """Pools :func:`eval_step` sums over ``batches`` (already on device)."""
  total = None
  for batch in batches:
    sums = step_fn(state, batch)
    total = sums if total is None else jax.tree.map(jnp.add, total, sums)
  if total is None:
    raise ValueError("evaluation got no batches; raise data.num_eval_batches")
  return finalize_metrics(jax.device_get(total))


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_manager(directory: str | os.PathLike, max_to_keep: int | None = None
                       ) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.abspath(directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_handlers={"variables": ocp.StandardCheckpointHandler(),
                     "opt": ocp.StandardCheckpointHandler(),
                     "data": grain.checkpoint.CheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})


def _variables(state: TrainState) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def _config_json(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config_utils.config_to_json(config))


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState,
                    iterator: grain.DatasetIterator, config: ml_collections.ConfigDict) -> None:
  """Saves variables, optimizer state + step and the data iterator as step ``state.step``."""
  manager.save(int(state.step), args=ocp.args.Composite(
      variables=ocp.args.StandardSave(_variables(state)),
      opt=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
      data=grain.checkpoint.CheckpointSave(iterator),
      config=ocp.args.JsonSave(_config_json(config))))


def restore_checkpoint(manager: ocp.CheckpointManager, state: TrainState,
                       iterator: grain.DatasetIterator, step: int | None = None) -> TrainState:
  """State (with ``state``'s structure and shardings) and iterator position of ``step`` (latest)."""
  step = manager.latest_step() if step is None else step
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  restored = manager.restore(step, args=ocp.args.Composite(
      variables=ocp.args.StandardRestore(abstract(_variables(state))),
      opt=ocp.args.StandardRestore(abstract({"step": state.step, "opt_state": state.opt_state})),
      data=grain.checkpoint.CheckpointRestore(iterator)))
  variables, opt = restored["variables"], restored["opt"]
  return state.replace(step=opt["step"], params=variables["params"],
                       batch_stats=variables["batch_stats"], opt_state=opt["opt_state"])


# ----------------------------------------------------------------------------- training loop

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike
                       ) -> dict[str, float]:
  """Trains (resuming from ``workdir``), evaluates, exports the expert; returns the last eval."""
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec("data"))  # batch split over all devices
  if config.data.num_epochs is not None:
    raise ValueError("config.num_steps sets the training length; leave data.num_epochs unset "
                     f"(got {config.data.num_epochs})")
  for name in ("batch_size", "eval_batch_size"):
    if config.data[name] % jax.device_count():
      raise ValueError(f"data.{name}={config.data[name]} must be a multiple of the "
                       f"{jax.device_count()} devices")
  per_host = lambda size: size // jax.process_count()
  (train_shards, train_records), (eval_shards, eval_records) = (
      syncnet_data.training_sources(config.data, workdir, config.seed))
  iterator = syncnet_data.create_iterator(config.data, train_shards, seed=config.seed,
                                          batch_size=per_host(config.data.batch_size),
                                          records=train_records)
  eval_data = config.data.copy_and_resolve_references()
  eval_data.update(shuffle=False, worker_count=0, host_prefetch=0)

  def to_device(batch: dict) -> dict:
    return {k: jax.make_array_from_process_local_data(sharded, np.asarray(batch[k]))
            for k in DEVICE_KEYS}

  def eval_batches() -> Iterator[dict]:
    it = syncnet_data.create_iterator(eval_data, eval_shards, seed=config.data.eval_seed,
                                      batch_size=per_host(config.data.eval_batch_size),
                                      records=eval_records)
    for _ in range(config.data.num_eval_batches):
      yield to_device(next(it))

  initial = load_syncnet_expert(config.init_checkpoint) if config.init_checkpoint else None
  state = jax.device_put(create_train_state(config, initial), replicated)
  manager = checkpoint_manager(workdir / "checkpoints", config.max_checkpoints_to_keep)
  if manager.latest_step() is not None:
    state = restore_checkpoint(manager, state, iterator)
    logging.info("resumed from %s at step %d", manager.directory, int(state.step))
  p_train_step = jax.jit(train_step, in_shardings=(replicated, sharded),
                         out_shardings=(replicated, replicated), donate_argnums=0)
  p_eval_step = jax.jit(eval_step, in_shardings=(replicated, sharded), out_shardings=replicated)
  writer = SummaryWriter(str(workdir / "tensorboard")) if jax.process_index() == 0 else None
  if writer is not None:
    (workdir / "config.json").write_text(config_utils.config_to_json(config))

  def scalars(prefix: str, values: dict[str, float], step: int) -> None:
    if writer is not None:
      for name, value in values.items():
        writer.add_scalar(f"{prefix}/{name}", value, step)
      writer.flush()

  eval_metrics: dict[str, float] = {}
  pending, started, window_start = [], time.perf_counter(), int(state.step)
  step = int(state.step)
  while step < config.num_steps:
    state, metrics = p_train_step(state, to_device(next(iterator)))
    pending.append(metrics)
    step += 1
    last = step == config.num_steps
    if step % config.log_every == 0 or last:
      sums = jax.device_get(pending)
      train = finalize_metrics({k: sum(m[k] for m in sums) for k in sums[0] if k != "grad_norm"})
      train["grad_norm"] = float(np.mean([m["grad_norm"] for m in sums]))
      elapsed = time.perf_counter() - started
      train["steps_per_second"] = (step - window_start) / max(elapsed, 1e-9)
      train["skipped_records"] = float(iterator.skipped_records)
      scalars("train", train, step)
      logging.info("step %d/%d  loss %.4f  accuracy %.3f  cos in/off %.3f/%.3f  %.2f steps/s",
                   step, config.num_steps, train["loss"], train["accuracy"],
                   train["cos_in_sync"], train["cos_off_sync"], train["steps_per_second"])
      pending, started, window_start = [], time.perf_counter(), step
    if step % config.eval_every == 0 or last:
      eval_metrics = evaluate(p_eval_step, state, eval_batches())
      scalars("eval", eval_metrics, step)
      logging.info("eval at step %d: loss %.4f  accuracy %.3f  cos in/off %.3f/%.3f", step,
                   eval_metrics["loss"], eval_metrics["accuracy"], eval_metrics["cos_in_sync"],
                   eval_metrics["cos_off_sync"])
    if step % config.checkpoint_every == 0 or last:
      save_checkpoint(manager, state, iterator, config)
  manager.wait_until_finished()
  manager.close()
  if not eval_metrics:  # resumed a finished run: report the expert as it is
    eval_metrics = evaluate(p_eval_step, state, eval_batches())
  expert = export_expert(workdir / "expert", jax.device_get(_variables(state)), config,
                         int(state.step))
  logging.info("exported the expert to %s (load with load_syncnet_expert)", expert)
  if writer is not None:
    writer.close()
  return eval_metrics


class _ProjectInfoOnly(std_logging.Filter):
  """INFO lines of this project only: Orbax logs ~40 INFO lines per checkpoint save."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    path = record.pathname.replace(os.sep, "/")
    return (record.levelno >= std_logging.WARNING or "/diff2lip_jax/" in path
            or "/data_pipelines/" in path)


def main(argv: list[str]) -> None:
  from absl import flags  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}; settings go in --config.<field>=value")
  logging.get_absl_handler().addFilter(_ProjectInfoOnly())
  metrics = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  print(json.dumps({"final_eval": metrics}), flush=True)


def define_flags() -> None:
  """``--config`` (config file; ``--config.a.b=value`` overrides) and ``--workdir``."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  config_flags.DEFINE_config_file(
      "config", None, "Training config file, e.g. configs/syncnet.py. Override any field with "
      "--config.<field>=value, e.g. --config.data.shards=/data/shards --config.num_steps=1000 "
      "--config.data.batch_size=64 --config.data.synthetic=True.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints (resumed from if present), "
                      "TensorBoard events, the exported expert and synthetic shards.")
  flags.mark_flags_as_required(["config", "workdir"])

