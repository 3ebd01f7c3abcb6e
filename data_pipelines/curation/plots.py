"""Histogram PNGs drawn with Pillow (no plotting dependency): title, labelled axes with ticks,
stacked bars per series, a legend and optional dashed marker lines (e.g. thresholds)."""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 720, 440
MARGIN = {"left": 78, "right": 24, "top": 48, "bottom": 66}
COLORS = ((70, 130, 180), (214, 96, 77), (120, 170, 90), (150, 110, 180))
AXIS = (40, 40, 40)
GRID = (225, 225, 225)


def _font(size: int) -> ImageFont.ImageFont:
  try:
    return ImageFont.load_default(size=size)   # scalable font (Pillow >= 10.1 with FreeType)
  except (TypeError, OSError):
    return ImageFont.load_default()


def nice_ticks(low: float, high: float, count: int = 6) -> np.ndarray:
  """About `count` round tick values (steps 1, 2 or 5 x 10^k) covering `[low, high]`."""
  if not (math.isfinite(low) and math.isfinite(high)):
    raise ValueError(f"tick range must be finite, got {low}, {high}")
  if high <= low:
    high = low + 1.0
  raw = (high - low) / max(count - 1, 1)
  magnitude = 10.0 ** math.floor(math.log10(raw))
  step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
  first = math.ceil(low / step - 1e-9) * step
  return np.arange(first, high + step * 1e-6, step)


def _label(value: float) -> str:
  return f"{value:.0f}" if abs(value - round(value)) < 1e-9 else f"{value:.3g}"


def histogram_png(path: str | os.PathLike, series: dict[str, Sequence[float]],
                  edges: Sequence[float], *, title: str, xlabel: str, ylabel: str = "shots",
                  markers: dict[str, float] | None = None) -> None:
  """Writes a stacked histogram of each series over bins `edges` (values outside are clipped
  into the end bins; NaN values are left out).

  Args:
    series: label -> values; stacked in this order, each with its own colour in the legend.
    edges: `[B + 1]` increasing bin edges.
    markers: label -> x value of a dashed vertical line (e.g. a threshold).
  """
  edges = np.asarray(edges, np.float64)
  if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
    raise ValueError(f"histogram edges must be increasing, got {edges}")
  counts = []
  for values in series.values():
    values = np.asarray(values, np.float64)
    values = np.clip(values[np.isfinite(values)], edges[0], edges[-1])
    counts.append(np.histogram(values, edges)[0])
  top = max(1, int(np.sum(counts, axis=0).max()) if counts else 1)
  image = Image.new("RGB", (WIDTH, HEIGHT), "white")
  draw = ImageDraw.Draw(image)
  x0, x1 = MARGIN["left"], WIDTH - MARGIN["right"]
  y0, y1 = HEIGHT - MARGIN["bottom"], MARGIN["top"]
  to_x = lambda v: x0 + (v - edges[0]) / (edges[-1] - edges[0]) * (x1 - x0)
  y_ticks = [t for t in nice_ticks(0, top, 6) if float(t).is_integer()] or [0, top]
  scale = 1.12 * max(top, y_ticks[-1])   # headroom for the legend
  to_y = lambda c: y0 - c / scale * (y0 - y1)
  small, large = _font(13), _font(16)
  for tick in y_ticks:
    draw.line([(x0, to_y(tick)), (x1, to_y(tick))], fill=GRID)
    draw.text((x0 - 8, to_y(tick)), _label(tick), fill=AXIS, font=small, anchor="rm")
  _draw_bars(draw, counts, edges, to_x, to_y)
  for tick in nice_ticks(edges[0], edges[-1], 8):
    draw.line([(to_x(tick), y0), (to_x(tick), y0 + 5)], fill=AXIS)
    draw.text((to_x(tick), y0 + 8), _label(tick), fill=AXIS, font=small, anchor="mt")
  draw.line([(x0, y1), (x0, y0), (x1, y0)], fill=AXIS, width=2)
  for i, (name, value) in enumerate((markers or {}).items()):
    _dashed_vline(draw, to_x(float(np.clip(value, edges[0], edges[-1]))), y0, y1)
    draw.text((to_x(value) + 4, y1 + 4 + 16 * i), f"{name} = {value:g}", fill=AXIS, font=small)
  draw.text(((x0 + x1) / 2, 14), title, fill=AXIS, font=large, anchor="mt")
  draw.text(((x0 + x1) / 2, HEIGHT - 22), xlabel, fill=AXIS, font=large, anchor="mm")
  _legend(draw, list(series), x1, y1, small)
  _vertical_label(image, ylabel, large, (18, (y0 + y1) // 2))
  temp = f"{os.fspath(path)}.{os.getpid()}.partial.png"
  image.save(temp)
  os.replace(temp, path)


def _draw_bars(draw: ImageDraw.ImageDraw, counts: list[np.ndarray], edges: np.ndarray,
               to_x, to_y) -> None:
  below = np.zeros(len(edges) - 1)
  for k, count in enumerate(counts):
    for b, c in enumerate(count):
      if c:
        left, right = to_x(edges[b]) + 1, max(to_x(edges[b + 1]) - 1, to_x(edges[b]) + 2)
        draw.rectangle([left, to_y(below[b] + c), right, to_y(below[b])],
                       fill=COLORS[k % len(COLORS)])
    below = below + count


def _dashed_vline(draw: ImageDraw.ImageDraw, x: float, y0: float, y1: float) -> None:
  for y in np.arange(y1, y0, 10):
    draw.line([(x, y), (x, min(y + 6, y0))], fill=AXIS, width=2)


def _legend(draw: ImageDraw.ImageDraw, names: list[str], right: float, top: float,
            font: ImageFont.ImageFont) -> None:
  for i, name in enumerate(names):
    y = top + 6 + 18 * i
    draw.rectangle([right - 120, y, right - 108, y + 12], fill=COLORS[i % len(COLORS)])
    draw.text((right - 102, y + 6), name, fill=AXIS, font=font, anchor="lm")


def _vertical_label(image: Image.Image, text: str, font: ImageFont.ImageFont,
                    centre: tuple[int, int]) -> None:
  box = font.getbbox(text)
  label = Image.new("RGB", (box[2] + 4, box[3] + 4), "white")
  ImageDraw.Draw(label).text((2, 2), text, fill=AXIS, font=font)
  label = label.rotate(90, expand=True)
  image.paste(label, (centre[0] - label.width // 2, centre[1] - label.height // 2))
