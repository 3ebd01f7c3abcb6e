"""Lip-sync inference: the face-crop sampler (notebook API) and the video pipeline.

Notebook use::

    from diff2lip_jax import inference
    sampler = inference.Diff2LipSampler.from_checkpoint("runs/synthetic", respacing="ddim10")
    mels = inference.mel_windows(mel, 0, len(frames))          # [N, 80, 16]
    crops = sampler.generate(frames, refs, mels)                 # uint8 [N, S, S, 3]

Whole videos: :func:`lip_sync_video` (what ``python -m diff2lip_jax.sample`` runs), in stages:
``scan`` (first pass over the video), per-frame boxes (``data_pipelines.face_crops``),
``stream`` (decode -> crop -> sample -> paste -> encode) and ``pipeline`` (the orchestration).
"""
from data_pipelines.audio import count_mel_windows, mel_window_starts, mel_windows
from data_pipelines.face_crops import CropError, CropSpec, frame_boxes, parse_crop
from diff2lip_jax.inference.pipeline import (LipSyncResult, check_inputs, length_note,
                                             lip_sync_video)
from diff2lip_jax.inference.sampler import (Diff2LipSampler, InferenceInputError, PendingCrops,
                                            check_params, shared_noise, to_uint8)
from diff2lip_jax.inference.scan import VideoScan, frame_at, scan_video
from diff2lip_jax.inference.stream import FramePlan, in_background, pingpong_index

__all__ = ["Diff2LipSampler", "PendingCrops", "InferenceInputError", "mel_windows",
           "count_mel_windows", "mel_window_starts", "check_params", "shared_noise", "to_uint8",
           "CropSpec", "CropError", "parse_crop", "frame_boxes", "LipSyncResult",
           "lip_sync_video", "pingpong_index", "VideoScan", "scan_video", "frame_at",
           "FramePlan", "in_background", "check_inputs", "length_note"]
