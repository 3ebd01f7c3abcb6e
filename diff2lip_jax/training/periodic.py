"""When a training loop acts: every N steps and on the last step of the run."""
from __future__ import annotations


class Periodic:
  """``action(step)`` is True when ``step`` is a multiple of ``every`` or the last step.

  Steps count completed updates (1, 2, ...). ``every <= 0`` fires on the last step only;
  ``on_last=False`` leaves the last step out (for actions the loop does differently at the
  end, e.g. the final samples with a demo video).
  """

  def __init__(self, every: int, last_step: int, on_last: bool = True):
    self.every, self.last_step, self.on_last = int(every), int(last_step), on_last

  def __call__(self, step: int) -> bool:
    if step == self.last_step:
      return self.on_last
    return self.every > 0 and step % self.every == 0
