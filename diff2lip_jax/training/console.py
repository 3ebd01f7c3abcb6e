"""What a person watching a training run sees: one progress line per log interval, TensorBoard
scalars, and a short summary at the end. Shared by the Diff2Lip and SyncNet trainers.

A progress line reads ``step 50/1500 (3%) loss 0.1234 mse 0.1 ... | 2.51 steps/s ETA 9m38s``;
it is printed to stdout and flushed at once (logs of a detached run stay current). On a
terminal a tqdm bar under the lines advances with every step.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, TextIO


def format_duration(seconds: float) -> str:
  """``3725 -> '1h02m'``, ``578 -> '9m38s'``, ``12.3 -> '12s'``."""
  seconds = max(int(round(seconds)), 0)
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


def format_value(value: float) -> str:
  """4 significant digits, scientific notation for very small or large magnitudes."""
  if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
    return f"{value:.3e}"
  return f"{value:.4g}"


class Progress:
  """Progress of steps ``start .. total``: :meth:`advance` per step, :meth:`log` per interval.

  Steps/s and the ETA come from the time since the previous log line (the first interval
  includes compilation, later ones measure the steady state).
  """

  def __init__(self, total: int, start: int, enabled: bool = True, stream: TextIO | None = None):
    self.total, self.enabled = int(total), enabled
    self.stream = stream or sys.stdout
    self._last_step, self._last_time = int(start), time.perf_counter()
    self.started = self._last_time
    self._bar = None
    if enabled and start < total and self.stream.isatty():
      from tqdm import tqdm
      self._bar = tqdm(total=total, initial=start, unit="step", file=self.stream,
                       dynamic_ncols=True, leave=False)

  def advance(self, step: int) -> None:
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def rate(self, step: int) -> float:
    """Steps per second since the previous :meth:`log` (and resets that window)."""
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    return rate

  def log(self, step: int, values: dict[str, float], keys: Iterable[str], rate: float,
          extra: str = "") -> str:
    """Prints ``step S/T (P%) k v ... | R steps/s [extra] ETA D`` for the ``keys`` present."""
    terms = " ".join(f"{k} {format_value(values[k])}" for k in keys if k in values)
    eta = format_duration((self.total - step) / rate) if rate > 0 else "?"
    percent = 100.0 * step / max(self.total, 1)
    line = (f"step {step}/{self.total} ({percent:.0f}%) {terms} | {rate:.2f} steps/s"
            f"{' ' + extra if extra else ''} ETA {eta}")
    self.write(line)
    return line

  def write(self, line: str) -> None:
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(line, file=self.stream)
    else:
      print(line, file=self.stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def elapsed(self) -> float:
    return time.perf_counter() - self.started


def write_scalars(writer: Any, prefix: str, step: int, values: dict[str, float]) -> None:
  """``prefix/name`` TensorBoard scalars (``writer`` None: nothing, e.g. on other hosts)."""
  if writer is None:
    return
  for name, value in sorted(values.items()):
    writer.add_scalar(f"{prefix}/{name}", float(value), step)
  writer.flush()


def print_summary(title: str, rows: list[tuple[str, str]], next_command: str | None = None,
                  stream: TextIO | None = None) -> None:
  """The end-of-run block: a title, aligned ``name: value`` rows and the next command."""
  stream = stream or sys.stdout
  width = max((len(name) for name, _ in rows), default=0)
  lines = [title] + [f"  {name + ':':<{width + 1}} {value}" for name, value in rows]
  if next_command:
    lines.append(f"next: {next_command}")
  print("\n".join(lines), file=stream, flush=True)
