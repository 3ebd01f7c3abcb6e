"""What keeps the processes of a multi-host run in agreement.

Every function here is a collective when ``jax.process_count() > 1``: all processes must call
it at the same point of the program (a call only one process makes hangs the others). With one
process they cost nothing.

Waiting is done through the coordination service of ``jax.distributed`` (no device), never in
a device collective: the first collective over a new group of devices sets up its
communicator with a short fixed deadline (30 s for gloo on CPU), so a process that arrives
later than that (still compiling what the other loaded from the compilation cache, writing
the synthetic data, sampling a grid) would make the run fail. Hence also
:func:`compile_together`: compile everywhere, wait, then run the first step.
"""
from __future__ import annotations

import hashlib
import itertools
from typing import Any

import jax
import numpy as np

# Long enough for one host to compile (or sample, or write data) while the others wait; a
# process that never arrives still ends the run with an error rather than a silent hang.
BARRIER_TIMEOUT_S = 3600
_barrier_ids = itertools.count()  # every process calls barriers in the same order


def _client() -> Any:
  from orbax.checkpoint import multihost as ocp_multihost  # pylint: disable=import-outside-toplevel
  return ocp_multihost.get_jax_distributed_client()


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
  """Waits until every process got here (at most ``timeout_s``; then raises TimeoutError)."""
  if jax.process_count() == 1:
    return
  key = f"diff2lip/{next(_barrier_ids)}/{name}"
  try:
    _client().wait_at_barrier(key, int(timeout_s * 1000))
  except Exception as error:  # pylint: disable=broad-except  (XLA's status errors)
    raise TimeoutError(
        f"process {jax.process_index()} waited {timeout_s:.0f} s at '{name}' and not every "
        f"process of the run arrived: check the other processes' logs ({error})") from error


def compile_together(jitted: Any, *args: Any, name: str) -> Any:
  """``jitted.lower(*args).compile()``, returned once every process has compiled it, so the
  first run of a program with cross-process collectives starts on all hosts together."""
  compiled = jitted.lower(*args).compile()
  barrier(f"compiled {name}")
  return compiled


def _gather(values: np.ndarray) -> np.ndarray:
  """``[P, ...]``: ``values`` of every process, in process order."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(values))


def any_process(flag: bool) -> bool:
  """True on every process when ``flag`` is True on at least one (e.g. a SIGTERM that reached
  only one host: all then stop at the same step). Call it right after a collective step, so
  the processes arrive together."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(_gather(np.asarray([int(bool(flag))], np.int32)).max())


def host_local_copy(tree: Any) -> Any:
  """``tree`` of global arrays as NumPy arrays on every process, for work one process does
  alone, such as the sample grids: a jitted function over global arrays that only process 0
  entered would wait for the others forever. Replicated arrays are copied from a local
  device; only arrays sharded over processes are gathered (then every process must call)."""
  if jax.process_count() == 1:
    return tree
  leaves = jax.tree_util.tree_leaves(tree)
  if all(getattr(x, "is_fully_replicated", True) for x in leaves):
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  barrier("gather params")
  return multihost_utils.process_allgather(tree, tiled=True)


def fingerprint(text: str) -> str:
  """The SHA-256 of ``text`` (hex)."""
  return hashlib.sha256(text.encode()).hexdigest()


def check_same_settings(text: str, what: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
  """Raises ValueError on every process unless all processes passed the same ``text``
  (``what`` names it in the message, e.g. "config and --workdir"). Exchanged through the
  coordination service, so processes may start far apart."""
  if jax.process_count() == 1:
    return
  client, run = _client(), next(_barrier_ids)
  client.key_value_set(f"diff2lip/{run}/settings/{jax.process_index()}", fingerprint(text))
  prints = [client.blocking_key_value_get(f"diff2lip/{run}/settings/{i}", int(timeout_s * 1000))
            for i in range(jax.process_count())]
  differ = [i for i in range(len(prints)) if prints[i] != prints[0]]
  if differ:
    raise ValueError(f"the processes were started with different {what}: process(es) "
                     f"{differ} differ from process 0 (start every process with the same "
                     "flags; only --process_id may differ)")
