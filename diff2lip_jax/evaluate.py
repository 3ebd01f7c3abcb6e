"""``python -m diff2lip_jax.evaluate``: see :mod:`diff2lip_jax.evaluation.command`."""
import sys

from diff2lip_jax.evaluation.command import main

if __name__ == "__main__":
  sys.exit(main())
