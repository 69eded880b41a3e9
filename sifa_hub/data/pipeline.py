"""The clip pipeline: the one definition of inference preprocessing.

Every door that turns a video into model input goes through these functions — ``sifa-hub predict``, ``explain``,
the evaluation transform of the datasets (``sifa-hub eval``) and the transformers video processor
(``AutoVideoProcessor``, ``pipeline("video-classification")``) — so one video gives bit-identical input tensors
through each of them:

1. **Sampling** (`clip_indices`): ``num_clips`` clips of ``num_frames`` frames, deterministic ("center") forms of
   `sifa_hub.data.sampling` — ``"uniform"`` (the middle frame of each of ``num_frames`` equal segments) or
   ``"dense"`` (``num_frames`` frames ``stride`` apart, centred). **Short videos** (fewer frames than a clip spans)
   are padded by repeating frames — never by looping, which would reverse time — and `ShortVideoWarning` says so,
   naming the file.
2. **Resize** (`resize_short_side`): the short side to ``scale_size(crop, crop_pct) = floor(crop / crop_pct)``
   (timm's eval rule, ``transforms_factory``), the long side to ``floor(new_short · long / short)``; bilinear with
   antialiasing, on float pixels.
3. **Centre crop** (`center_crop`): one rounding rule, ``top = (H - h) // 2``, ``left = (W - w) // 2``.
4. **Normalise** (`normalize`): ``(x · 1/255 - mean) / std`` with the model's own mean and std.

`preprocess_frames` chains 2-4 for a ``(T, C, H, W)`` clip and `ClipTransform` wraps it for one model (the
datasets' evaluation transform); `ClipPipeline` adds sampling and decoding: `ClipPipeline.load` opens a file with
`VideoReader` and decodes only the frames its clips use. Both are built from ``sifa_hub.loading.data_config``'s dict
with ``from_data_config``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .decode import VideoReader
from .sampling import dense_indices, multi_clip_indices, multi_uniform_indices, uniform_indices

__all__ = [
    "SAMPLINGS",
    "ClipPipeline",
    "ClipTransform",
    "ShortVideoWarning",
    "center_crop",
    "clip_indices",
    "normalize",
    "preprocess_frames",
    "resize_frames",
    "resize_short_side",
    "scale_size",
    "to_tchw",
    "warn_if_short",
]

SAMPLINGS = ("uniform", "dense")
_MODES = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest"}


class ShortVideoWarning(UserWarning):
    """A video has fewer frames than a clip spans; frames were repeated to fill the clip."""


def scale_size(crop: int, crop_pct: float) -> int:
    """Short side to resize to before a centre crop of side ``crop``: ``floor(crop / crop_pct)`` (timm's rule).

    Args:
        crop: Crop side (the model's input size).
        crop_pct: Fraction of the resized short side the crop keeps, in ``(0, 1]``.
    """
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
        raise ValueError(f"crop size must be a positive int, got {crop!r}")
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be a number in (0, 1], got {crop_pct!r}")
    return math.floor(crop / crop_pct)


def warn_if_short(
    num_video_frames: int,
    num_frames: int,
    *,
    sampling: str = "uniform",
    stride: int = 1,
    source: str | os.PathLike[str] = "video",
) -> None:
    """Warn `ShortVideoWarning` (naming ``source``) when a video has fewer frames than one clip spans."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    span = num_frames if sampling == "uniform" else (num_frames - 1) * stride + 1
    if isinstance(num_video_frames, int) and 1 <= num_video_frames < span:
        warnings.warn(
            f"{os.fspath(source)}: {num_video_frames} frame(s), fewer than the {span} a clip spans; frames are "
            f"repeated to fill its {num_frames} (time never runs backwards)",
            ShortVideoWarning,
            stacklevel=3,
        )


def clip_indices(
    num_video_frames: int,
    num_frames: int,
    *,
    sampling: str = "uniform",
    stride: int = 1,
    num_clips: int = 1,
    source: str | os.PathLike[str] = "video",
) -> list[list[int]]:
    """Frame indices of the evaluation clips of a video; warns `ShortVideoWarning` when frames must repeat.

    Args:
        num_video_frames: Frames in the video, >= 1.
        num_frames: Frames per clip.
        sampling: ``"uniform"`` or ``"dense"`` (see the module docstring).
        stride: Step between frames of a dense clip.
        num_clips: Temporal views, spread evenly over the video.
        source: What the warning names (the file).

    Returns:
        ``num_clips`` lists of ``num_frames`` non-decreasing indices.
    """
    warn_if_short(num_video_frames, num_frames, sampling=sampling, stride=stride, source=source)
    if sampling == "uniform":
        if num_clips == 1:
            return [uniform_indices(num_video_frames, num_frames, mode="center")]
        return multi_uniform_indices(num_video_frames, num_frames, num_clips)
    if num_clips == 1:
        return [dense_indices(num_video_frames, num_frames, stride, mode="center")]
    return multi_clip_indices(num_video_frames, num_frames, stride, num_clips)


def _check_clip(frames: torch.Tensor) -> None:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[0] == 0:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a (T, C, H, W) tensor with T >= 1, got {shape}")


def resize_frames(frames: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """Resize ``(T, C, H, W)`` frames to ``size = (h, w)`` as float32 (antialiased when shrinking); no-op if equal."""
    _check_clip(frames)
    if interpolation not in _MODES:
        raise ValueError(f"interpolation must be one of {tuple(_MODES)}, got {interpolation!r}")
    frames = frames.float()
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    if interpolation == "nearest":
        return F.interpolate(frames, size=size, mode="nearest")
    return F.interpolate(frames, size=size, mode=interpolation, align_corners=False, antialias=True)


def resize_short_side(frames: torch.Tensor, short_side: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize ``(T, C, H, W)`` frames so the short side is ``short_side``, keeping the aspect ratio.

    The long side becomes ``floor(short_side · long / short)`` (torchvision's rule). Returns float32 frames on the
    input's scale (no rescaling to ``[0, 1]``).
    """
    _check_clip(frames)
    height, width = frames.shape[-2:]
    if height <= width:
        size = (short_side, int(short_side * width / height))
    else:
        size = (int(short_side * height / width), short_side)
    return resize_frames(frames, size, interpolation)


def center_crop(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size = (h, w)`` window of ``(..., H, W)`` frames: ``top = (H-h) // 2``, ``left = (W-w) // 2``."""
    height, width = frames.shape[-2:]
    crop_h, crop_w = size
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop {crop_h}x{crop_w} is larger than the frames ({height}x{width})")
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return frames[..., top : top + crop_h, left : left + crop_w]


def normalize(
    frames: torch.Tensor, mean: Sequence[float], std: Sequence[float], rescale: float | None = 1 / 255
) -> torch.Tensor:
    """``(frames · rescale - mean) / std`` per channel of ``(T, C, H, W)`` frames (``rescale=None``: no scaling)."""
    if len(mean) != frames.shape[1] or len(std) != frames.shape[1] or min(std) <= 0:
        raise ValueError(f"mean and std need one value per channel ({frames.shape[1]}), std > 0; got {mean}, {std}")
    frames = frames.float()
    if rescale is not None:
        frames = frames * rescale
    m = torch.tensor(mean, dtype=frames.dtype, device=frames.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=frames.dtype, device=frames.device).view(1, -1, 1, 1)
    return (frames - m) / s


def preprocess_frames(
    frames: torch.Tensor,
    *,
    short_side: int | None,
    crop: tuple[int, int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    rescale: float | None = 1 / 255,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Resize the short side, centre-crop and normalise one clip (steps 2-4 of the module docstring).

    Args:
        frames: ``(T, C, H, W)`` pixels, uint8 or float on the ``[0, 255]`` scale (``rescale`` maps them to
            ``[0, 1]``).
        short_side: Short side after resizing (`scale_size`), ``None`` to skip resizing.
        crop: ``(h, w)`` of the centre crop, ``None`` to skip cropping.
        mean: Per-channel mean of rescaled pixels, ``None`` (with ``std``) to skip normalising.
        std: Per-channel standard deviation.
        rescale: Factor applied before normalising (``None``: none).
        interpolation: ``"bilinear"`` (the pipeline's), ``"bicubic"`` or ``"nearest"``.

    Returns:
        float32 ``(T, C, h, w)``.
    """
    _check_clip(frames)
    frames = frames.float() if short_side is None else resize_short_side(frames, short_side, interpolation)
    if crop is not None:
        frames = center_crop(frames, crop)
    if mean is not None and std is not None:
        return normalize(frames, mean, std, rescale).contiguous()
    return (frames * rescale if rescale is not None else frames).contiguous()


def to_tchw(video: torch.Tensor) -> torch.Tensor:
    """View a clip as ``(T, 3, H, W)``.

    Args:
        video: ``(T, H, W, 3)`` (decoder layout; chosen when the last dim is 3) or ``(T, 3, H, W)``.

    Returns:
        ``(T, 3, H, W)`` (a permuted view, no copy).
    """
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"video must be a torch.Tensor, got {type(video).__name__}")
    if video.ndim == 4 and video.shape[-1] == 3:
        return video.permute(0, 3, 1, 2)
    if video.ndim == 4 and video.shape[1] == 3:
        return video
    raise ValueError(f"video must have shape (T, H, W, 3) or (T, 3, H, W), got {tuple(video.shape)}")


def _as_tchw_uint8(video: torch.Tensor) -> torch.Tensor:
    """``(T, H, W, 3)`` or ``(T, 3, H, W)`` uint8 → ``(T, 3, H, W)``."""
    if isinstance(video, torch.Tensor) and video.dtype != torch.uint8:
        raise TypeError(f"video must be uint8 pixels, got {video.dtype}")
    return to_tchw(video)


def _crop_of(size: Any) -> tuple[int, int]:
    """``(h, w)`` of a data config's ``img_size``: ``s``, ``(h, w)`` or timm's ``(C, h, w)`` with ``C = 3``."""
    if isinstance(size, (tuple, list)):
        if len(size) == 3 and int(size[0]) == 3:
            size = size[1:]
        if len(size) != 2:
            raise ValueError(f"data config img_size must be s, (h, w) or (3, h, w), got {size!r}")
        return int(size[0]), int(size[1])
    return int(size), int(size)


@dataclass(frozen=True)
class ClipTransform:
    """The spatial part of the pipeline for one clip: resize the short side, centre crop, normalise.

    It is the evaluation transform of `VideoFolderDataset` / `VideoListDataset` (``sifa-hub eval``) and what
    `ClipPipeline` applies to each clip.

    Attributes:
        crop: ``(h, w)`` of the centre crop (the model's input size).
        short_side: Short side after resizing (``scale_size(crop, crop_pct)``).
        mean: Per-channel mean of ``[0, 1]`` pixels.
        std: Per-channel standard deviation.
    """

    crop: tuple[int, int]
    short_side: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.crop) != 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.crop):
            raise ValueError(f"crop must be (h, w) positive ints, got {self.crop!r}")
        side = self.short_side
        if isinstance(side, bool) or not isinstance(side, int) or side < min(self.crop):
            raise ValueError(f"short_side must be an int >= the crop's short side {min(self.crop)}, got {side!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got mean={self.mean}, std={self.std}")

    @classmethod
    def from_data_config(cls, config: Mapping[str, Any]) -> ClipTransform:
        """The transform of a model's data config (``sifa_hub.loading.data_config``: ``img_size``, ``crop_pct``,
        ``mean``, ``std``)."""
        missing = [k for k in ("img_size", "mean", "std") if k not in config]
        if missing:
            raise ValueError(f"data config lacks {missing}: got {dict(config)}")
        crop = _crop_of(config["img_size"])
        return cls(
            crop=crop,
            short_side=scale_size(min(crop), float(config.get("crop_pct", 1.0))),
            mean=tuple(float(m) for m in config["mean"]),
            std=tuple(float(s) for s in config["std"]),
        )

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` or ``(T, 3, H, W)`` → float ``(3, T, h, w)``."""
        clip = preprocess_frames(
            _as_tchw_uint8(video), short_side=self.short_side, crop=self.crop, mean=self.mean, std=self.std
        )  # (T, 3, h, w)
        return clip.permute(1, 0, 2, 3).contiguous()  # (3, T, h, w)


@dataclass(frozen=True)
class ClipPipeline:
    """One model's inference preprocessing: frame sampling, then `ClipTransform` on each clip.

    Attributes:
        num_frames: Frames per clip ``T``.
        transform: Resize, crop and normalisation.
        sampling: ``"uniform"`` or ``"dense"``.
        stride: Frame step of dense clips.
        num_clips: Temporal views per video.
    """

    num_frames: int
    transform: ClipTransform
    sampling: str = "uniform"
    stride: int = 1
    num_clips: int = 1

    def __post_init__(self) -> None:
        for name in ("num_frames", "stride", "num_clips"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ClipPipeline: {name} must be a positive int, got {value!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"ClipPipeline: sampling must be one of {SAMPLINGS}, got {self.sampling!r}")

    @classmethod
    def from_data_config(
        cls, config: Mapping[str, Any], *, num_clips: int = 1, sampling: str = "uniform", stride: int = 1
    ) -> ClipPipeline:
        """The pipeline of a model's data config (``sifa_hub.loading.data_config``: ``num_frames``, ``img_size``,
        ``crop_pct``, ``mean``, ``std``)."""
        if "num_frames" not in config:
            raise ValueError(f"data config lacks 'num_frames': got {dict(config)}")
        return cls(
            num_frames=int(config["num_frames"]),
            transform=ClipTransform.from_data_config(config),
            sampling=sampling,
            stride=stride,
            num_clips=num_clips,
        )

    def indices(self, num_video_frames: int, source: str | os.PathLike[str] = "video") -> list[list[int]]:
        """`clip_indices` with this pipeline's sampling."""
        return clip_indices(
            num_video_frames,
            self.num_frames,
            sampling=self.sampling,
            stride=self.stride,
            num_clips=self.num_clips,
            source=source,
        )

    def views(self, frames: torch.Tensor, source: str | os.PathLike[str] = "video") -> torch.Tensor:
        """The clips of an already decoded video: uint8 ``(N, H, W, 3)`` → float ``(V, 3, T, h, w)``."""
        return torch.stack([self.transform(frames[idx]) for idx in self.indices(int(frames.shape[0]), source)])

    def load(self, path: str | os.PathLike[str]) -> torch.Tensor:
        """Decode only the frames this pipeline's clips use and preprocess them.

        Returns:
            float ``(V, 3, T, h, w)`` with ``V = num_clips``.

        Raises:
            sifa_hub.data.VideoDecodeError: The file cannot be decoded (the message names it).
        """
        with VideoReader(path) as reader:
            clips = reader.get_clips(self.indices(reader.num_frames, source=path))  # each (T, H, W, 3)
        return torch.stack([self.transform(clip) for clip in clips])  # (V, 3, T, h, w)
