"""``python -m diff2lip_jax.app``: see :mod:`diff2lip_jax.app.server`."""
import sys

from diff2lip_jax.app.server import main

if __name__ == "__main__":
  sys.exit(main())
