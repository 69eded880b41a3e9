"""Video processor for SIFA models: the clip pipeline (:mod:`sifa_hub.data.pipeline`) behind transformers' API.

Built on transformers' :class:`~transformers.video_processing_utils.BaseVideoProcessor`, so it saves as
``video_preprocessor_config.json``, loads with ``AutoVideoProcessor`` and drives the ``video-classification``
pipeline (which calls it with ``num_frames=config.num_frames, do_sample_frames=True``). Decoding (`VideoReader`:
exact frame counts for webm/mkv, seeking, display rotation), sampling (`clip_indices`, with `ShortVideoWarning`),
resizing, cropping and normalisation (`preprocess_frames`) are the very functions ``sifa-hub predict`` and
``sifa-hub eval`` use, so all doors give identical ``pixel_values`` for one video.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, cast

import numpy as np
import torch
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoInput, VideoMetadata, load_video, make_batched_videos

from ..data.decode import VideoReader
from ..data.pipeline import SAMPLINGS, clip_indices, preprocess_frames, resize_frames, scale_size

__all__ = ["FRAME_SAMPLING_MODES", "SifaVideoProcessor"]

FRAME_SAMPLING_MODES = SAMPLINGS
_INTERPOLATIONS = {
    int(PILImageResampling.NEAREST): "nearest",
    int(PILImageResampling.BILINEAR): "bilinear",
    int(PILImageResampling.BICUBIC): "bicubic",
}


class SifaVideoProcessorKwargs(VideosKwargs, total=False):
    """Keyword arguments of :class:`SifaVideoProcessor` on top of transformers' ``VideosKwargs``.

    Attributes:
        frame_sampling: ``"uniform"`` (one frame at the centre of each of ``num_frames`` equal segments of the
            video) or ``"dense"`` (``num_frames`` frames ``frame_stride`` apart, centred in the video).
        frame_stride: distance between consecutive frames in ``"dense"`` sampling.
    """

    frame_sampling: str | None
    frame_stride: int | None


def _interpolation(resample: Any) -> str:
    """The pipeline's interpolation name of a PIL resampling code or a torchvision ``InterpolationMode``."""
    value = getattr(resample, "value", resample)
    if isinstance(value, str) and value in _INTERPOLATIONS.values():
        return value
    if isinstance(value, int) and value in _INTERPOLATIONS:
        return _INTERPOLATIONS[value]
    raise ValueError(f"SifaVideoProcessor: resample must be nearest, bilinear or bicubic, got {resample!r}")


def _channels_first(video: torch.Tensor, input_data_format: Any) -> torch.Tensor:
    """One video as ``(T, C, H, W)`` with ``C`` in 1, 3 or 4: ``(T, H, W)`` (grey PIL frames) gains a channel,
    ``(T, H, W, C)`` is permuted; ``input_data_format`` (``"channels_first"``/``"channels_last"``) overrides the guess.
    """
    if video.dtype == torch.bool or video.is_complex():
        raise TypeError(f"SifaVideoProcessor: video pixels must be integers or floats, got {video.dtype}")
    if video.ndim == 3:
        video = video.unsqueeze(-1)  # (T, H, W) grey frames → (T, H, W, 1)
    if video.ndim != 4:
        shape = tuple(video.shape)
        raise ValueError(f"SifaVideoProcessor: a video must be 4-D (T, H, W, C) or (T, C, H, W), got {shape}")
    layout = getattr(input_data_format, "value", input_data_format)
    if layout is None:
        if video.shape[1] in (1, 3, 4) and video.shape[-1] not in (1, 3, 4):
            layout = "channels_first"
        elif video.shape[-1] in (1, 3, 4):
            layout = "channels_last"
    if layout == "channels_last":
        video = video.permute(0, 3, 1, 2)
    elif layout != "channels_first":
        raise ValueError(
            "SifaVideoProcessor: cannot tell the channel axis of a video of shape "
            f"{tuple(video.shape)}: expected (T, H, W, C) or (T, C, H, W) with C = 1 (grey), 3 (RGB) or 4 (RGBA); "
            "a grey video needs its channel axis, e.g. (T, H, W, 1)"
        )
    if video.shape[1] not in (1, 3, 4):
        raise ValueError(f"SifaVideoProcessor: a video needs 1, 3 or 4 channels, got shape {tuple(video.shape)}")
    return video


def _to_rgb(video: torch.Tensor) -> torch.Tensor:
    """``(T, C, H, W)`` grey, RGB or RGBA → ``(T, 3, H, W)``: grey repeated, alpha dropped (as PIL's ``convert``)."""
    if video.shape[1] == 1:
        return video.expand(-1, 3, -1, -1)
    return video[:, :3]


def _check_pixel_range(video: torch.Tensor, rescale_factor: float) -> None:
    """Before ``do_rescale``: integer pixels must lie in ``[0, 1 / rescale_factor]`` (``[0, 255]``; 16-bit ones
    would come out ~257x too bright); float pixels already in ``[0, 1]`` or outside that range (normalised
    already?) get a warning."""
    if not video.numel() or rescale_factor >= 1:
        return
    values = video if video.is_floating_point() or video.dtype == torch.uint8 else video.long()  # torch: no uint16 min
    low, high = float(values.min()), float(values.max())
    top = 1 / rescale_factor  # 255 by default
    outside = low < 0 or high > top * 1.0001
    if not video.is_floating_point() and outside:
        raise ValueError(
            f"SifaVideoProcessor: {video.dtype} pixels span [{low:g}, {high:g}]; do_rescale expects [0, {top:g}] "
            f"pixels (uint8 by default): convert them, or pass do_rescale=False / a rescale_factor for that range"
        )
    if video.is_floating_point() and (high <= 1 or outside):
        problem = "are already in [0, 1]" if not outside else f"span [{low:g}, {high:g}], not [0, {top:g}]"
        warnings.warn(
            f"SifaVideoProcessor: the float video's pixels {problem} but do_rescale=True multiplies them by "
            f"{rescale_factor:g}; pass uint8 or [0, 255] pixels, or do_rescale=False",
            UserWarning,
            stacklevel=4,
        )


def _is_local_file(video: Any) -> bool:
    return isinstance(video, (str, os.PathLike)) and not os.fspath(video).startswith(("http://", "https://"))


class SifaVideoProcessor(BaseVideoProcessor):
    """Preprocessing of SIFA checkpoints (ImageNet mean/std, short side 256, centre crop 224, 16 frames).

    Input videos may be local file paths (decoded with PyAV through :class:`~sifa_hub.data.VideoReader`: any
    container FFmpeg reads, display rotation applied, only the sampled frames decoded), URLs (transformers'
    ``load_video``), ``(T, H, W, C)`` / ``(T, C, H, W)`` arrays or tensors, or lists of frames. With
    ``do_sample_frames=True`` (the default) exactly ``num_frames`` frames are taken with ``frame_sampling``; short
    videos repeat frames with a :class:`~sifa_hub.data.ShortVideoWarning`. The output ``pixel_values`` is
    ``(B, T, C, H, W)`` float32, the layout ``SifaForVideoClassification`` takes.
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
        the centre crop, after resizing the short side to ``scale_size(crop, crop_pct)`` (``config.pretrained_cfg``'s
        ``crop_pct``, default 0.875); ``kwargs`` override."""
        height, width = config.frame_size
        crop_pct = float((config.pretrained_cfg or {}).get("crop_pct", 0.875))
        values: dict[str, Any] = {
            "num_frames": config.num_frames,
            "size": {"shortest_edge": scale_size(min(height, width), crop_pct)},
            "crop_size": {"height": height, "width": width},
            "image_mean": list(config.image_mean),
            "image_std": list(config.image_std),
        }
        values.update(kwargs)
        return cls(**values)

    @classmethod
    def from_data_config(cls, data_config: Any, **kwargs: Any) -> SifaVideoProcessor:
        """The processor of a model's ``sifa_hub.loading.data_config`` (``num_frames``, ``img_size``, ``crop_pct``,
        ``mean``, ``std``): the preprocessing of ``sifa-hub predict`` for that model; ``kwargs`` override."""
        size = int(data_config["img_size"])
        values: dict[str, Any] = {
            "num_frames": int(data_config["num_frames"]),
            "size": {"shortest_edge": scale_size(size, float(data_config.get("crop_pct", 1.0)))},
            "crop_size": {"height": size, "width": size},
            "image_mean": [float(m) for m in data_config["mean"]],
            "image_std": [float(s) for s in data_config["std"]],
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
        source: str = "video",
        **kwargs: Any,
    ) -> np.ndarray:
        """Indices of the frames of one clip: the clip pipeline's evaluation sampling (`clip_indices`).

        Short videos repeat frames (never loop) and warn `ShortVideoWarning`, so a clip always has ``num_frames``.

        Args:
            metadata: the video's metadata (``total_num_frames`` is used).
            num_frames: frames per clip, defaults to ``self.num_frames``.
            fps: not supported (a SIFA model takes a fixed frame count); must be ``None``.
            frame_sampling: ``"uniform"`` or ``"dense"``, defaults to ``self.frame_sampling``.
            frame_stride: stride of dense sampling, defaults to ``self.frame_stride``.
            source: what a warning names (the file).

        Returns:
            ``(num_frames,)`` non-decreasing int64 indices.
        """
        for name, value in (("num_frames", num_frames), ("frame_stride", frame_stride)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"SifaVideoProcessor: {name} must be a positive int, got {value!r}")
        if fps is not None:
            raise ValueError("SifaVideoProcessor samples a fixed number of frames (num_frames); fps is not supported")
        num_frames = num_frames if num_frames is not None else self.num_frames
        if num_frames is None:
            raise ValueError("SifaVideoProcessor: num_frames must be set to sample frames")
        sampling = frame_sampling if frame_sampling is not None else self.frame_sampling
        stride = frame_stride if frame_stride is not None else self.frame_stride
        total = int(metadata.total_num_frames or 0)
        if total < 1:
            raise ValueError(f"SifaVideoProcessor: {source} has no frames (total_num_frames={total})")
        indices = clip_indices(total, num_frames, sampling=sampling, stride=stride, source=source)[0]
        return np.asarray(indices, dtype=np.int64)

    def _read_local(self, path: str | os.PathLike[str], sample_indices_fn: Any) -> tuple[np.ndarray, VideoMetadata]:
        """Decode the sampled frames of a local file with the clip pipeline's `VideoReader`."""
        with VideoReader(path) as reader:
            metadata = VideoMetadata(
                total_num_frames=reader.num_frames,
                fps=reader.fps or None,
                duration=reader.num_frames / reader.fps if reader.fps else None,
                video_backend="pyav",
            )
            if sample_indices_fn is None:
                indices = np.arange(reader.num_frames)
            else:
                indices = np.asarray(sample_indices_fn(metadata=metadata, source=os.fspath(path)), dtype=np.int64)
            frames = reader.get_frames(indices.tolist()).numpy()  # (T, H, W, 3)
        metadata.frames_indices = indices.tolist()
        metadata.height, metadata.width = int(frames.shape[1]), int(frames.shape[2])
        return frames, metadata

    def fetch_videos(self, video_url_or_urls: str | list[str] | list[list[str]], sample_indices_fn=None):
        """Decode videos: local files with `VideoReader` (only the sampled frames), URLs with transformers'
        ``load_video`` (PyAV)."""
        if isinstance(video_url_or_urls, list):
            return list(zip(*[self.fetch_videos(x, sample_indices_fn=sample_indices_fn) for x in video_url_or_urls]))
        if _is_local_file(video_url_or_urls):
            return self._read_local(video_url_or_urls, sample_indices_fn)
        return load_video(cast(Any, video_url_or_urls), backend="pyav", sample_indices_fn=sample_indices_fn)

    def _decode_and_sample_videos(
        self, videos: Any, video_metadata: Any, do_sample_frames: bool | None = None, sample_indices_fn=None
    ) -> Any:
        """Batch the videos, then decode and sample them; frames of grey PIL images (``(T, H, W)`` once batched)
        gain their channel axis first, and an array whose channel axis cannot be told is refused by shape."""
        if isinstance(videos, os.PathLike):
            videos = os.fspath(videos)
        elif isinstance(videos, list):  # transformers' batching takes str paths only
            videos = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in videos]
        batch: list[Any] = []
        for video in make_batched_videos(videos):
            if isinstance(video, (np.ndarray, torch.Tensor)):
                tensor = torch.from_numpy(np.ascontiguousarray(video)) if isinstance(video, np.ndarray) else video
                video = _channels_first(tensor, None).permute(0, 2, 3, 1)  # (T, H, W, C): a layout upstream reads
            batch.append(video)
        return super()._decode_and_sample_videos(batch, video_metadata, do_sample_frames, sample_indices_fn)

    def _prepare_input_videos(
        self,
        videos: Any,
        do_convert_rgb: bool | None = None,
        input_data_format: Any = None,
        device: str | None = None,
    ) -> list[torch.Tensor]:
        """Each video as ``(T, C, H, W)``: grey ``(T, H, W)`` / ``(T, H, W, 1)`` and RGBA accepted (made RGB when
        ``do_convert_rgb``); bool pixels and shapes whose channel axis cannot be told are refused by name."""
        prepared = []
        for video in videos:
            tensor = torch.from_numpy(np.ascontiguousarray(video)) if isinstance(video, np.ndarray) else video
            tensor = _channels_first(tensor, input_data_format).contiguous()
            if do_convert_rgb:
                tensor = _to_rgb(tensor).contiguous()
            prepared.append(tensor.to(device) if device is not None else tensor)
        return prepared

    def _preprocess(  # type: ignore[override]  # BaseVideoProcessor's own signature, not TorchvisionBackend's
        self,
        videos: list[torch.Tensor],
        do_resize: bool,
        size: Any,
        resample: Any,
        do_center_crop: bool,
        crop_size: Any,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | list[float] | None,
        image_std: float | list[float] | None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Resize, crop and normalise each ``(T, C, H, W)`` video with `preprocess_frames`."""
        interpolation = _interpolation(resample)
        short_side, fixed = None, None
        if do_resize:
            if getattr(size, "shortest_edge", None):
                short_side = int(size.shortest_edge)
            elif getattr(size, "height", None) and getattr(size, "width", None):
                fixed = (int(size.height), int(size.width))
            else:
                raise ValueError(f"SifaVideoProcessor: size must give shortest_edge or height and width, got {size}")
        channels = int(videos[0].shape[1]) if videos else 3
        mean = [image_mean] * channels if isinstance(image_mean, (int, float)) else image_mean
        std = [image_std] * channels if isinstance(image_std, (int, float)) else image_std
        processed = []
        for video in videos:  # (T, C, H, W)
            if do_rescale:
                _check_pixel_range(video, rescale_factor)
            if fixed is not None:
                video = resize_frames(video, fixed, interpolation)
            processed.append(
                preprocess_frames(
                    video,
                    short_side=short_side,
                    crop=(int(crop_size.height), int(crop_size.width)) if do_center_crop else None,
                    mean=mean if do_normalize else None,
                    std=std if do_normalize else None,
                    rescale=rescale_factor if do_rescale else None,
                    interpolation=interpolation,
                )
            )
        return BatchFeature(data={"pixel_values_videos": processed}, tensor_type=return_tensors)

    def preprocess(self, videos: VideoInput, **kwargs: Unpack[SifaVideoProcessorKwargs]) -> BatchFeature:
        """Process ``videos`` into ``BatchFeature(pixel_values=(B, T, C, H, W))``."""
        batch = super().preprocess(videos, **kwargs)
        batch["pixel_values"] = batch.pop("pixel_values_videos")
        return batch
