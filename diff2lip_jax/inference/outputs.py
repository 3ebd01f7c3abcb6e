"""Output safety of the video CLIs: output paths, leftover partial files, SIGTERM/SIGINT.

* :func:`check_output` refuses an output that is one of the inputs (same file by device and
  inode, so hard links and symlinks count), an existing output without ``overwrite``, a
  directory, or a parent path that runs through an existing file - each as one
  :class:`OutputPathError` line before any work is done.
* Files being written carry a ``.partial`` name (``video_io.write_video``:
  ``.<stem>.<pid>.<random>.partial<suffix>``; frame caches: ``<prefix><pid>_<random>``
  directories in TMPDIR / ``--cache_dir``); :func:`remove_stale` deletes those left by a
  process that no longer runs (a killed run) and says what it removed.
* :func:`terminate_cleanly` turns SIGTERM/SIGINT into :class:`Terminated`, an exception, so the
  ``finally`` blocks that own the partial output and the frame cache remove them before the
  process exits with ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import signal
import tempfile
from typing import Iterable, Iterator

FRAME_CACHE_PREFIX = "diff2lip_frames_"
# write_video's temporary name: .<stem>.<pid>.<8 hex>.partial<suffix>
_PARTIAL_FILE = re.compile(r"^\..*\.(\d+)\.[0-9a-f]{8}\.partial(\.[^.]+)?$")
_FRAME_CACHE = re.compile(rf"^{FRAME_CACHE_PREFIX}(\d+)_")


class OutputPathError(ValueError):
  """An output path that must not be written (an input, existing, or not creatable)."""


class Terminated(BaseException):
  """SIGTERM/SIGINT arrived; ``exit_status`` is 128 + the signal number.

  A BaseException (as KeyboardInterrupt), so ``except Exception`` handlers of one bad input
  do not swallow it while ``finally`` blocks still clean up.
  """

  def __init__(self, signum: int):
    self.signum = signum
    self.exit_status = 128 + signum
    super().__init__(f"interrupted by {signal.Signals(signum).name}")


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
  try:
    return os.path.samefile(a, b)
  except OSError:  # one of them does not exist (or cannot be stat'ed): not the same file
    return False


def _file_in_the_way(directory: pathlib.Path) -> pathlib.Path | None:
  """The nearest existing ancestor of ``directory`` (itself included) if it is not a directory."""
  for folder in [directory, *directory.parents]:
    if folder.exists():
      return None if folder.is_dir() else folder
  return None


def make_parent(out: str | os.PathLike) -> list[pathlib.Path]:
  """Creates the directory of ``out`` (and its parents); one clear error if a file is in the way.

  Returns the directories created, outermost first (for :func:`remove_empty`).
  """
  parent = pathlib.Path(out).absolute().parent
  blocking = _file_in_the_way(parent)
  if blocking is not None:
    raise OutputPathError(f"cannot create the output directory {parent}: {blocking} is a file, "
                          "not a directory; choose another output path")
  created = [folder for folder in [*reversed(parent.parents), parent] if not folder.exists()]
  try:
    parent.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise OutputPathError(f"cannot create the output directory {parent}: "
                          f"{error.strerror or error}") from error
  return created


def remove_empty(directories: list[pathlib.Path]) -> None:
  """Removes the directories :func:`make_parent` created, innermost first, if still empty."""
  for folder in reversed(directories):
    try:
      folder.rmdir()
    except OSError:  # not empty (or already gone): leave it
      return


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike],
                 overwrite: bool = False, flag: str = "--out") -> pathlib.Path:
  """Validates an output path against ``inputs`` before anything is computed.

  Raises:
    OutputPathError: ``out`` is (a link to) an input, a directory, exists without
      ``overwrite``, or its directory cannot exist because a file is in the way.
  """
  out = pathlib.Path(out)
  for source in inputs:
    if _same_file(out, pathlib.Path(source)):
      raise OutputPathError(f"{flag} {out} is the input {source} (same file); the output must "
                            "be a new file, inputs are never overwritten")
  if out.is_dir():
    raise OutputPathError(f"{flag} {out} is a directory; give a file name such as "
                          f"{out / 'out.mp4'}")
  if (out.exists() or out.is_symlink()) and not overwrite:
    raise OutputPathError(f"{flag} {out} exists; pass --overwrite to replace it (or choose "
                          "another name)")
  blocking = _file_in_the_way(out.absolute().parent)
  if blocking is not None:
    raise OutputPathError(f"{flag} {out}: {blocking} is a file, not a directory; choose "
                          "another output path")
  return out


def _pid_alive(pid: int) -> bool:
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # a process of another user has this id
    return True
  return True


def stale_partials(directory: str | os.PathLike) -> list[pathlib.Path]:
  """Partial outputs and frame caches in ``directory`` whose writing process is gone."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  stale = []
  for path in sorted(directory.iterdir()):
    match = _PARTIAL_FILE.match(path.name) or _FRAME_CACHE.match(path.name)
    if match and not _pid_alive(int(match.group(1))):
      stale.append(path)
  return stale


def remove_stale(directories: Iterable[str | os.PathLike | None]) -> list[str]:
  """Removes :func:`stale_partials` of each directory (None: the system temp dir).

  Returns one line per path removed, or per path that could not be removed (reported, not fatal).
  """
  lines = []
  for directory in directories:
    for path in stale_partials(directory or tempfile.gettempdir()):
      try:
        if path.is_dir() and not path.is_symlink():
          shutil.rmtree(path)
        else:
          path.unlink()
        lines.append(f"removed {path}, left by an interrupted run")
      except OSError as error:
        lines.append(f"could not remove {path}, left by an interrupted run: {error}")
  return lines


def cache_prefix() -> str:
  """Prefix of this process's frame-cache directories (``tempfile.mkdtemp(prefix=...)``)."""
  return f"{FRAME_CACHE_PREFIX}{os.getpid()}_"


@contextlib.contextmanager
def terminate_cleanly(signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
  """Within the block, SIGTERM/SIGINT raise :class:`Terminated` in the main thread.

  Later signals during the unwinding are ignored so the clean-up itself is not cut short
  (SIGKILL still ends the process). The previous handlers are restored on exit.
  """
  previous, fired = {}, []

  def handler(signum, frame):  # pylint: disable=unused-argument
    if fired:
      return
    fired.append(signum)
    raise Terminated(signum)

  for signum in signals:
    previous[signum] = signal.signal(signum, handler)
  try:
    yield
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)
