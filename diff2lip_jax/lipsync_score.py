"""``python -m diff2lip_jax.lipsync_score``: see :mod:`diff2lip_jax.evaluation.lipsync_score`."""
import sys

from diff2lip_jax.evaluation.lipsync_score import main

if __name__ == "__main__":
  sys.exit(main())
