"""Video input (decoding, sampling, the clip pipeline, transforms, datasets) and the embedded "motion" dataset."""

from .datasets import VIDEO_EXTENSIONS, VideoFolderDataset, VideoListDataset
from .decode import VideoDecodeError, VideoReader, decode_video, write_video
from .motion import (
    MOTION_CLASSES,
    MOTION_MEAN,
    MOTION_PAIRS,
    MOTION_STD,
    TRANSLATION_CLASSES,
    MotionDataset,
    render_motion_clips,
    write_motion_dataset,
)
from .pipeline import (
    ClipPipeline,
    ClipTransform,
    ShortVideoWarning,
    clip_indices,
    preprocess_frames,
    scale_size,
)
from .sampling import dense_indices, multi_clip_indices, multi_uniform_indices, uniform_indices
from .transforms import VideoTransform, build_transform, multi_crop_views, to_float_cthw, to_tchw

__all__ = [
    "ClipPipeline",
    "ClipTransform",
    "ShortVideoWarning",
    "VideoReader",
    "clip_indices",
    "preprocess_frames",
    "scale_size",
    "MOTION_CLASSES",
    "MOTION_MEAN",
    "MOTION_PAIRS",
    "MOTION_STD",
    "VIDEO_EXTENSIONS",
    "TRANSLATION_CLASSES",
    "MotionDataset",
    "VideoDecodeError",
    "VideoFolderDataset",
    "VideoListDataset",
    "VideoTransform",
    "build_transform",
    "decode_video",
    "dense_indices",
    "multi_clip_indices",
    "multi_crop_views",
    "multi_uniform_indices",
    "render_motion_clips",
    "to_float_cthw",
    "to_tchw",
    "uniform_indices",
    "write_motion_dataset",
    "write_video",
]
