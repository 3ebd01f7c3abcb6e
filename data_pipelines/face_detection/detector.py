"""Batched S3FD face detection on video frames."""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.face_detection import boxes as box_ops
from data_pipelines.face_detection import scaling
from diff2lip_jax.porting.s3fd import load_s3fd_params
from data_pipelines.face_detection.s3fd import BGR_MEAN, S3FD


def preprocess(frames_rgb: jax.Array) -> jax.Array:
  """RGB frames `[N, H, W, 3]` (uint8 or float in 0..255) -> BGR minus mean, float32.

  Diff2Lip reads frames as RGB and face-alignment's `get_detections_for_batch` flips them to
  BGR before subtracting the Caffe mean (104, 117, 123), which is what S3FD was trained on.
  """
  bgr = frames_rgb.astype(jnp.float32)[..., ::-1]
  return bgr - jnp.asarray(BGR_MEAN, jnp.float32)


class FaceDetector:
  """S3FD detector with the reference's post-processing.

  Args:
    params: S3FD parameters, `{"params": ...}` (from `load_s3fd_params`) or the inner dict.
    score_threshold: minimum face probability of a returned box (reference 0.5).
    nms_threshold: IoU above which lower-scoring boxes are suppressed (reference 0.3).
    dtype: compute dtype of the network (float32 reproduces the reference).
    max_side: detect on frames scaled so their longer side is <= max_side and scale the boxes
      back (None, the default: full resolution, as the reference). `create_detector` uses 320:
      S3FD's cost is proportional to the pixel count (~0.5 CPU-s per 320x180 frame, ~20 per
      1080p frame).
  """

  name = "S3FD"

  def __init__(self, params: Mapping[str, Any], score_threshold: float = 0.5,
               nms_threshold: float = 0.3, dtype: Any = jnp.float32,
               max_side: int | None = None):
    self.variables = params if "params" in params else {"params": params}
    self.score_threshold = float(score_threshold)
    self.nms_threshold = float(nms_threshold)
    self.max_side = max_side
    model = S3FD(dtype=dtype)

    def forward(variables, frames):
      return box_ops.scores_and_boxes(model.apply(variables, preprocess(frames)))
    self._forward = jax.jit(forward)

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> "FaceDetector":
    """Detector from a user-supplied S3FD checkpoint file (e.g. `s3fd.pth`); never downloads."""
    return cls(load_s3fd_params(path), **kwargs)

  def scores_and_boxes(self, frames_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw anchors for one batch: scores `[N, A]`, boxes `[N, A, 4]` (x1, y1, x2, y2)."""
    scores, boxes = self._forward(self.variables, jnp.asarray(frames_rgb))
    return np.asarray(scores), np.asarray(boxes)

  def detect(self, frames_rgb: np.ndarray, batch_size: int = 16) -> list[np.ndarray]:
    """Faces in every frame.

    Args:
      frames_rgb: `[T, H, W, 3]` RGB frames (uint8, or float in 0..255), all the same size.
      batch_size: frames per network call; the last batch is padded to this size so the
        network compiles once per frame size.
    Returns:
      T arrays `[K, 5]` float32 (x1, y1, x2, y2, score) in pixels, best score first; K may be 0.
    """
    frames_rgb = np.asarray(frames_rgb)
    if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3:
      raise ValueError(f"detect: frames must be [T, H, W, 3] RGB, got {frames_rgb.shape}")
    if batch_size < 1:
      raise ValueError(f"detect: batch_size must be >= 1, got {batch_size}")
    height, width = frames_rgb.shape[1:3]
    size = scaling.detection_size(height, width, self.max_side)
    results = []
    for start in range(0, len(frames_rgb), batch_size):
      batch = scaling.resize_frames(frames_rgb[start:start + batch_size], size)
      n = len(batch)
      if n < batch_size and len(frames_rgb) > batch_size:
        batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)])
      scores, boxes = self.scores_and_boxes(batch)
      found = [box_ops.select_detections(scores[i], boxes[i], self.score_threshold,
                                         self.nms_threshold) for i in range(n)]
      results += scaling.scale_detections(found, width / size[1], height / size[0])
    return results
