"""Lip-sync inference: the jitted face-crop sampler (notebook API) and the video pipeline.

Notebook use::

    from diff2lip_jax import inference
    sampler = inference.Diff2LipSampler.from_checkpoint("runs/synthetic", respacing="ddim10")
    mels = inference.mel_windows(mel, 0, len(frames))          # [N, 80, 16]
    crops = sampler.generate(frames, refs, mels)                 # uint8 [N, S, S, 3]

Whole videos: :func:`lip_sync_video` (what ``python -m diff2lip_jax.sample`` runs).
"""
from data_pipelines.audio import count_mel_windows, mel_window_starts, mel_windows
from diff2lip_jax.inference.sampler import (Diff2LipSampler, InferenceInputError, PendingCrops,
                                            check_params)
from diff2lip_jax.inference.pipeline import (CropSpec, LipSyncResult, lip_sync_video,
                                             parse_crop, pingpong_index)

__all__ = ["Diff2LipSampler", "PendingCrops", "InferenceInputError", "mel_windows",
           "count_mel_windows", "mel_window_starts", "check_params", "CropSpec",
           "LipSyncResult", "lip_sync_video", "parse_crop", "pingpong_index"]
