"""Video processor for SIFA models: decode (PyAV or torchcodec), sample a fixed number of frames, resize, crop,
normalise, and return ``pixel_values`` of shape ``(B, T, C, H, W)``.

Built on transformers' :class:`~transformers.video_processing_utils.BaseVideoProcessor`, so it saves as
``video_preprocessor_config.json``, loads with ``AutoVideoProcessor`` and drives the ``video-classification``
pipeline (which calls it with ``num_frames=config.num_frames, do_sample_frames=True``).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import is_torchcodec_usable
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoInput, VideoMetadata, load_video

from ..data.sampling import dense_indices, uniform_indices

__all__ = ["FRAME_SAMPLING_MODES", "SifaVideoProcessor"]

FRAME_SAMPLING_MODES = ("uniform", "dense")


class SifaVideoProcessorKwargs(VideosKwargs, total=False):
    """Keyword arguments of :class:`SifaVideoProcessor` on top of transformers' ``VideosKwargs``.

    Attributes:
        frame_sampling: ``"uniform"`` (one frame at the centre of each of ``num_frames`` equal segments of the
            video) or ``"dense"`` (``num_frames`` frames ``frame_stride`` apart, centred in the video).
        frame_stride: distance between consecutive frames in ``"dense"`` sampling.
    """

    frame_sampling: str | None
    frame_stride: int | None


class SifaVideoProcessor(BaseVideoProcessor):
    """Preprocessing of SIFA checkpoints (ImageNet mean/std, short side 256, centre crop 224, 16 frames).

    Input videos may be file paths / URLs (decoded with torchcodec when it is usable, otherwise PyAV, which needs no
    system FFmpeg), ``(T, H, W, C)`` / ``(T, C, H, W)`` arrays or tensors, or lists of frames. With
    ``do_sample_frames=True`` (the default) exactly ``num_frames`` frames are taken with ``frame_sampling``; short
    videos repeat frames. The output ``pixel_values`` is ``(B, T, C, H, W)`` float32, the layout
    ``SifaForVideoClassification`` takes.
    """

    resample = PILImageResampling.BILINEAR
    image_mean = list(IMAGENET_DEFAULT_MEAN)
    image_std = list(IMAGENET_DEFAULT_STD)
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 16
    frame_sampling = "uniform"
    frame_stride = 1
    valid_kwargs = SifaVideoProcessorKwargs  # type: ignore[assignment]  # VideosKwargs + the sampling keys
    model_input_names = ["pixel_values"]

    def __init__(self, **kwargs: Unpack[SifaVideoProcessorKwargs]) -> None:
        super().__init__(**kwargs)  # type: ignore[misc]  # the base class types only VideosKwargs
        if self.frame_sampling not in FRAME_SAMPLING_MODES:
            raise ValueError(
                f"SifaVideoProcessor: frame_sampling must be one of {FRAME_SAMPLING_MODES}, "
                f"got {self.frame_sampling!r}"
            )
        if not isinstance(self.frame_stride, int) or self.frame_stride < 1:
            raise ValueError(f"SifaVideoProcessor: frame_stride must be a positive int, got {self.frame_stride!r}")
        if self.num_frames is not None and (not isinstance(self.num_frames, int) or self.num_frames < 1):
            raise ValueError(f"SifaVideoProcessor: num_frames must be a positive int, got {self.num_frames!r}")

    @classmethod
    def from_sifa_config(cls, config: Any, **kwargs: Any) -> SifaVideoProcessor:
        """The processor a :class:`~sifa_hub.hf.SifaConfig` implies: its frame count, mean/std and frame size as
        the centre crop, after resizing the short side to ``crop / crop_pct`` (``config.pretrained_cfg``'s
        ``crop_pct``, default 0.875); ``kwargs`` override."""
        height, width = config.frame_size
        crop_pct = float((config.pretrained_cfg or {}).get("crop_pct", 0.875))
        values: dict[str, Any] = {
            "num_frames": config.num_frames,
            "size": {"shortest_edge": int(round(min(height, width) / crop_pct))},
            "crop_size": {"height": height, "width": width},
            "image_mean": list(config.image_mean),
            "image_std": list(config.image_std),
        }
        values.update(kwargs)
        return cls(**values)

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: int | float | None = None,
        frame_sampling: str | None = None,
        frame_stride: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Indices of the frames of one clip, the evaluation ("center") sampling of :mod:`sifa_hub.data.sampling`.

        Short videos repeat frames (indices are clamped to the last frame), so a clip always has ``num_frames``.

        Args:
            metadata: the video's metadata (``total_num_frames`` is used).
            num_frames: frames per clip, defaults to ``self.num_frames``.
            fps: not supported (a SIFA model takes a fixed frame count); must be ``None``.
            frame_sampling: ``"uniform"`` (middle frame of each of ``num_frames`` equal segments) or ``"dense"``
                (``num_frames`` frames ``frame_stride`` apart, centred), defaults to ``self.frame_sampling``.
            frame_stride: stride of dense sampling, defaults to ``self.frame_stride``.

        Returns:
            ``(num_frames,)`` non-decreasing int64 indices.
        """
        if fps is not None:
            raise ValueError("SifaVideoProcessor samples a fixed number of frames (num_frames); fps is not supported")
        num_frames = num_frames if num_frames is not None else self.num_frames
        if num_frames is None:
            raise ValueError("SifaVideoProcessor: num_frames must be set to sample frames")
        sampling = frame_sampling if frame_sampling is not None else self.frame_sampling
        total = int(metadata.total_num_frames)
        if total < 1:
            raise ValueError(f"SifaVideoProcessor: the video has no frames (total_num_frames={total})")
        if sampling == "uniform":
            indices = uniform_indices(total, num_frames, mode="center")
        elif sampling == "dense":
            stride = frame_stride if frame_stride is not None else self.frame_stride
            indices = dense_indices(total, num_frames, stride, mode="center")
        else:
            raise ValueError(f"SifaVideoProcessor: frame_sampling must be in {FRAME_SAMPLING_MODES}, not {sampling!r}")
        return np.asarray(indices, dtype=np.int64)

    def fetch_videos(self, video_url_or_urls: str | list[str] | list[list[str]], sample_indices_fn=None):
        """Decode videos from paths/URLs with torchcodec when usable, else PyAV (no system FFmpeg needed).

        Frame indices may repeat (short videos): the decoders are asked for the distinct indices and the clip is
        expanded afterwards, so the result always has one frame per requested index.
        """
        if isinstance(video_url_or_urls, list):
            return list(zip(*[self.fetch_videos(x, sample_indices_fn=sample_indices_fn) for x in video_url_or_urls]))
        backend = "torchcodec" if is_torchcodec_usable(decode="video") else "pyav"
        if sample_indices_fn is None:
            return load_video(cast(Any, video_url_or_urls), backend=backend)

        requested: list[np.ndarray] = []

        def distinct_indices(metadata: VideoMetadata, **kwargs: Any) -> np.ndarray:
            indices = np.asarray(sample_indices_fn(metadata=metadata, **kwargs), dtype=np.int64)
            requested.append(indices)
            return np.unique(indices)

        video, metadata = load_video(cast(Any, video_url_or_urls), backend=backend, sample_indices_fn=distinct_indices)
        indices = requested[0]
        if len(video) == 0:
            raise ValueError(f"SifaVideoProcessor: no frame could be decoded from {video_url_or_urls!r}")
        # a container may report more frames than it decodes: clamp to the frames actually returned
        positions = np.minimum(np.searchsorted(np.unique(indices), indices), len(video) - 1)
        metadata.frames_indices = indices
        return video[positions], metadata

    def preprocess(self, videos: VideoInput, **kwargs: Unpack[SifaVideoProcessorKwargs]) -> BatchFeature:
        """Process ``videos`` into ``BatchFeature(pixel_values=(B, T, C, H, W))``."""
        batch = super().preprocess(videos, **kwargs)
        batch["pixel_values"] = batch.pop("pixel_values_videos")
        return batch
