"""Face detection for videos: S3FD (Flax), dlib's HOG detector, tracking and the box policy.

Entry point: `create_detector(kind="auto", s3fd_weights=None)`: S3FD when its weights are
given (argument, DIFF2LIP_S3FD_WEIGHTS or ~/.cache/diff2lip/s3fd.pth), else the HOG detector
that ships inside the dlib wheel. Nothing is downloaded. Boxes per frame:
`face_boxes_and_found(detections, frame_size, pads, smooth_window, no_face)`.
"""
from data_pipelines.face_detection.boxes import (decode, nms, prior_boxes, scores_and_boxes,
                                                 select_detections)
from diff2lip_jax.porting.s3fd import (expected_torch_shapes, load_s3fd_params,
                                                   params_from_torch)
from data_pipelines.face_detection.detector import FaceDetector, preprocess
from data_pipelines.face_detection.factory import (DEFAULT_MAX_SIDE, DEFAULT_S3FD_WEIGHTS,
                                                   DETECTOR_KINDS,
                                                   S3FD_WEIGHTS_ENV, DetectorUnavailableError,
                                                   create_detector, find_s3fd_weights)
from data_pipelines.face_detection.hog import HOG_TO_S3FD, HogDetector, hog_to_s3fd
from data_pipelines.face_detection.s3fd import S3FD, init_s3fd_params
from data_pipelines.face_detection.tracking import box_iou, link_tracks, select_face_track
from data_pipelines.face_detection.video_boxes import (FACE_SELECTIONS, NO_FACE_POLICIES,
                                                       NoFaceError, best_face_boxes,
                                                       boxes_from_detections,
                                                       face_boxes_and_found,
                                                       face_boxes_for_video, fill_missing_boxes,
                                                       pad_boxes, smooth_boxes,
                                                       tracked_face_boxes)

__all__ = [
    "S3FD", "init_s3fd_params", "params_from_torch", "load_s3fd_params",
    "expected_torch_shapes", "FaceDetector", "preprocess", "prior_boxes", "decode",
    "scores_and_boxes", "select_detections", "nms", "face_boxes_for_video",
    "boxes_from_detections", "best_face_boxes", "fill_missing_boxes", "pad_boxes",
    "smooth_boxes", "NoFaceError", "NO_FACE_POLICIES", "FACE_SELECTIONS", "face_boxes_and_found",
    "tracked_face_boxes", "box_iou", "link_tracks", "select_face_track", "create_detector",
    "find_s3fd_weights", "DetectorUnavailableError", "DETECTOR_KINDS", "S3FD_WEIGHTS_ENV",
    "DEFAULT_S3FD_WEIGHTS", "DEFAULT_MAX_SIDE", "HogDetector", "hog_to_s3fd", "HOG_TO_S3FD",
]
