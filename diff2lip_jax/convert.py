"""Convert an original (PyTorch) Diff2Lip checkpoint into an Orbax checkpoint.

    python -m diff2lip_jax.convert --torch_checkpoint model.pt --config configs/released.py \\
        --out /path/to/ckpt

The conversion itself lives in :mod:`diff2lip_jax.porting.tfg`; its public names are
re-exported here for older code (``diff2lip_jax.convert.params_from_torch``).
"""
from __future__ import annotations

import argparse
import os
import sys

from diff2lip_jax import cli
from diff2lip_jax.porting.tfg import (CheckpointMismatchError, flax_path_for,  # noqa: F401
                                      params_from_torch, torch_name_for,
                                      torch_state_dict_from_params, torch_to_flax_array)


def _main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m diff2lip_jax.convert",
      description="Convert an original (PyTorch) Diff2Lip checkpoint into an Orbax checkpoint "
                  "that diff2lip_jax's sampler and trainer load. The .pt file is read without "
                  "executing pickled code.")
  parser.add_argument("--torch_checkpoint", required=True,
                      help="Path to the original .pt/.pth state dict (e.g. the released "
                           "Diff2Lip checkpoint).")
  parser.add_argument("--config", required=True,
                      help="Config file whose get_config().model matches the checkpoint, e.g. "
                           "configs/released.py.")
  parser.add_argument("--out", required=True,
                      help="Output directory for the Orbax checkpoint (must not exist yet).")
  parser.add_argument("--state_key", default=None,
                      help="Entry of the checkpoint holding the state dict if it is nested "
                           "(e.g. 'state_dict' or 'ema'); default: auto-detect.")
  args = parser.parse_args(argv)
  cli.setup_logging()

  import jax
  import numpy as np
  from diff2lip_jax import checkpoints
  from diff2lip_jax.porting.torch_io import load_torch_state_dict

  out = os.path.abspath(args.out)
  if os.path.exists(out):
    raise cli.UsageError(f"--out {out} exists; choose a new directory (nothing is overwritten)")
  config = cli.load_config(args.config)
  try:
    state = load_torch_state_dict(args.torch_checkpoint, key=args.state_key)
    params = params_from_torch(state, config.model)
  except (CheckpointMismatchError, ValueError, OSError) as e:
    raise cli.UsageError(f"{args.torch_checkpoint}: {e}") from None
  tmp = f"{out}.tmp-{os.getpid()}"  # renamed when complete: --out never holds a partial write
  checkpoints.save_inference_checkpoint(tmp, params, config)
  os.replace(tmp, out)
  n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  print(f"wrote {out} ({n:,} parameters)")


def main(argv: list[str] | None = None) -> int:
  """The CLI; returns the exit status (errors: one ``error:`` line, status 1 or 2)."""
  return cli.run(_main, argv)


if __name__ == "__main__":
  sys.exit(main())
