"""``python -m diff2lip_jax.evaluate``: see :mod:`diff2lip_jax.evaluation.evaluate`."""
import sys

from diff2lip_jax.evaluation.evaluate import main

if __name__ == "__main__":
  sys.exit(main())
