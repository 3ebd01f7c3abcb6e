"""Drawing and voice of the synthetic people used by :mod:`data_pipelines.synthetic`.

Geometry lives in crop-normalised coordinates (u right, v down, the 128x128 crop is [0, 1]^2).
Face parts are placed in head-local coordinates that follow a per-frame translation and scale
(small head motion). Shapes are anti-aliased super-ellipses painted over all frames at once
([T, rows, cols] numpy broadcasting, restricted to each shape's bounding box), which keeps a
75-frame 128x128 clip at a few tens of milliseconds. The voice (:func:`synthesize_speech`) is a
sawtooth glottal source through three formant resonators, at the identity's pitch and vocal-tract
scale.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import scipy.signal

_SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 135], [198, 140, 100],
                        [170, 115, 80], [141, 90, 60], [110, 70, 45], [80, 52, 35]], np.float32)
_HAIR_COLORS = np.array([[20, 16, 14], [60, 40, 25], [110, 75, 40], [200, 160, 90],
                         [150, 60, 30], [160, 160, 160], [40, 30, 30]], np.float32)
_IRIS_COLORS = np.array([[70, 45, 25], [40, 90, 150], [60, 110, 60], [30, 25, 20]], np.float32)
HAIR_STYLES = ("short", "long", "afro", "bald")
MOUTH_Y = 0.2  # local offset of the mouth line below the head centre (mean; varies per face)
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240],
                    [530, 1840, 2480], [570, 840, 2410], [660, 1720, 2410]], np.float64)
_FORMANT_BANDWIDTHS = np.array([90.0, 110.0, 170.0])
_PEAK_SYLLABLE_RMS = 0.1  # loudest syllable at -20 dBFS


@dataclasses.dataclass
class FaceIdentity:
  """Appearance and voice of one synthetic person (lengths in crop-normalised units)."""
  skin: np.ndarray
  hair: np.ndarray
  iris: np.ndarray
  shirt: np.ndarray
  background: tuple[np.ndarray, np.ndarray, float, np.ndarray]  # colours, angle, blobs
  hair_style: str
  center: tuple[float, float]
  face_size: tuple[float, float]
  face_power: float
  shade: float
  eye_y: float
  eye_dx: float
  eye_size: tuple[float, float]
  mouth_y: float
  mouth_half_width: float
  lip_thickness: float
  max_open: float
  neck_half_width: float
  f0: float
  tract_scale: float

  def describe(self) -> dict:
    """JSON-friendly summary for manifests."""
    return {"skin": self.skin.round().astype(int).tolist(), "hair_style": self.hair_style,
            "hair": self.hair.round().astype(int).tolist(), "face_size": list(self.face_size),
            "f0": round(self.f0, 1), "max_open": round(self.max_open, 4)}


@dataclasses.dataclass
class Motion:
  """Per-frame head translation (dx, dy), scale and eye openness, all [T] float32."""
  dx: np.ndarray
  dy: np.ndarray
  scale: np.ndarray
  eye_open: np.ndarray


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
  tone = rng.uniform(0, len(_SKIN_TONES) - 1)
  low = int(tone)
  skin = _SKIN_TONES[low] + (tone - low) * (_SKIN_TONES[min(low + 1, 7)] - _SKIN_TONES[low])
  skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 255).astype(np.float32)
  blobs = np.concatenate([rng.uniform(0, 1, (4, 2)), rng.uniform(0.1, 0.35, (4, 1)),
                          rng.uniform(0, 255, (4, 3))], axis=1).astype(np.float32)
  colors = rng.uniform(0, 255, (2, 3)).astype(np.float32)
  background = (colors[0], colors[1], float(rng.uniform(0, 2 * np.pi)), blobs)
  half_height = float(rng.uniform(0.40, 0.44))
  return FaceIdentity(
      skin=skin, hair=_HAIR_COLORS[rng.integers(len(_HAIR_COLORS))] * rng.uniform(0.85, 1.15),
      iris=_IRIS_COLORS[rng.integers(len(_IRIS_COLORS))], shirt=rng.uniform(20, 235, 3),
      background=background, hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
      center=(float(rng.uniform(0.48, 0.52)), float(rng.uniform(0.50, 0.53))),
      face_size=(float(rng.uniform(0.31, 0.36)), half_height),
      face_power=float(rng.choice([2.0, 2.5, 3.0])), shade=float(rng.uniform(-0.12, 0.12)),
      eye_y=float(rng.uniform(-0.13, -0.08)), eye_dx=float(rng.uniform(0.11, 0.14)),
      eye_size=(float(rng.uniform(0.045, 0.058)), float(rng.uniform(0.022, 0.03))),
      mouth_y=float(rng.uniform(MOUTH_Y - 0.015, MOUTH_Y + 0.015)),
      mouth_half_width=float(rng.uniform(0.08, 0.105)),
      lip_thickness=float(rng.uniform(0.018, 0.026)), max_open=float(rng.uniform(0.085, 0.1)),
      neck_half_width=float(rng.uniform(0.22, 0.25)),
      f0=float(rng.choice([rng.uniform(95, 150), rng.uniform(165, 250)])),
      tract_scale=float(rng.uniform(0.9, 1.15)))


def sample_motion(rng: np.random.Generator, num_frames: int, fps: float) -> Motion:
  """Smooth small head motion (<= ~3 px at 128) and occasional 4-frame blinks."""
  t = np.arange(num_frames) / fps

  def wander(amplitude):
    phases, freqs = rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.15, 0.8, 2)
    weights = rng.uniform(0.3, 1.0, 2)
    return amplitude * (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])
                        ).sum(0) / weights.sum()

  eye_open = np.ones(num_frames)
  frame = int(rng.integers(0, int(2 * fps)))
  while frame < num_frames:
    profile = np.array([0.5, 0.05, 0.3, 0.8])[:num_frames - frame]
    eye_open[frame:frame + profile.size] = profile
    frame += int(rng.uniform(2.0, 5.0) * fps)
  as32 = lambda x: np.asarray(x, np.float32)
  return Motion(as32(wander(0.022)), as32(wander(0.016)), as32(1 + wander(0.02)), as32(eye_open))


def crop_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
  """Pixel-centre coordinates (u of each column, v of each row) of a size x size crop."""
  centres = ((np.arange(size) + 0.5) / size).astype(np.float32)
  return centres, centres


def voxceleb_crop_box(size: int) -> np.ndarray:
  """(x0, y0, x1, y1) of the reference's VoxCeleb2 crop in a size x size frame, float32 [4]."""
  col0 = int(size * 1.8 / 8)
  return np.array([col0, 0, size - col0, size - int(size * 2.36 / 8)], np.float32)


def voxceleb_frame_grid(size: int) -> tuple[np.ndarray, np.ndarray, Callable]:
  """Grid of a size x size full frame whose reference VoxCeleb2 crop is the unit crop.

  The reference crops rows [0, H - int(H*2.36/8)) and columns [int(W*1.8/8), W - int(W*1.8/8))
  and resizes to 128x128. Returns (u, v, to_full) where to_full maps normalised
  [..., 4] boxes to full-frame pixels.
  """
  crop_h = size - int(size * 2.36 / 8)
  col0 = int(size * 1.8 / 8)
  crop_w = size - 2 * col0
  u = ((np.arange(size) - col0 + 0.5) / crop_w).astype(np.float32)
  v = ((np.arange(size) + 0.5) / crop_h).astype(np.float32)
  scale = np.array([crop_w, crop_h, crop_w, crop_h], np.float32)
  offset = np.array([col0, 0, col0, 0], np.float32)
  return u, v, lambda box: (box * scale + offset).astype(np.float32)


class NoisePool:
  """Sensor-like noise: a static texture plus a few temporal fields cycled per frame."""

  def __init__(self, rng: np.random.Generator, std: float, pool: int = 4):
    self.rng, self.std, self.pool, self.cache = rng, std, pool, {}

  def add(self, image: np.ndarray) -> np.ndarray:
    """float [T, H, W, 3] -> uint8 with noise added (deterministic per shape)."""
    if self.std > 0:
      shape = image.shape[1:]
      if shape not in self.cache:
        # Static texture (fixed pattern) plus temporal noise, pre-summed into a small pool.
        fields = self.rng.standard_normal((self.pool + 1,) + shape, dtype=np.float32)
        pool = (fields[0] + fields[1:]) * (0.7 * self.std) + 0.5
        self.cache[shape] = (pool, self.rng.integers(0, self.pool, 4096))
      pool, order = self.cache[shape]
      for index in range(len(image)):
        image[index] += pool[order[index % order.size]]
    else:
      image += 0.5  # round to nearest on the cast below
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8)


class _Canvas:
  """All frames of one clip being painted; shapes are given in head-local coordinates."""

  def __init__(self, face: FaceIdentity, motion: Motion, u: np.ndarray, v: np.ndarray):
    self.u, self.v = u, v
    self.x0 = (face.center[0] + motion.dx)[:, None, None]
    self.y0 = (face.center[1] + motion.dy)[:, None, None]
    self.scale = motion.scale[:, None, None]
    self.frames = len(motion.dx)
    pixel = 0.5 * (abs(float(u[1] - u[0])) + abs(float(v[1] - v[0])))
    self.pixel = pixel / self.scale  # pixel size in local units, [T, 1, 1]
    self.image = np.empty((self.frames, v.size, u.size, 3), np.float32)
    self.image[:] = _background(face, u, v)

  def _span(self, coords, origin, lo, hi):
    world = np.concatenate([(origin + self.scale * lo).ravel(), (origin + self.scale * hi).ravel()])
    pad = 2 * float(self.pixel.max()) * float(self.scale.max())
    return (int(np.searchsorted(coords, world.min() - pad)),
            int(np.searchsorted(coords, world.max() + pad)))

  def ellipse(self, cx, cy, a, b, color, power=2.0, shade=0.0, y_max=None, opacity=1.0):
    """Paint a super-ellipse ``|x/a|^p + |y/b|^p <= 1``; cx, cy, a, b scalars or [T]."""
    cx, cy, a, b = (np.broadcast_to(np.asarray(q, np.float32), (self.frames,))[:, None, None]
                    for q in (cx, cy, a, b))
    bottom = cy + b if y_max is None else np.minimum(cy + b, y_max)
    c0, c1 = self._span(self.u, self.x0, cx - a, cx + a)
    r0, r1 = self._span(self.v, self.y0, cy - b, bottom)
    if c1 <= c0 or r1 <= r0:
      return
    x = (self.u[None, None, c0:c1] - self.x0) / self.scale - cx
    y = (self.v[None, r0:r1, None] - self.y0) / self.scale - cy
    # Level-set value R = |x/a|^p + |y/b|^p; near the edge R - 1 ~ p * (distance / size).
    # alpha = clip(0.5 - (R - 1) * size / (p * pixel)) with R = |x/a|^p + |y/b|^p, since near
    # the edge R - 1 ~ p * distance / size. In-place steps: these arrays are the hot path.
    steepness = np.minimum(a, b) / (power * self.pixel)
    alpha = _abs_power(x / a, power) * steepness + (_abs_power(y / b, power) - 1.0) * steepness
    np.subtract(0.5, alpha, out=alpha)
    np.clip(alpha, 0.0, opacity, out=alpha)
    if y_max is not None:
      alpha *= np.clip(0.5 + (y_max - (y + cy)) / self.pixel, 0.0, 1.0)
    paint = np.asarray(color, np.float32)
    if shade:
      paint = paint * (1.0 + shade * np.clip(x / a, -1, 1))[..., None]
    region = self.image[:, r0:r1, c0:c1]
    change = paint - region
    change *= alpha[..., None]
    region += change


def _abs_power(t: np.ndarray, power: float) -> np.ndarray:
  squared = t * t  # the powers used are cheap products, much faster than np.power
  if power == 2.0:
    return squared
  if power == 2.5:
    return squared * np.sqrt(np.abs(t))
  if power == 3.0:
    return squared * np.abs(t)
  if power == 4.0:
    return squared * squared
  return np.abs(t) ** power


def _background(face: FaceIdentity, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  first, second, angle, blobs = face.background
  ramp = np.clip(0.5 + (np.cos(angle) * (u[None, :] - 0.5) + np.sin(angle) * (v[:, None] - 0.5)),
                 0, 1)[..., None]
  image = first + ramp * (second - first)
  for bx, by, radius, *color in blobs:
    weight = np.exp(-((u[None, :] - bx) ** 2 + (v[:, None] - by) ** 2) / (2 * radius ** 2))
    image = image + 0.5 * weight[..., None] * (np.asarray(color) - image)
  return image.astype(np.float32)


def mouth_geometry(face: FaceIdentity, opening: np.ndarray):
  """Local mouth centre y, inner half-height and jaw drop for each frame's opening in [0, 1]."""
  gap = opening.astype(np.float32) * face.max_open
  centre = face.mouth_y + 0.3 * gap  # the lower lip and jaw do most of the moving
  inner_half = 0.5 * gap + 0.004
  return centre, inner_half, 0.3 * gap


def render_frames(face: FaceIdentity, motion: Motion, opening: np.ndarray, u: np.ndarray,
                  v: np.ndarray, noise: NoisePool) -> np.ndarray:
  """uint8 [T, len(v), len(u), 3] frames of ``face`` with mouth ``opening`` [T] in [0, 1]."""
  canvas = _Canvas(face, motion, u, v)
  skin, hair = face.skin, face.hair
  fa, fb = face.face_size
  mouth_cy, inner_half, jaw = mouth_geometry(face, opening)
  if face.hair_style == "long":
    canvas.ellipse(0, 0.12, fa * 1.3, fb * 1.15, hair)
  elif face.hair_style == "afro":
    canvas.ellipse(0, -0.12, fa * 1.4, fb * 0.98, hair)
  canvas.ellipse(0, fb + 0.3, 0.62, 0.22, face.shirt)
  canvas.ellipse(0, 0.38, face.neck_half_width, 0.2, skin * 0.8, power=4.0)
  for side in (-1, 1):
    canvas.ellipse(side * fa * 0.97, -0.03, 0.035, 0.07, skin * 0.9)
  canvas.ellipse(0, jaw / 2, fa, fb + jaw / 2, skin, power=face.face_power, shade=face.shade)
  if face.hair_style != "bald":
    hairline = -fb + 0.2 + (0.03 if face.hair_style == "afro" else 0.0)
    canvas.ellipse(0, -0.04, fa * 1.04, fb * 0.99, hair, y_max=hairline)
  open_eye = face.eye_size[1] * motion.eye_open
  for side in (-1, 1):
    ex = side * face.eye_dx
    canvas.ellipse(ex, face.eye_y - 0.065, 0.06, 0.011, hair * 0.8)
    canvas.ellipse(ex, face.eye_y, face.eye_size[0], open_eye, [240, 240, 235])
    canvas.ellipse(ex, face.eye_y, 0.021, np.minimum(0.021, open_eye), face.iris)
    canvas.ellipse(ex, face.eye_y, 0.009, np.minimum(0.009, open_eye), [10, 10, 10])
  canvas.ellipse(0, 0.02, 0.028, 0.06, skin * 0.88, opacity=0.6)  # nose shading
  for side in (-1, 1):
    canvas.ellipse(side * 0.018, 0.07, 0.012, 0.007, skin * 0.5)  # nostril
  lips = skin * np.array([0.8, 0.55, 0.55], np.float32) + np.array([40, 0, 0], np.float32)
  canvas.ellipse(0, mouth_cy, face.mouth_half_width, inner_half + face.lip_thickness,
                 np.clip(lips, 0, 255))
  interior = skin * 0.16 + np.array([12, 2, 4], np.float32)
  canvas.ellipse(0, mouth_cy, face.mouth_half_width * (0.8 + 0.1 * opening), inner_half, interior)
  return noise.add(canvas.image)


def boxes(face: FaceIdentity, motion: Motion, opening: np.ndarray,
          image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Face and mouth boxes [T, 4] (x0, y0, x1, y1) in crop pixels."""
  fa, fb = face.face_size
  mouth_cy, inner_half, jaw = mouth_geometry(face, opening)
  x0, y0, s = face.center[0] + motion.dx, face.center[1] + motion.dy, motion.scale

  def to_pixels(left, top, right, bottom):
    return (np.stack([x0 + s * left, y0 + s * top, x0 + s * right, y0 + s * bottom], axis=1)
            * image_size).astype(np.float32)

  zeros = np.zeros_like(jaw)
  face_box = to_pixels(zeros - fa, zeros - fb, zeros + fa, fb + jaw)
  half = inner_half + face.lip_thickness
  mouth_box = to_pixels(zeros - face.mouth_half_width, mouth_cy - half,
                        zeros + face.mouth_half_width, mouth_cy + half)
  return face_box, mouth_box


def _resonate(signal: np.ndarray, frequency: float, bandwidth: float, sr: int) -> np.ndarray:
  radius = np.exp(-np.pi * bandwidth / sr)
  angle = 2 * np.pi * frequency / sr
  gain = (1 - radius) * np.sqrt(1 - 2 * radius * np.cos(2 * angle) + radius ** 2)
  return scipy.signal.lfilter([gain], [1, -2 * radius * np.cos(angle), radius ** 2], signal)


def synthesize_speech(rng: np.random.Generator, num_samples: int, sample_rate: int = 16000,
                      f0: float = 140.0, tract_scale: float = 1.0) -> np.ndarray:
  """Speech-like audio: [num_samples] float32, syllables separated by gaps and pauses."""
  wav = np.zeros(num_samples)
  cursor = int(rng.uniform(0.03, 0.25) * sample_rate)
  attack, release = int(0.025 * sample_rate), int(0.045 * sample_rate)
  while cursor < num_samples:
    if rng.random() < 0.5:  # fricative onset: high-passed noise burst
      burst = int(rng.uniform(0.02, 0.06) * sample_rate)
      noise = np.diff(rng.standard_normal(burst + 1)) * rng.uniform(0.05, 0.2)
      end = min(cursor + burst, num_samples)
      wav[cursor:end] += (noise * np.hanning(burst))[:end - cursor]
      cursor = end
    length = int(rng.uniform(0.12, 0.32) * sample_rate)
    t = np.arange(length) / sample_rate
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6))
                  - 0.1 * t)
    phase = np.cumsum(pitch) / sample_rate
    source = 2 * (phase % 1.0) - 1 + 0.02 * rng.standard_normal(length)
    vowel = _VOWELS[rng.integers(len(_VOWELS))] * tract_scale
    voiced = source
    for frequency, bandwidth in zip(vowel, _FORMANT_BANDWIDTHS):
      voiced = _resonate(voiced, frequency, bandwidth, sample_rate)
    envelope = np.ones(length)
    envelope[:attack] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, attack))
    envelope[-release:] = 0.5 + 0.5 * np.cos(np.linspace(0, np.pi, release))
    envelope *= 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(3, 7) * t)
    voiced *= envelope * rng.uniform(0.25, 1.0) / (np.sqrt(np.mean(voiced ** 2)) + 1e-12)
    end = min(cursor + length, num_samples)
    wav[cursor:end] += voiced[:end - cursor]
    gap = rng.uniform(0.25, 0.6) if rng.random() < 0.15 else rng.uniform(0.03, 0.15)
    cursor = end + int(gap * sample_rate)
  # Scale so a full-amplitude syllable sits at -20 dBFS, whatever the random draws were.
  wav *= _PEAK_SYLLABLE_RMS
  wav += 3e-4 * rng.standard_normal(num_samples)  # room noise floor, about -70 dBFS
  return np.clip(wav, -1.0, 1.0).astype(np.float32)
