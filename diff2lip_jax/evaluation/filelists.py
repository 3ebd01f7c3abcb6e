"""Test lists of the paper's evaluation: which generated video is compared with what.

Line format (Diff2Lip's `dataset/filelists/*.txt` and Wav2Lip's LRS2/LRS3/LRW test lists use
the same one): ``AUDIO_CLIP VIDEO_CLIP`` separated by white space, each a path relative to
``--root`` without the extension (``--ext``, default ``.mp4`` is appended), e.g.
``id04295/1fSjOItVYVg/00001 id04295/1fSjOItVYVg/00001`` (VoxCeleb2) or
``BRING/test/BRING_00018 WESTERN/test/WESTERN_00039`` (LRW). The first clip drives the
audio, the second gives the face video. Blank lines and lines starting with ``#`` are skipped.

settings
  reconstruction  each line pairs a clip with itself (a single clip per line is accepted as
                  well): the generated video re-creates VIDEO_CLIP from its own audio, and
                  VIDEO_CLIP is the ground truth (PSNR, SSIM; FID against its face crops).
  cross           AUDIO_CLIP differs from VIDEO_CLIP: no ground truth exists, so only LSE and
                  FID (against the face crops of VIDEO_CLIP, the footage that was dubbed).
generated video names (in ``--generated_dir``), ``--naming``
  diff2lip  ``<AUDIO_CLIP with / as .>_<VIDEO_CLIP with / as .>.mp4`` (the original
            `generate.py --generate_from_filelist`).
  wav2lip   ``<line number counting from 0>.mp4`` (Wav2Lip's `gen_videos_from_filelist.py`,
            which numbers every line of the file).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Sequence

SETTINGS = ("reconstruction", "cross")
NAMINGS = ("diff2lip", "wav2lip")


@dataclasses.dataclass(frozen=True)
class EvalItem:
  """One generated video to evaluate.

  key: unique name of the item in the results (the test-list line or the generated path).
  generated: the generated video (its own audio track is the driving audio).
  reference: ground truth for PSNR/SSIM, or None.
  real: the real video whose face crops form FID's real set, or None.
  """
  key: str
  generated: str
  reference: str | None = None
  real: str | None = None


def generated_name(audio_clip: str, video_clip: str, line_index: int, naming: str) -> str:
  """File name of the generated video of one test-list line (see the module docstring)."""
  if naming == "diff2lip":
    return f"{audio_clip.replace('/', '.')}_{video_clip.replace('/', '.')}.mp4"
  if naming == "wav2lip":
    return f"{line_index}.mp4"
  raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")


def parse_filelist(path: str | os.PathLike, setting: str, *, generated_dir: str | os.PathLike,
                   root: str | os.PathLike, naming: str = "diff2lip",
                   ext: str = ".mp4") -> list[EvalItem]:
  """Items of a test list (format in the module docstring), in file order.

  Raises:
    ValueError: unknown setting/naming, a malformed line (file and line number named), a
      cross line without two clips or a reconstruction line pairing two different clips.
      A line repeated under the diff2lip naming names the same generated file: kept once.
  """
  if setting not in SETTINGS:
    raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
  if naming not in NAMINGS:
    raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")
  root, out_dir = pathlib.Path(root), pathlib.Path(generated_dir)
  items, seen = [], {}
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  for index, line in enumerate(lines):
    words = line.split()
    if not words or words[0].startswith("#"):
      continue
    where = f"{os.fspath(path)}:{index + 1}"
    if len(words) > 2 or (setting == "cross" and len(words) != 2):
      raise ValueError(f"{where}: expected 'AUDIO_CLIP VIDEO_CLIP' (2 paths without extension), "
                       f"got {len(words)} fields: {line.strip()!r}")
    audio_clip, video_clip = words[0], words[-1]
    if setting == "reconstruction" and audio_clip != video_clip:
      raise ValueError(f"{where}: a reconstruction line pairs a clip with itself, got "
                       f"{audio_clip!r} and {video_clip!r}; use --setting cross")
    key = f"{audio_clip} {video_clip}"
    if key in seen and naming == "diff2lip":
      continue   # the same generated file: evaluated once
    seen[key] = index + 1
    if naming == "wav2lip":
      key = f"{index}: {key}"
    video = str(root / (video_clip + ext))
    items.append(EvalItem(key=key, generated=str(out_dir / generated_name(
        audio_clip, video_clip, index, naming)),
        reference=video if setting == "reconstruction" else None, real=video))
  if not items:
    raise ValueError(f"{os.fspath(path)}: no test pairs in the file")
  return items


def pair_items(pairs: Sequence[tuple[str, str | None]]) -> list[EvalItem]:
  """Items of explicit ``(generated, reference or None)`` pairs; the reference is also FID's
  real video."""
  return [EvalItem(key=generated, generated=generated, reference=reference, real=reference)
          for generated, reference in pairs]


def shard(items: Sequence[EvalItem], index: int, count: int) -> list[EvalItem]:
  """Process ``index`` of ``count`` takes items ``index::count``."""
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"process index must be in 0..count-1, got {index} of {count}")
  return list(items[index::count])
