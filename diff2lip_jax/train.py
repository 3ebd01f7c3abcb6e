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

import sys

from diff2lip_jax import cli

PROG = "python -m diff2lip_jax.train"
DESCRIPTION = "Train Diff2Lip (a diffusion model that regenerates the mouth region of talking faces)."
NOTES = """\
Re-running the same command resumes from the latest complete checkpoint in --workdir (state,
EMA, RNG, discriminator and data iterator); SIGTERM saves a checkpoint and exits. The
workdir gets checkpoints/ (load it with python -m diff2lip_jax.sample --checkpoint WORKDIR),
tensorboard/, samples/ (image grids, demo videos) and, for synthetic runs, data/.

examples:
  python -m diff2lip_jax.train --config configs/synthetic.py --workdir runs/synthetic
  python -m diff2lip_jax.train --config configs/released.py --workdir gs://bucket/run \\
      --config.data.shards=/data/shards --config.train.batch_size=256"""


def main(argv: list[str]) -> None:
  args, config = cli.start_training(argv, PROG, DESCRIPTION, "released.py", NOTES)
  from diff2lip_jax.training.loop import train_and_evaluate
  train_and_evaluate(config, args.workdir, stop=cli.StopRequested())


if __name__ == "__main__":
  sys.exit(cli.run(main))
