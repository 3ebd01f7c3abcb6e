"""Train the SyncNet lip-sync expert: ``python -m diff2lip_jax.train_syncnet --config
configs/syncnet.py --workdir DIR``. See :mod:`diff2lip_jax.syncnet.train`."""
from absl import app

from diff2lip_jax.syncnet.train import define_flags, main

if __name__ == "__main__":
  define_flags()
  app.run(main)
