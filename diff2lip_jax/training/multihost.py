"""What keeps the processes of a multi-host run in agreement.

Every function here is a collective when ``jax.process_count() > 1``: all processes must call
it at the same point of the program (a call only one process makes hangs the others). With one
process they cost nothing.
"""
from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np


def _gather(values: np.ndarray) -> np.ndarray:
  """``[P, ...]``: ``values`` of every process, in process order."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(values))


def barrier(name: str) -> None:
  """Waits, without a time limit, until every process got here (a device collective: call it
  only where no other thread runs collectives). Orbax's own barriers give up after 300 s,
  less than one host's compile may lag behind another's on a busy machine."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
  """True on every process when ``flag`` is True on at least one (e.g. a SIGTERM that reached
  only one host: all then stop at the same step)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(_gather(np.asarray([int(bool(flag))], np.int32)).max())


def host_local_copy(tree: Any) -> Any:
  """``tree`` of global arrays as NumPy arrays on every process (gathered when sharded over
  processes), for work one process does alone, such as the sample grids: a jitted function
  over global arrays that only process 0 entered would wait for the others forever."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return multihost_utils.process_allgather(tree, tiled=True)


def fingerprint(text: str) -> np.ndarray:
  """Eight bytes of the SHA-256 of ``text`` as ``[2]`` int32 (gloo gathers 32-bit ints)."""
  return np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int32).copy()


def check_same_settings(text: str, what: str) -> None:
  """Raises ValueError on every process unless all processes passed the same ``text``
  (``what`` names it in the message, e.g. "config and --workdir")."""
  if jax.process_count() == 1:
    return
  prints = _gather(fingerprint(text))
  differ = [i for i in range(len(prints)) if not np.array_equal(prints[i], prints[0])]
  if differ:
    raise ValueError(f"the processes were started with different {what}: process(es) "
                     f"{differ} differ from process 0 (start every process with the same "
                     "flags; only --process_id may differ)")
