"""Filelists of ``sample``: one ``audio video`` pair per line, and the output name of each.

Three forms, chosen per file:
  * ``.csv`` files: comma-separated, quoted with ``"`` as CSV does (``"my speech.wav",face``);
  * lines holding a tab: the two fields are tab-separated, so names may contain spaces;
  * otherwise whitespace-separated (the reference's ``audio_name video_name`` form).
Empty lines and lines starting with ``#`` are skipped. The output of a pair is
``<audio>_<video>.mp4`` (extensions dropped, '/' replaced by '.'); :func:`collisions` finds
pairs that would write the same output, which the CLI refuses before any work.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import pathlib

FORMAT_HELP = ("one 'audio video' pair per line; names with spaces: separate the two fields by a "
               "tab, or use a .csv file (comma-separated, \"quoted\" names); '#' lines are "
               "comments")


@dataclasses.dataclass(frozen=True)
class Entry:
  """One non-empty, non-comment line: its number, raw text and fields."""
  number: int
  line: str
  fields: tuple[str, ...]

  @property
  def output_name(self) -> str:
    """``<audio>_<video>.mp4`` of a two-field entry."""
    audio_name, video_name = self.fields
    return _stem(audio_name) + "_" + _stem(video_name) + ".mp4"


def _stem(name: str) -> str:
  base, extension = os.path.splitext(name)
  return (base if extension else name).replace("/", ".")


def _fields(line: str) -> tuple[str, ...]:
  if "\t" in line:
    return tuple(field.strip() for field in line.split("\t") if field.strip())
  return tuple(line.split())


def read_filelist(path: str | os.PathLike) -> list[Entry]:
  """Entries of a filelist (see the module docstring for the three forms)."""
  with open(path, encoding="utf-8", newline="") as f:
    if pathlib.Path(path).suffix.lower() == ".csv":
      rows = [(n, ",".join(row), tuple(v.strip() for v in row if v.strip()))
              for n, row in enumerate(csv.reader(f), 1)]
    else:
      rows = [(n, line.rstrip("\r\n"), _fields(line)) for n, line in enumerate(f, 1)]
  return [Entry(n, line, fields) for n, line, fields in rows
          if fields and not fields[0].startswith("#")]


def resolve(root: pathlib.Path, name: str) -> pathlib.Path:
  """``root / name``, with '.mp4' added when the name has no extension and does not exist."""
  path = root / name
  if not path.exists() and not path.suffix:
    return root / (name + ".mp4")
  return path


def collisions(entries: list[Entry]) -> list[str]:
  """One line per output name that two or more two-field entries would write."""
  by_name: dict[str, list[int]] = {}
  for entry in entries:
    if len(entry.fields) == 2:
      by_name.setdefault(entry.output_name, []).append(entry.number)
  return [f"{name}: lines {', '.join(map(str, numbers))}"
          for name, numbers in by_name.items() if len(numbers) > 1]
