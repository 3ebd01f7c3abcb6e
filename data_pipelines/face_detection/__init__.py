"""S3FD face detection (Flax) and the Wav2Lip/Diff2Lip face-box policy for videos.

Weights come from a user-supplied S3FD checkpoint (`FaceDetector.from_checkpoint("s3fd.pth")`);
nothing is downloaded.
"""
from data_pipelines.face_detection.boxes import (decode, nms, prior_boxes, scores_and_boxes,
                                                 select_detections)
from diff2lip_jax.porting.s3fd import (expected_torch_shapes, load_s3fd_params,
                                                   params_from_torch)
from data_pipelines.face_detection.detector import FaceDetector, preprocess
from data_pipelines.face_detection.s3fd import S3FD, init_s3fd_params
from data_pipelines.face_detection.video_boxes import (NO_FACE_POLICIES, NoFaceError,
                                                       best_face_boxes, boxes_from_detections,
                                                       face_boxes_for_video, fill_missing_boxes,
                                                       pad_boxes, smooth_boxes)

__all__ = [
    "S3FD", "init_s3fd_params", "params_from_torch", "load_s3fd_params",
    "expected_torch_shapes", "FaceDetector", "preprocess", "prior_boxes", "decode",
    "scores_and_boxes", "select_detections", "nms", "face_boxes_for_video",
    "boxes_from_detections", "best_face_boxes", "fill_missing_boxes", "pad_boxes",
    "smooth_boxes", "NoFaceError", "NO_FACE_POLICIES",
]
