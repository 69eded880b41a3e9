"""Clip transforms: training augmentation on ``torchvision.transforms.v2``, evaluation from the clip pipeline.

Decoded clips are uint8 ``(T, H, W, 3)`` (or ``(T, 3, H, W)``); models take float ``(C, T, H, W)`` per sample.
`build_transform` resizes the short side, crops (random for training, centre for evaluation), optionally flips,
scales to ``[0, 1]`` and normalises, applying the *same* spatial parameters to every frame of a clip. Its evaluation
form *is* `sifa_hub.data.pipeline.ClipTransform`, the preprocessing of ``predict`` and the video processor, so
``sifa-hub eval`` sees the pixels every other door sees. `multi_crop_views` cuts the test-time crops of multi-view
evaluation.

Horizontal flips turn "left" into "right": keep ``flip=False`` for direction-sensitive data (Something-Something,
the embedded motion set).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import tv_tensors
from torchvision.transforms import v2

from .pipeline import ClipTransform, scale_size, to_tchw

__all__ = ["VideoTransform", "build_transform", "multi_crop_views", "to_float_cthw", "to_tchw"]


def to_float_cthw(video: torch.Tensor) -> torch.Tensor:
    """The minimal transform: uint8 ``(T, H, W, 3)``/``(T, 3, H, W)`` → float ``(3, T, H, W)`` in ``[0, 1]``."""
    video = to_tchw(video)
    if video.dtype != torch.uint8:
        raise TypeError(f"video must be uint8, got {video.dtype}")
    return video.permute(1, 0, 2, 3).float().div_(255.0)  # (3, T, H, W)


class VideoTransform:
    """A torchvision v2 pipeline applied to a whole clip, returning ``(C, T, H, W)``.

    Args:
        pipeline: v2 transform over a `tv_tensors.Video` ``(T, 3, H, W)``; random parameters are drawn once per
            call, so all frames share them.
    """

    def __init__(self, pipeline: v2.Transform) -> None:
        self.pipeline = pipeline

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        """Args:
            video: uint8 ``(T, H, W, 3)`` or ``(T, 3, H, W)``.

        Returns:
            float ``(3, T, size, size)``.
        """
        video = to_tchw(video)
        if video.dtype != torch.uint8:
            raise TypeError(f"video must be uint8, got {video.dtype}")
        out = self.pipeline(tv_tensors.Video(video))  # (T, 3, size, size)
        return out.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()  # (3, T, size, size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def build_transform(
    *,
    train: bool,
    size: int = 224,
    short_side: int | None = None,
    crop_pct: float | None = None,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    flip: bool = True,
) -> VideoTransform | ClipTransform:
    """Build the training or evaluation transform of a clip.

    Pipeline: resize the short side to ``short_side`` (antialiased bilinear) → ``size × size`` crop (random when
    ``train``, else centred) → horizontal flip with p=0.5 (``train and flip``) → float in ``[0, 1]`` → normalise.
    The evaluation transform is the clip pipeline's `ClipTransform` (identical to ``predict``'s preprocessing).

    Args:
        train: Random crop and flip (training) or centre crop (evaluation).
        size: Output crop side.
        short_side: Short side after resizing, >= ``size``; ``None`` means ``scale_size(size, crop_pct)``.
        crop_pct: The model's crop fraction (``pretrained_cfg["crop_pct"]``); used when ``short_side`` is ``None``;
            ``None`` means 1 (the crop spans the short side). Give one of ``short_side`` and ``crop_pct``.
        mean: Per-channel mean of ``[0, 1]`` pixels (default ImageNet's; the backbones are inflated from it).
        std: Per-channel standard deviation.
        flip: Allow the random horizontal flip in training; turn off for direction-sensitive labels.

    Returns:
        A callable: uint8 ``(T, H, W, 3)`` or ``(T, 3, H, W)`` → float ``(3, T, size, size)``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if short_side is not None and crop_pct is not None:
        raise ValueError(f"give short_side ({short_side}) or crop_pct ({crop_pct}), not both")
    short_side = scale_size(size, 1.0 if crop_pct is None else crop_pct) if short_side is None else short_side
    if isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < size:
        raise ValueError(f"short_side must be an int >= size ({size}), got {short_side!r}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values each, std > 0; got mean={mean}, std={std}")
    if not train:
        return ClipTransform((size, size), short_side, tuple(mean), tuple(std))
    steps: list[v2.Transform] = [v2.Resize(short_side, antialias=True), v2.RandomCrop(size)]
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return VideoTransform(v2.Compose(steps))


def multi_crop_views(video_CTHW: torch.Tensor, size: int, num_crops: int = 3) -> list[torch.Tensor]:
    """Test-time spatial crops of a clip (SlowFast-style multi-crop).

    ``num_crops`` squares of side ``size`` evenly spaced along the long side (first one at the start, last at the
    end; one crop is centred), centred on the short side. With a short side of ``size`` and 3 crops this is the
    usual left/centre/right (or top/centre/bottom) testing.

    Args:
        video_CTHW: Clip ``(C, T, H, W)`` with ``H, W >= size``.
        size: Crop side.
        num_crops: Number of crops, >= 1.

    Returns:
        ``num_crops`` tensors ``(C, T, size, size)`` (views of the input).
    """
    if not isinstance(video_CTHW, torch.Tensor) or video_CTHW.ndim != 4:
        raise ValueError(f"video_CTHW must be a (C, T, H, W) tensor, got {getattr(video_CTHW, 'shape', video_CTHW)}")
    if isinstance(num_crops, bool) or not isinstance(num_crops, int) or num_crops < 1:
        raise ValueError(f"num_crops must be a positive int, got {num_crops!r}")
    height, width = video_CTHW.shape[-2:]
    if not isinstance(size, int) or size < 1 or size > min(height, width):
        raise ValueError(f"size must be an int in [1, min(H, W)={min(height, width)}], got {size!r}")
    long_is_width = width >= height
    slack_long = (width if long_is_width else height) - size
    centre_short = ((height if long_is_width else width) - size) // 2
    if num_crops == 1:
        starts = [slack_long // 2]
    else:
        starts = [round(k * slack_long / (num_crops - 1)) for k in range(num_crops)]
    if long_is_width:
        return [video_CTHW[..., centre_short : centre_short + size, s : s + size] for s in starts]
    return [video_CTHW[..., s : s + size, centre_short : centre_short + size] for s in starts]
