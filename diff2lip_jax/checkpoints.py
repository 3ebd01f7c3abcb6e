"""Orbax checkpoints: the one module that knows their layout on disk.

Every checkpoint directory is an Orbax ``CheckpointManager`` directory: numbered step
directories, each holding named items. Orbax writes a step under a temporary name and renames
it when complete, so a process killed mid-save leaves the previous step as the latest.

==================================  =============================================================
directory                           items of each step
==================================  =============================================================
``convert`` output / exports        ``params`` (Flax params to sample with), ``config`` (JSON)
Diff2Lip ``<workdir>/checkpoints``  ``state`` (whole ``TrainState``), ``params`` (EMA params to
                                    sample with), ``config``, ``data`` (Grain iterator state)
SyncNet ``<workdir>/checkpoints``   ``variables`` (``{"params", "batch_stats"}``), ``opt``
                                    (``{"step", "opt_state"}``), ``config``, ``data``
SyncNet ``<workdir>/expert``        ``variables``, ``config`` (the finished expert)
==================================  =============================================================

Restoring never depends on the topology that wrote a checkpoint: arrays are restored into
explicit targets (shape, dtype and the *loading* process's sharding): one local device for
inference and experts, the current mesh's shardings for a resumed training run. A checkpoint
written by 8 devices with fsdp-sharded parameters therefore loads in a 1-device process.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from diff2lip_jax import config_utils

TREE_ITEMS = ("state", "params", "variables", "opt")  # pytrees of arrays (StandardSave)
CONFIG_ITEM, DATA_ITEM = "config", "data"               # JSON config, Grain iterator state
TORCH_SUFFIXES = (".pth", ".pt", ".tar")


class CheckpointError(ValueError):
  """A checkpoint directory is missing, incomplete or does not match the model config."""


# ----------------------------------------------------------------------------- generic core

def _item_handlers() -> dict[str, Any]:
  import grain  # deferred: inference and conversion never touch the data iterator
  handlers = {name: ocp.StandardCheckpointHandler() for name in TREE_ITEMS}
  handlers[CONFIG_ITEM] = ocp.JsonCheckpointHandler()
  handlers[DATA_ITEM] = grain.checkpoint.CheckpointHandler()
  return handlers


def _use_distributed_barriers() -> None:
  # Orbax's default barrier between processes is a device collective. An async save runs it
  # from a background thread while the training step runs its own collectives, and the two
  # interleave differently on each process: a hang at the first multi-host save. The
  # coordination-service barrier uses no device.
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # outside an absl app: keep every other flag's default
  flags.FLAGS.experimental_orbax_use_distributed_barrier = True


def open_manager(directory: str | os.PathLike, *, create: bool = False,
                 max_to_keep: int | None = None, async_save: bool = False
                 ) -> ocp.CheckpointManager:
  """A ``CheckpointManager`` for ``directory`` that knows every item name of this project.

  ``async_save``: :func:`save` returns once the arrays are copied to host memory and writes
  them in a background thread (the next save, ``wait_until_finished`` or ``close`` waits).
  """
  if jax.process_count() > 1:
    _use_distributed_barriers()
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                         enable_async_checkpointing=async_save)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_handlers=_item_handlers())


def save(manager: ocp.CheckpointManager, step: int, trees: dict[str, Any], *,
         config: ml_collections.ConfigDict | None = None, data_iterator: Any = None,
         wait: bool = True) -> None:
  """Saves the pytrees ``trees`` (item name -> pytree), the config and the iterator as ``step``.

  The iterator's state is taken before this returns, also with an async manager, so the
  caller may advance it right away. ``wait``: return only once the step is committed.
  """
  args = {name: ocp.args.StandardSave(tree) for name, tree in trees.items()}
  if config is not None:
    args[CONFIG_ITEM] = ocp.args.JsonSave(json.loads(config_utils.config_to_json(config)))
  if data_iterator is not None:
    import grain
    args[DATA_ITEM] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**args), force=True)
  if wait:
    manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, step: int, targets: dict[str, Any], *,
            config: bool = False, data_iterator: Any = None) -> dict[str, Any]:
  """Restores the items of ``targets`` (name -> abstract pytree of ``jax.ShapeDtypeStruct``
  with shardings), optionally the config (as a ConfigDict) and the iterator (in place)."""
  args = {name: ocp.args.StandardRestore(target) for name, target in targets.items()}
  if config:
    args[CONFIG_ITEM] = ocp.args.JsonRestore()
  if data_iterator is not None:
    import grain
    args[DATA_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
  restored = dict(manager.restore(step, args=ocp.args.Composite(**args)))
  if config:
    restored[CONFIG_ITEM] = config_utils.config_from_dict(restored[CONFIG_ITEM])
  return restored


def abstract_like(tree: Any) -> Any:
  """Restore target with the shapes, dtypes and shardings of the (placed) arrays of ``tree``."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def local_target(tree: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
  """``tree``'s shapes and dtypes placed on ``sharding`` (default: the first local device)."""
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def saved_shapes(manager: ocp.CheckpointManager, step: int, item: str) -> Any:
  """The pytree of ``item`` at ``step`` as the checkpoint's metadata describes it."""
  metadata = manager.item_metadata(step)[item]
  return getattr(metadata, "tree", metadata)


def _latest_step(manager: ocp.CheckpointManager, directory: pathlib.Path, items: tuple[str, ...],
                 step: int | None, writer: str) -> int:
  """``step`` (default the latest) after checking that it holds ``items``."""
  step = manager.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"{directory} holds no complete checkpoint step (expected numbered "
                          f"step directories written by {writer})")
  found = sorted(os.listdir(directory / str(step))) if (directory / str(step)).is_dir() else []
  if not set(items) <= set(found):
    raise CheckpointError(f"{directory / str(step)} lacks the items {list(items)} (found "
                          f"{found}, steps {sorted(manager.all_steps())}); it was not written "
                          f"by {writer}")
  return step


# ----------------------------------------------------------------------------- inference

def save_inference_checkpoint(directory: str | os.PathLike, params: Any,
                              config: ml_collections.ConfigDict, step: int = 0) -> None:
  """Writes ``params`` and ``config`` as step ``step`` of an Orbax checkpoint at ``directory``."""
  with open_manager(directory, create=True) as manager:
    save(manager, step, {"params": params}, config=config)


def resolve_checkpoint_dir(path: str | os.PathLike) -> pathlib.Path:
  """Accepts a checkpoint directory or a training workdir (uses ``<workdir>/checkpoints``)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise CheckpointError(f"checkpoint {path} does not exist; pass a directory written by "
                          "`python -m diff2lip_jax.convert` or a training --workdir")
  if (path / "checkpoints").is_dir():
    return path / "checkpoints"
  return path


def load_inference_checkpoint(path: str | os.PathLike, step: int | None = None,
                              sharding: jax.sharding.Sharding | None = None
                              ) -> tuple[Any, ml_collections.ConfigDict]:
  """Returns ``(params, config)`` from the latest (or given) complete step at ``path``.

  ``path`` is a converted/exported checkpoint or a training workdir. The params are placed on
  ``sharding`` (default: this process's first local device), whatever mesh wrote them.
  """
  directory = resolve_checkpoint_dir(path).absolute()
  with open_manager(directory) as manager:
    step = _latest_step(manager, directory, ("params", CONFIG_ITEM), step, "diff2lip_jax")
    target = local_target(saved_shapes(manager, step, "params"), sharding)
    restored = restore(manager, step, {"params": target}, config=True)
  return restored["params"], restored[CONFIG_ITEM]


# ----------------------------------------------------------------------------- training runs

def checkpoint_dir(workdir: str | os.PathLike) -> str:
  """Where a training run keeps its checkpoints: ``<workdir>/checkpoints``."""
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def training_manager(workdir: str | os.PathLike, config: ml_collections.ConfigDict
                     ) -> ocp.CheckpointManager:
  """A run's manager (either trainer): ``<workdir>/checkpoints``, keeping
  ``train.keep_checkpoints`` steps, async per ``train.async_checkpointing``."""
  return open_manager(checkpoint_dir(workdir), create=True,
                      max_to_keep=int(config.train.keep_checkpoints),
                      async_save=bool(config.train.async_checkpointing))


def save_training_state(manager: ocp.CheckpointManager, step: int, state: Any, params: Any,
                        data_iterator: Any, config: ml_collections.ConfigDict,
                        wait: bool = False) -> None:
  """Diff2Lip run: the whole ``TrainState``, the params to sample with, config and iterator."""
  save(manager, step, {"state": state, "params": params}, config=config,
       data_iterator=data_iterator, wait=wait)


def restore_training_state(manager: ocp.CheckpointManager, state: Any, data_iterator: Any
                           ) -> tuple[int | None, Any]:
  """The latest Diff2Lip step, restored with the structure and shardings of ``state`` (a
  state already placed on the current mesh); ``(None, None)`` before the first checkpoint.
  The data iterator is restored in place."""
  step = manager.latest_step()
  if step is None:
    return None, None
  restored = restore(manager, step, {"state": abstract_like(state)}, data_iterator=data_iterator)
  return step, restored["state"]


def save_syncnet_state(manager: ocp.CheckpointManager, step: int, variables: dict, opt: dict,
                       data_iterator: Any, config: ml_collections.ConfigDict,
                       wait: bool = False) -> None:
  """SyncNet run: ``variables`` (``{"params", "batch_stats"}``), ``opt`` (``{"step",
  "opt_state"}``), config and iterator."""
  save(manager, step, {"variables": variables, "opt": opt}, config=config,
       data_iterator=data_iterator, wait=wait)


def restore_syncnet_state(manager: ocp.CheckpointManager, variables: dict, opt: dict,
                          data_iterator: Any, step: int | None = None) -> tuple[dict, dict]:
  """``(variables, opt)`` of ``step`` (default the latest) with the structure and shardings of
  the given (placed) trees; the iterator is restored in place."""
  step = manager.latest_step() if step is None else step
  restored = restore(manager, step, {"variables": abstract_like(variables),
                                     "opt": abstract_like(opt)}, data_iterator=data_iterator)
  return restored["variables"], restored["opt"]


# ----------------------------------------------------------------------------- SyncNet expert

def export_expert(directory: str | os.PathLike, variables: dict,
                  config: ml_collections.ConfigDict, step: int) -> pathlib.Path:
  """Writes ``{"params", "batch_stats"}`` (+ the run's config) as step ``step`` at ``directory``.

  A step that already exists is left as it is (a finished run started again exports nothing).
  """
  directory = pathlib.Path(directory).absolute()
  with open_manager(directory, create=True, max_to_keep=1) as manager:
    if step not in manager.all_steps():
      save(manager, step, {"variables": variables}, config=config)
  return directory


def _expert_dir(path: pathlib.Path) -> pathlib.Path:
  for candidate in (path / "expert", path / "checkpoints"):
    if candidate.is_dir():
      return candidate
  return path


def load_syncnet_expert(path: str | os.PathLike, step: int | None = None) -> dict:
  """SyncNet variables ``{"params", "batch_stats"}`` to use as a frozen expert.

  Args:
    path: a Wav2Lip ``lipsync_expert.pth``, a directory written by :func:`export_expert`, a
      ``train_syncnet`` workdir (its ``expert``, else its ``checkpoints``) or its
      ``checkpoints`` directory.
    step: checkpoint step of a directory (default: the latest).
  Returns:
    float32 variables for ``SyncNetColor().apply(variables, mel, face)`` (eval mode) on the
    first local device, whatever mesh saved them. All sources use the BGR face input of
    ``syncnet_face_input``, like the released expert.
  """
  path = pathlib.Path(path)
  if path.is_file():
    if path.suffix not in TORCH_SUFFIXES:
      raise CheckpointError(f"{path} is a file but not a PyTorch checkpoint "
                            f"({', '.join(TORCH_SUFFIXES)}); pass a Wav2Lip lipsync_expert.pth "
                            "or a directory written by `python -m diff2lip_jax.train_syncnet`")
    from diff2lip_jax.porting.syncnet import load_syncnet_variables
    return load_syncnet_variables(path)
  if not path.is_dir():
    raise FileNotFoundError(f"SyncNet expert {path} does not exist; pass lipsync_expert.pth or a "
                            "directory written by `python -m diff2lip_jax.train_syncnet`")
  from diff2lip_jax.models.syncnet import init_syncnet_variables
  directory = _expert_dir(path).absolute()
  with open_manager(directory) as manager:
    step = _latest_step(manager, directory, ("variables",), step,
                        "diff2lip_jax.train_syncnet")
    target = local_target(jax.eval_shape(init_syncnet_variables, jax.random.PRNGKey(0)))
    try:
      return restore(manager, step, {"variables": target})["variables"]
    except (ValueError, KeyError) as error:
      raise CheckpointError(f"{directory / str(step) / 'variables'} does not hold SyncNetColor "
                            f"variables: {error}") from error
