"""Seam visibility of the paste-back modes on real photographs: gradient energy across the seam.

  python benchmarks/bench_seams.py [--pictures docs]     # prints a Markdown table

For each photograph with a face (scikit-image's astronaut at 1x and 2x, the cameraman), the
face box is found with the bundled HOG detector and squared (``crops.square_boxes``), cropped
to 128x128 and a stand-in for the model's output is made from the true crop, so that every
difference from the original photo is the seam (the model's real outputs add their own
content; these variants isolate what the paste does):

  shift  brightness x1.12 and colour shift (R +10, B -10): a generated face a little off in tone;
  blur   Gaussian blur, sigma 1.5 px at 128x128: a generated face softer than the frame.

Each is pasted back with every ``crops.PASTE_MODES`` (plus soft with ``color_match``).
Metric (``seam_energy``): the gradient energy (squared forward differences, summed over RGB)
of the change the paste made, ``pasted - original``, in the band of pixels within ``band`` px
of the pasted region's border (both sides; ``band`` covers the soft mask's whole transition),
divided by the original photo's gradient energy inside the face box (the face's own texture):
a hard paste puts a step on the border, a soft one spreads it into a ramp. ``line``: the same
change energy on the 2-px line either side of the border, relative to the photo's own energy
there (how much the border adds where a hard seam would sit). The region of "box" is the whole
box; the others the lower half.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

from data_pipelines import crops

VARIANTS = ("shift", "blur")
MODES = ("box", "lower_half", "soft", "soft+color_match")


def gradient_energy(image: np.ndarray) -> np.ndarray:
  """``[H, W]`` squared gradient magnitude (forward differences, 0 at the last row/column)."""
  image = np.asarray(image, np.float64)
  energy = np.zeros(image.shape[:2])
  energy[:, :-1] += (np.diff(image, axis=1) ** 2).sum(-1)
  energy[:-1] += (np.diff(image, axis=0) ** 2).sum(-1)
  return energy


def border_band(shape: tuple[int, int], region: tuple[int, int, int, int], band: int) -> np.ndarray:
  """``[H, W]`` bool: pixels within ``band`` px (Chebyshev) of the border of ``region``
  ``(x1, y1, x2, y2)``, on both sides."""
  x1, y1, x2, y2 = region
  outer = np.zeros(shape, bool)
  outer[max(y1 - band, 0):y2 + band, max(x1 - band, 0):x2 + band] = True
  inner = np.zeros(shape, bool)
  inner[y1 + band:max(y2 - band, y1 + band), x1 + band:max(x2 - band, x1 + band)] = True
  return outer & ~inner


def seam_energy(original: np.ndarray, pasted: np.ndarray, region: tuple[int, int, int, int],
                face: tuple[int, int, int, int], band: int) -> dict:
  """How strongly the paste's border shows, relative to the face's own texture.

  ``seam/face``: mean squared gradient of the change ``pasted - original`` over the band of
  ``band`` px around the border of ``region`` (a hard paste puts a step there, a soft one a
  gentle ramp), divided by the mean squared gradient of ``original`` over the face box.
  ``line``: the same for the 2-px line on each side of the border (where a hard seam sits),
  as a fraction of the original photo's own gradient energy on that line.
  """
  change = np.asarray(pasted, np.float64) - np.asarray(original, np.float64)
  x1, y1, x2, y2 = face
  face_energy = gradient_energy(original)[y1:y2, x1:x2].mean()
  seam = gradient_energy(change)
  ring, line = border_band(original.shape[:2], region, band), border_band(original.shape[:2],
                                                                          region, 2)
  return {"seam/face": float(seam[ring].mean() / face_energy),
          "line": float(seam[line].mean() / gradient_energy(original)[line].mean())}


def stand_in(crop: np.ndarray, variant: str) -> np.ndarray:
  """A "generated" crop made from the true one (see the module docstring)."""
  crop = crop.astype(np.float64)
  if variant == "shift":
    out = crop * 1.12 + np.array([10.0, 0.0, -10.0])
  elif variant == "blur":
    from scipy.ndimage import gaussian_filter  # pylint: disable=import-outside-toplevel
    out = gaussian_filter(crop, sigma=(1.5, 1.5, 0))
  else:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  return np.clip(out, 0, 255).astype(np.float32)


def photographs() -> dict[str, np.ndarray]:
  from skimage import data  # pylint: disable=import-outside-toplevel
  astronaut = data.astronaut()
  big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024), Image.BICUBIC))
  cameraman = np.repeat(data.camera()[..., None], 3, axis=-1)
  return {"astronaut 512": astronaut, "astronaut 1024": big, "cameraman 512": cameraman}


def paste(frame: np.ndarray, generated: np.ndarray, box: np.ndarray, mode: str) -> np.ndarray:
  kind, _, extra = mode.partition("+")
  return crops.paste_back(frame[None], generated[None], box[None], kind,
                          color_match=extra == "color_match")[0]


def measure(frame: np.ndarray, box: np.ndarray, face: tuple, variant: str) -> dict:
  """Seam numbers of every mode for one photograph and stand-in; also returns the pictures."""
  side = int(box[2] - box[0])
  generated = stand_in(crops.crop_and_resize(frame[None], box[None], 128, allow_outside=True)[0],
                       variant)
  band = max(3, int(round(2 * crops.ERODE_SIGMAS * crops.FEATHER * side)) + 2)
  rows, pictures = {}, {"original": frame}
  for mode in MODES:
    out = paste(frame, generated, box, mode)
    top = 0 if mode == "box" else (box[3] - box[1]) // 2
    region = (int(box[0]), int(box[1] + top), int(box[2]), int(box[3]))
    rows[mode] = seam_energy(frame, out, region, face, band)
    pictures[mode] = out
  return {"rows": rows, "pictures": pictures, "band": band}


def save_strip(pictures: dict, box: np.ndarray, path: str, size: int = 320) -> None:
  """Side-by-side PNG of the face region of each picture, each upscaled to ``size`` px."""
  x1, y1, x2, y2 = (int(v) for v in box)
  margin = (x2 - x1) // 5
  tiles = []
  for name, image in pictures.items():
    region = image[max(y1 - margin, 0):y2 + margin, max(x1 - margin, 0):x2 + margin]
    tile = Image.fromarray(np.asarray(region, np.uint8)).resize((size, size), Image.LANCZOS)
    ImageDraw.Draw(tile).text((6, 6), name, fill=(255, 255, 0))
    tiles.append(tile)
  strip = Image.new("RGB", (size * len(tiles), size))
  for i, tile in enumerate(tiles):
    strip.paste(tile, (i * size, 0))
  strip.save(path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--pictures", help="directory for before/after PNGs (astronaut 512)")
  args = parser.parse_args()
  from data_pipelines.face_detection import create_detector  # pylint: disable=import-outside-toplevel
  detector = create_detector("hog")
  print("| photo | stand-in | " + " | ".join(MODES) + " |")
  print("| --- | --- |" + " --- |" * len(MODES))
  for name, frame in photographs().items():
    dets = detector.detect(frame[None])[0]
    face = tuple(int(v) for v in dets[np.argmax(dets[:, 4]), :4])
    box = crops.square_boxes(np.array(face), frame.shape[:2])
    for variant in VARIANTS:
      result = measure(frame, box, face, variant)
      cells = [f"{r['seam/face']:.3f} / {r['line']:.2f}" for r in result["rows"].values()]
      print(f"| {name} | {variant} | " + " | ".join(cells) + " |")
      if args.pictures and name == "astronaut 512":
        save_strip(result["pictures"], box,
                   os.path.join(args.pictures, f"paste_back_{variant}.png"))
  print("\ncells: seam/face (change energy in the seam band / face texture energy) / line "
        "(change energy on the border line / the photo's own energy there); lower is less visible")


if __name__ == "__main__":
  main()
