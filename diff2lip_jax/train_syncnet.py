"""Train the SyncNet lip-sync expert: ``python -m diff2lip_jax.train_syncnet --config
configs/syncnet.py --workdir DIR``. See :mod:`diff2lip_jax.syncnet.train`."""
from __future__ import annotations

import sys

from diff2lip_jax import cli

PROG = "python -m diff2lip_jax.train_syncnet"
DESCRIPTION = "Train the SyncNet lip-sync expert (Wav2Lip's color_syncnet_train.py in JAX)."
NOTES = """\
Without --config.data.shards a small synthetic dataset is generated into the workdir first,
so the command runs anywhere. Re-running the same command resumes from the latest checkpoint;
SIGTERM saves a checkpoint and exits. The workdir gets checkpoints/, expert/ (the finished
expert: pass the workdir as --config.syncnet.checkpoint of python -m diff2lip_jax.train),
final_eval.json and tensorboard/.

examples:
  python -m diff2lip_jax.train_syncnet --config configs/syncnet.py --workdir runs/syncnet
  python -m diff2lip_jax.train_syncnet --config configs/syncnet.py --workdir runs/expert \\
      --config.data.shards=/data/shards --config.train.batch_size=64 \\
      --config.train.num_steps=200000"""


def main(argv: list[str]) -> None:
  args, config = cli.start_training(argv, PROG, DESCRIPTION, "syncnet.py", NOTES)
  from diff2lip_jax.syncnet.train import train_and_evaluate
  train_and_evaluate(config, args.workdir, stop=cli.StopRequested())


if __name__ == "__main__":
  sys.exit(cli.run(main))
