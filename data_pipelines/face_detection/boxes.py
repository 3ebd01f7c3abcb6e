"""S3FD post-processing: prior boxes, box decoding, score selection and NMS.

Follows face-alignment's `sfd/detect.py` + `bbox.py`: softmax over (background, face), one
square prior per cell of each map (centre `stride/2 + index*stride`, side `4*stride`), SSD
decoding with variances (0.1, 0.2), greedy NMS at IoU 0.3 with the "+1 pixel" area convention,
and a final score threshold of 0.5.

The reference first keeps candidates scoring > 0.05, runs NMS, then drops scores <= 0.5. In
greedy NMS a box can only suppress lower-scoring boxes, so thresholding at 0.5 *before* NMS
keeps exactly the same boxes; we do that because it is much cheaper.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.face_detection.s3fd import STRIDES

VARIANCES = (0.1, 0.2)


def prior_boxes(height: int, width: int, stride: int) -> np.ndarray:
  """Priors of an `[height, width]` map, row-major: `[height*width, 4]` (cx, cy, w, h) float32."""
  ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  cx = stride / 2 + xs.reshape(-1) * stride
  cy = stride / 2 + ys.reshape(-1) * stride
  side = np.full_like(cx, 4.0 * stride, dtype=np.float64)
  return np.stack([cx, cy, side, side], axis=-1).astype(np.float32)


def decode(loc: jax.Array, priors: jax.Array,
           variances: Sequence[float] = VARIANCES) -> jax.Array:
  """SSD decoding `[..., 4]` (dx, dy, dw, dh) + priors (cx, cy, w, h) -> (x1, y1, x2, y2)."""
  centre = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
  size = priors[..., 2:] * jnp.exp(loc[..., 2:] * variances[1])
  top_left = centre - size / 2
  return jnp.concatenate([top_left, top_left + size], axis=-1)


def scores_and_boxes(outputs: Sequence[jax.Array],
                     strides: Sequence[int] = STRIDES) -> tuple[jax.Array, jax.Array]:
  """All anchors of all scales: S3FD outputs (NHWC) -> face scores `[N, A]`, boxes `[N, A, 4]`.

  Anchors are ordered by scale, then row, then column. Works inside `jax.jit`.
  """
  if len(outputs) != 2 * len(strides):
    raise ValueError(f"expected {2 * len(strides)} S3FD outputs, got {len(outputs)}")
  all_scores, all_boxes = [], []
  for i, stride in enumerate(strides):
    cls, reg = outputs[2 * i], outputs[2 * i + 1]
    n, h, w, _ = cls.shape
    score = jax.nn.softmax(cls.astype(jnp.float32), axis=-1)[..., 1]
    priors = jnp.asarray(prior_boxes(h, w, stride))
    all_scores.append(score.reshape(n, h * w))
    all_boxes.append(decode(reg.astype(jnp.float32).reshape(n, h * w, 4), priors[None]))
  return jnp.concatenate(all_scores, axis=1), jnp.concatenate(all_boxes, axis=1)


def nms(detections: np.ndarray, iou_threshold: float) -> np.ndarray:
  """Greedy NMS of `[K, 5]` (x1, y1, x2, y2, score) -> kept row indices, best score first.

  Same as the reference: areas use `(x2 - x1 + 1) * (y2 - y1 + 1)` and a box is dropped when its
  overlap with a kept box exceeds `iou_threshold`.
  """
  if len(detections) == 0:
    return np.zeros((0,), np.int64)
  x1, y1, x2, y2, scores = (detections[:, i] for i in range(5))
  areas = (x2 - x1 + 1) * (y2 - y1 + 1)
  order = scores.argsort()[::-1]
  keep = []
  while order.size > 0:
    i, rest = order[0], order[1:]
    keep.append(i)
    w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
    h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
    overlap = w * h / (areas[i] + areas[rest] - w * h)
    order = rest[overlap <= iou_threshold]
  return np.asarray(keep, np.int64)


def select_detections(scores: np.ndarray, boxes: np.ndarray, score_threshold: float = 0.5,
                      nms_threshold: float = 0.3) -> np.ndarray:
  """One image: scores `[A]`, boxes `[A, 4]` -> faces `[K, 5]` (x1, y1, x2, y2, score).

  Rows are in NMS order, i.e. best score first.
  """
  scores = np.asarray(scores, np.float32)
  boxes = np.asarray(boxes, np.float32)
  candidates = scores > score_threshold
  dets = np.concatenate([boxes[candidates], scores[candidates, None]], axis=1)
  return dets[nms(dets, nms_threshold)]
