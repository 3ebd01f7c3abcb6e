r"""Train Diff2Lip: ``python -m diff2lip_jax.train --config configs/X.py --workdir DIR``.

Any config field can be overridden on the command line, e.g.
``--config.train.batch_size=32 --config.loss.sync=0.1 --config.model.dtype=bfloat16``
(``--help`` lists every field with its default). Re-running the same command resumes from the
latest complete checkpoint in ``--workdir`` (state, EMA, RNG, discriminator and data
iterator), so a preempted or killed run continues where its last checkpoint left it. SIGTERM
saves a checkpoint and exits.

Writes to the workdir: ``checkpoints/`` (Orbax; the sampler loads the workdir directly),
``tensorboard/`` (losses, lr, grad norm, steps/s, samples/s, image grids), ``samples/``
(PNG grids: masked input | reference | generated | ground truth, and mp4 demo videos) and,
for the synthetic default, ``data/`` (the generated dataset).
"""
from __future__ import annotations

import os
import sys

from diff2lip_jax import cli

NOTES = """\
Re-running the same command resumes from the latest complete checkpoint in --workdir (state,
EMA, RNG, discriminator and data iterator); SIGTERM saves a checkpoint and exits. The
workdir gets checkpoints/ (load it with python -m diff2lip_jax.sample --checkpoint WORKDIR),
tensorboard/, samples/ (image grids, demo videos) and, for synthetic runs, data/.

examples:
  python -m diff2lip_jax.train --config configs/synthetic.py --workdir runs/synthetic
  python -m diff2lip_jax.train --config configs/released.py --workdir gs://bucket/run \\
      --config.data.shards=/data/shards --config.train.batch_size=256

Set DIFF2LIP_TRACEBACK=1 to see the traceback of an error."""


def main(argv: list[str]) -> None:
  parser = cli.training_parser(
      "python -m diff2lip_jax.train",
      "Train Diff2Lip (a diffusion model that regenerates the mouth region of talking faces).")
  args, config = cli.parse_training_args(parser, argv, "released.py", NOTES)
  cli.setup_logging(args.verbose)
  cli.init_distributed(args)
  import jax
  if "://" not in args.workdir and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    # A resumed run (after preemption) then skips most of the compile time.
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  from diff2lip_jax.training.loop import train_and_evaluate
  train_and_evaluate(config, args.workdir, stop=cli.StopRequested())


if __name__ == "__main__":
  sys.exit(cli.run(main))
