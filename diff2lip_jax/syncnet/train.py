"""Train Wav2Lip's SyncNet lip-sync expert in JAX (the library behind ``train_syncnet``).

    python -m diff2lip_jax.train_syncnet --config configs/syncnet.py --workdir DIR
        [--config.data.shards=SHARDS] [--config.train.num_steps=N] [--config.a.b=value ...]

Without ``data.shards`` a small synthetic dataset (``data.synthetic_clips`` clips) is written to
``DIR/synthetic_shards`` first, so the command runs anywhere. Training follows Wav2Lip's
``color_syncnet_train.py``: BCE of the cosine similarity between the audio and face embeddings
against the in-sync label (``cosine_loss``), BatchNorm in train mode, Adam (lr 1e-4). Accuracy
counts a pair as predicted in sync when its cosine similarity is > 0.5.

Workdir layout::

  DIR/checkpoints/<step>/{variables,opt,data,config}  training checkpoints; resumed from
  DIR/expert/<step>/{variables,config}                the final expert (frozen use)
  DIR/final_eval.json                                the last evaluation's metrics
  DIR/tensorboard/                                   train/*, eval/* scalars
  DIR/synthetic_shards/                              only for synthetic runs

``variables`` is ``{"params", "batch_stats"}`` of ``SyncNetColor`` (the layout is
:mod:`diff2lip_jax.checkpoints`'). The face input is BGR (see ``model_inputs``), like the
released ``lipsync_expert.pth``, so either expert can be used with the same preprocessing:
``checkpoints.load_syncnet_expert(path)`` reads both.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pathlib
import time
from typing import Any, Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec

from diff2lip_jax import checkpoints, config_utils
from diff2lip_jax.models.syncnet import SyncNetColor, cosine_loss, syncnet_face_input
from diff2lip_jax.syncnet import data as syncnet_data
from diff2lip_jax.syncnet.expert import torch_default_init
from diff2lip_jax.training import console
from diff2lip_jax.training.periodic import Periodic

DEVICE_KEYS = ("frames", "mel", "label")
# One module object: its bound ``apply`` is a static field of TrainState, compared by identity.
MODEL = SyncNetColor()


class TrainState(train_state.TrainState):
  batch_stats: Any


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam as torch.optim.Adam (optionally after global-norm clipping)."""
  return _optimizer(float(config.lr), float(config.b1), float(config.b2),
                    float(config.eps), float(config.grad_clip_norm or 0.0))


@functools.lru_cache(maxsize=None)
def _optimizer(lr: float, b1: float, b2: float, eps: float,
               clip: float) -> optax.GradientTransformation:
  # One object per setting: the optimizer is a static part of TrainState's tree, so equal
  # settings must give an equal object for jit to reuse its compiled step.
  adam = optax.adam(lr, b1=b1, b2=b2, eps=eps)
  return optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam


def create_train_state(config: ml_collections.ConfigDict,
                       variables: dict | None = None) -> TrainState:
  """Step-0 state: ``variables`` (``{"params", "batch_stats"}``) or :func:`torch_default_init`
  of ``config.train.seed``, with the optimizer of ``config.optimizer``."""
  variables = variables if variables is not None else torch_default_init(config.train.seed)
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


# ----------------------------------------------------------------------------- training run

EVAL_KEYS = ("loss", "accuracy", "cos_in_sync", "cos_off_sync")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Rejects settings the trainer cannot honour, before any work is done."""
  if config.data.pipeline.num_epochs is not None:
    raise ValueError("train.num_steps sets the training length; leave data.pipeline.num_epochs "
                     f"unset (got {config.data.pipeline.num_epochs})")
  for name in ("batch_size", "eval_batch_size"):
    if config.train[name] % jax.device_count():
      raise ValueError(f"train.{name}={config.train[name]} must be a multiple of the "
                       f"{jax.device_count()} devices")


@dataclasses.dataclass
class Data:
  """The training iterator and a factory of the (fixed) evaluation batches, on the mesh."""
  iterator: Any
  to_device: Callable[[dict], dict]
  eval_batches: Callable[[], Iterator[dict]]


def make_data(config: ml_collections.ConfigDict, workdir: pathlib.Path,
              sharded: NamedSharding) -> Data:
  """Sources (shards or synthetic clips, held-out eval clips) -> iterators of device batches."""
  per_host = lambda size: size // jax.process_count()
  (train_shards, train_records), (eval_shards, eval_records) = (
      syncnet_data.training_sources(config.data, workdir, config.train.seed))
  iterator = syncnet_data.create_iterator(config.data.pipeline, train_shards,
                                          seed=config.train.seed,
                                          batch_size=per_host(config.train.batch_size),
                                          records=train_records)
  eval_pipeline = config.data.pipeline.copy_and_resolve_references()
  eval_pipeline.update(shuffle=False, worker_count=0, host_prefetch=0)

  def to_device(batch: dict) -> dict:
    return {k: jax.make_array_from_process_local_data(sharded, np.asarray(batch[k]))
            for k in DEVICE_KEYS}

  def eval_batches() -> Iterator[dict]:
    it = syncnet_data.create_iterator(eval_pipeline, eval_shards, seed=config.data.eval_seed,
                                      batch_size=per_host(config.train.eval_batch_size),
                                      records=eval_records)
    for _ in range(config.train.num_eval_batches):
      yield to_device(next(it))

  return Data(iterator, to_device, eval_batches)


def initial_state(config: ml_collections.ConfigDict, manager: Any, iterator: Any,
                  replicated: NamedSharding) -> TrainState:
  """The latest checkpoint of the workdir, else ``train.init_checkpoint`` or a fresh init."""
  initial = None
  if config.train.init_checkpoint and manager.latest_step() is None:
    initial = checkpoints.load_syncnet_expert(config.train.init_checkpoint)
  state = jax.device_put(create_train_state(config, initial), replicated)
  if manager.latest_step() is None:
    return state
  variables, opt = checkpoints.restore_syncnet_state(
      manager, _variables(state), _opt(state), iterator)
  logging.info("resumed from %s at step %d", manager.directory, int(opt["step"]))
  return state.replace(step=opt["step"], params=variables["params"],
                       batch_stats=variables["batch_stats"], opt_state=opt["opt_state"])


def _variables(state: TrainState) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def _opt(state: TrainState) -> dict:
  return {"step": state.step, "opt_state": state.opt_state}


def _train_metrics(pending: list[dict], rate: float, skipped: int) -> dict[str, float]:
  """Pools the train-step sums since the last log line (grad norm: their mean)."""
  sums = jax.device_get(pending)
  train = finalize_metrics({k: sum(m[k] for m in sums) for k in sums[0] if k != "grad_norm"})
  train["grad_norm"] = float(np.mean([m["grad_norm"] for m in sums]))
  train.update(steps_per_second=rate, skipped_records=float(skipped))
  return train


def run_steps(config: ml_collections.ConfigDict, state: TrainState, data: Data, steps: tuple,
              manager: Any, writer: Any, stop: Any = None
              ) -> tuple[TrainState, dict[str, float], bool]:
  """Trains to ``train.num_steps``: ``(state, last eval metrics or {}, stopped by SIGTERM)``."""
  p_train_step, p_eval_step = steps
  train, step = config.train, int(state.step)
  log_now, eval_now = Periodic(train.log_every, train.num_steps), Periodic(
      train.eval_every, train.num_steps)
  save_now = Periodic(train.checkpoint_every, train.num_steps)
  progress = console.Progress(train.num_steps, step, enabled=jax.process_index() == 0)
  eval_metrics, pending, stopping = {}, [], False
  try:
    while step < train.num_steps and not stopping:
      state, metrics = p_train_step(state, data.to_device(next(data.iterator)))
      pending.append(metrics)
      step += 1
      progress.advance(step)
      if log_now(step):
        rate = progress.rate(step)
        values = _train_metrics(pending, rate, data.iterator.skipped_records)
        console.write_scalars(writer, "train", step, values)
        progress.log(step, values, EVAL_KEYS + ("grad_norm",), rate)
        pending = []
      if eval_now(step):
        eval_metrics = evaluate(p_eval_step, state, data.eval_batches())
        console.write_scalars(writer, "eval", step, eval_metrics)
        progress.write(f"eval at step {step}: " + " ".join(
            f"{k} {console.format_value(eval_metrics[k])}" for k in EVAL_KEYS))
      stopping = stop is not None and stop.requested
      if save_now(step) or stopping:
        checkpoints.save_syncnet_state(manager, step, _variables(state), _opt(state),
                                       data.iterator, config, wait=stopping)
  finally:
    progress.close()
  return state, eval_metrics, stopping


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       stop: Any = None) -> dict[str, float]:
  """Trains (resuming from ``workdir``), evaluates, exports the expert; returns the last eval.

  ``stop.requested`` (set by SIGTERM) saves a checkpoint and returns before the export.
  """
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  started = time.perf_counter()
  check_config(config)
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec("data"))  # batch split over all devices
  data = make_data(config, workdir, sharded)
  manager = checkpoints.training_manager(workdir, config)
  state = initial_state(config, manager, data.iterator, replicated)
  start = int(state.step)
  steps = (jax.jit(train_step, in_shardings=(replicated, sharded),
                   out_shardings=(replicated, replicated), donate_argnums=0),
           jax.jit(eval_step, in_shardings=(replicated, sharded), out_shardings=replicated))
  is_main = jax.process_index() == 0
  writer = SummaryWriter(str(workdir / "tensorboard")) if is_main else None
  if is_main:
    (workdir / "config.json").write_text(config_utils.config_to_json(config))
  try:
    state, eval_metrics, stopped = run_steps(config, state, data, steps, manager, writer, stop)
  finally:
    manager.close()  # waits for an async save still being written
    if writer is not None:
      writer.close()
  if stopped:
    if is_main:
      console.print_summary(f"stopped at step {int(state.step)}/{config.train.num_steps} after "
                            "SIGTERM; re-run the same command to resume", [])
    return eval_metrics
  if not eval_metrics:  # resumed a finished run: report the expert as it is
    eval_metrics = evaluate(steps[1], state, data.eval_batches())
  expert = checkpoints.export_expert(workdir / "expert", jax.device_get(_variables(state)),
                                     config, int(state.step))
  if is_main:
    _finish(workdir, expert, eval_metrics, int(state.step) - start, config,
            time.perf_counter() - started)
  return eval_metrics


def _finish(workdir: pathlib.Path, expert: pathlib.Path, metrics: dict[str, float], steps: int,
            config: ml_collections.ConfigDict, seconds: float) -> None:
  """Writes ``final_eval.json`` and prints the end-of-run summary."""
  path = workdir / "final_eval.json"
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
  os.replace(tmp, path)
  total = config.train.num_steps
  console.print_summary(
      f"trained {steps} steps ({total}/{total}) in {console.format_duration(seconds)}",
      [("eval", " ".join(f"{k} {console.format_value(metrics[k])}" for k in EVAL_KEYS)
        + f" ({path})"),
       ("expert", str(expert)),
       ("checkpoints", str(workdir / "checkpoints")),
       ("tensorboard", f"tensorboard --logdir {workdir / 'tensorboard'}")],
      "python -m diff2lip_jax.train --config configs/released.py --workdir RUN "
      f"--config.syncnet.checkpoint={workdir}")
