"""Frame-index sampling for video clips.

Two schemes, each with a training (``mode="random"``) and a deterministic evaluation (``mode="center"``) form:

* **dense** (SlowFast/I3D style): ``clip_len`` frames ``stride`` apart from one start frame.
* **uniform** (TSN/TSM style): the video is cut into ``num_segments`` equal segments and one frame is taken from each.

Short videos follow one rule everywhere: **indices past the last frame are clamped to it**, i.e. the clip is padded
by repeating the last frame. Time never runs backwards (looping a clip would put a backward jump in it, which a
motion-sensitive model reads as reversed motion). A video with fewer than one frame is an error.
"""

from __future__ import annotations

import torch

__all__ = ["dense_indices", "multi_clip_indices", "multi_uniform_indices", "uniform_indices"]

_MODES = ("random", "center")


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")


def _dense_from_start(num_video_frames: int, start: int, clip_len: int, stride: int) -> list[int]:
    """``clip_len`` indices ``stride`` apart from ``start``, clamped to the last frame."""
    return [min(start + i * stride, num_video_frames - 1) for i in range(clip_len)]


def dense_indices(
    num_video_frames: int,
    clip_len: int,
    stride: int,
    *,
    mode: str,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Indices of one dense clip: ``clip_len`` frames, ``stride`` apart.

    The clip spans ``(clip_len - 1) * stride + 1`` frames. ``mode="random"`` draws its start uniformly among the
    positions where it fits; ``mode="center"`` centres it. A video shorter than the span starts the clip at frame 0
    and clamps indices past the end to the last frame.

    Args:
        num_video_frames: Frames in the video, >= 1.
        clip_len: Frames in the clip, >= 1.
        stride: Step between sampled frames, >= 1.
        mode: ``"random"`` (training) or ``"center"`` (evaluation).
        generator: Random generator for ``mode="random"`` (default: torch's global one).

    Returns:
        ``clip_len`` non-decreasing frame indices in ``[0, num_video_frames)``.
    """
    _check_int("num_video_frames", num_video_frames, 1)
    _check_int("clip_len", clip_len, 1)
    _check_int("stride", stride, 1)
    _check_mode(mode)
    slack = num_video_frames - ((clip_len - 1) * stride + 1)
    if slack <= 0:
        start = 0
    elif mode == "random":
        start = int(torch.randint(0, slack + 1, (1,), generator=generator))
    else:
        start = slack // 2
    return _dense_from_start(num_video_frames, start, clip_len, stride)


def uniform_indices(
    num_video_frames: int,
    num_segments: int,
    *,
    mode: str,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Indices of one segment-based clip: one frame from each of ``num_segments`` equal segments.

    Segment ``i`` covers ``[i * n / S, (i + 1) * n / S)``; ``mode="random"`` takes a uniform frame inside it,
    ``mode="center"`` its middle frame. With fewer frames than segments the segments are shorter than a frame and
    neighbouring segments share frames (repetition, never a backward step).

    Args:
        num_video_frames: Frames in the video (``n``), >= 1.
        num_segments: Segments and sampled frames (``S``), >= 1.
        mode: ``"random"`` (training) or ``"center"`` (evaluation).
        generator: Random generator for ``mode="random"`` (default: torch's global one).

    Returns:
        ``num_segments`` non-decreasing frame indices in ``[0, num_video_frames)``.
    """
    _check_int("num_video_frames", num_video_frames, 1)
    _check_int("num_segments", num_segments, 1)
    _check_mode(mode)
    if mode == "random":
        offsets = torch.rand(num_segments, generator=generator, dtype=torch.float64).tolist()
    else:
        offsets = [0.5] * num_segments
    seg = num_video_frames / num_segments
    return [min(int((i + u) * seg), num_video_frames - 1) for i, u in enumerate(offsets)]


def multi_clip_indices(num_video_frames: int, clip_len: int, stride: int, num_clips: int) -> list[list[int]]:
    """Indices of ``num_clips`` dense clips evenly spread over the video (multi-view testing).

    Clip ``k`` starts at ``round(k * slack / (num_clips - 1))`` where ``slack`` is the number of free start
    positions, so the first clip starts at frame 0 and the last one ends at the last frame; a single clip is
    centred (as `dense_indices` with ``mode="center"``). Short videos clamp to the last frame, so all their clips
    are the same.

    Args:
        num_video_frames: Frames in the video, >= 1.
        clip_len: Frames per clip, >= 1.
        stride: Step between sampled frames, >= 1.
        num_clips: Number of clips, >= 1.

    Returns:
        ``num_clips`` lists of ``clip_len`` frame indices, clips in temporal order.
    """
    _check_int("num_clips", num_clips, 1)
    if num_clips == 1:
        return [dense_indices(num_video_frames, clip_len, stride, mode="center")]
    _check_int("num_video_frames", num_video_frames, 1)
    _check_int("clip_len", clip_len, 1)
    _check_int("stride", stride, 1)
    slack = max(num_video_frames - ((clip_len - 1) * stride + 1), 0)
    starts = [round(k * slack / (num_clips - 1)) for k in range(num_clips)]
    return [_dense_from_start(num_video_frames, start, clip_len, stride) for start in starts]


def multi_uniform_indices(num_video_frames: int, num_segments: int, num_clips: int) -> list[list[int]]:
    """Indices of ``num_clips`` segment-based clips for multi-view testing.

    Clip ``k`` takes the frame at fraction ``(k + 0.5) / num_clips`` of every segment, so the clips interleave;
    ``num_clips=1`` equals `uniform_indices` with ``mode="center"``.

    Args:
        num_video_frames: Frames in the video, >= 1.
        num_segments: Segments (frames) per clip, >= 1.
        num_clips: Number of clips, >= 1.

    Returns:
        ``num_clips`` lists of ``num_segments`` frame indices.
    """
    _check_int("num_video_frames", num_video_frames, 1)
    _check_int("num_segments", num_segments, 1)
    _check_int("num_clips", num_clips, 1)
    seg = num_video_frames / num_segments
    return [
        [min(int((i + (k + 0.5) / num_clips) * seg), num_video_frames - 1) for i in range(num_segments)]
        for k in range(num_clips)
    ]
