r"""Train Diff2Lip: ``python -m diff2lip_jax.train --config configs/X.py --workdir DIR``.

Any config field can be overridden on the command line, e.g.
``--config.train.batch_size=32 --config.loss.sync=0.1 --config.model.dtype=bfloat16``.
Re-running the same command resumes from the latest complete checkpoint in ``--workdir``
(state, EMA, RNG, discriminator and data iterator), so a preempted or killed run continues
where its last checkpoint left it. SIGTERM saves a checkpoint and exits.

Writes to the workdir: ``checkpoints/`` (Orbax; the sampler loads the workdir directly),
``tensorboard/`` (losses, lr, grad norm, steps/s, samples/s, image grids), ``samples/``
(PNG grids: masked input | reference | generated | ground truth, and mp4 demo videos) and,
for the synthetic default, ``data/`` (the generated dataset).
"""
from __future__ import annotations

import logging
import os
import signal
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/synthetic.py, configs/released.py, ...). "
    "Override fields with --config.<field>=<value>.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (local path or gs://...): checkpoints, TensorBoard logs, "
    "samples; an existing workdir is resumed.")
_DISTRIBUTED = flags.DEFINE_boolean(
    "distributed", False, "Call jax.distributed.initialize() (multi-host TPU/GPU). On Cloud "
    "TPU VMs no other flag is needed; on GPU clusters give the three flags below.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0 (multi-host GPU).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")


class StopRequested:
  """Set by SIGTERM (preemption notice) so the loop checkpoints and exits cleanly."""

  def __init__(self):
    self.requested = False
    signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    logging.warning("SIGTERM received: saving a checkpoint and stopping")
    self.requested = True


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _WORKDIR.value is None or _CONFIG.value is None:
    raise app.UsageError("--config and --workdir are required (see --help)")
  import jax
  if _DISTRIBUTED.value or os.environ.get("DIFF2LIP_DISTRIBUTED") == "1":
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  if "://" not in _WORKDIR.value and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # A resumed run (after preemption) then skips most of the compile time.
    jax.config.update("jax_compilation_cache_dir", os.path.join(_WORKDIR.value, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  from diff2lip_jax.training.loop import train_and_evaluate
  stop = StopRequested()
  train_and_evaluate(_CONFIG.value, _WORKDIR.value, stop=stop)


def run() -> None:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  # Orbax and Grain log every file operation at INFO through absl; keep the console readable.
  logging.getLogger("absl").setLevel(logging.WARNING)
  app.run(main)


if __name__ == "__main__":
  sys.exit(run())
