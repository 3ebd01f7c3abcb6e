"""Data curation for lip-sync training: scene cuts, face filters, SyncNet offset / confidence
with audio shift, and a report. Per clip: `curate_clip` -> `ClipCuration`; `apply_segment`
cuts the kept shots out; `write_report` summarises many decisions. See `curate` for the steps
and `sync` for the offset sign convention (> 0: the audio leads the video)."""
from data_pipelines.curation.curate import (REASONS, ClipCuration, CurationConfig,
                                            SegmentDecision, apply_segment, curate_clip,
                                            segment_clip_id)
from data_pipelines.curation.faces import FaceStats, best_detections, face_stats
from data_pipelines.curation.report import read_decisions, summarize, write_report
from data_pipelines.curation.scene_cuts import (SceneCutConfig, detect_scene_cuts,
                                                shots_from_cuts)
from data_pipelines.curation.sync import (AlignedSpan, SyncMeasurement, aligned_span,
                                          audio_shift_samples, expert_measurer, make_measurer,
                                          synthetic_measurer, syncnet_v2_measurer)

__all__ = ["REASONS", "AlignedSpan", "ClipCuration", "CurationConfig", "FaceStats",
           "SceneCutConfig", "SegmentDecision", "SyncMeasurement", "aligned_span",
           "apply_segment", "audio_shift_samples", "best_detections", "curate_clip",
           "detect_scene_cuts",
           "expert_measurer", "face_stats", "make_measurer", "read_decisions", "segment_clip_id",
           "shots_from_cuts", "summarize", "synthetic_measurer", "syncnet_v2_measurer",
           "write_report"]
