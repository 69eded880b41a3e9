"""Video datasets over files: a class-per-folder tree and Kinetics/SSv2-style list files.

Both pick frame indices (`sampling`; in evaluation the clip pipeline's `clip_indices`, as ``predict`` does), decode
only those frames (`VideoReader`), and apply a transform, returning ``(video (C, T, H, W) float, label)``; with
``num_clips > 1`` (evaluation) the video is ``(num_clips, C, T, H, W)``. The evaluation transform that matches
``predict`` and the video processor pixel for pixel is `sifa_hub.data.pipeline.ClipTransform` (what
``build_transform(train=False, ...)`` returns). Videos shorter than a clip are padded by repeating frames, with a
`ShortVideoWarning`.

Bad videos raise `VideoDecodeError` naming the file. With ``skip_bad=True`` (meant for training) the dataset logs a
warning (once per file), remembers the file in ``bad_paths`` (never decoded again) and returns the next decodable
sample in index order instead, so an epoch never dies on one broken file; ``num_skipped`` counts every bad file passed
over this way (a known bad file counts again each time a lookup passes over it). With DataLoader workers each worker
holds its own copy of these counters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .decode import VideoDecodeError, VideoReader
from .pipeline import clip_indices, warn_if_short
from .sampling import dense_indices, uniform_indices
from .transforms import to_float_cthw

__all__ = ["VIDEO_EXTENSIONS", "VideoFolderDataset", "VideoListDataset"]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".gif")
_SAMPLINGS = ("dense", "uniform")


class _VideoClipDataset(Dataset):
    """Shared decoding, sampling, transform and bad-file handling over ``self.samples`` ``[(path, label)]``."""

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        classes: list[str],
        *,
        num_frames: int,
        stride: int,
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        sampling: str,
        train: bool,
        num_clips: int,
        skip_bad: bool,
    ) -> None:
        for name, value in (("num_frames", num_frames), ("stride", stride), ("num_clips", num_clips)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if sampling not in _SAMPLINGS:
            raise ValueError(f"sampling must be one of {_SAMPLINGS}, got {sampling!r}")
        if train and num_clips != 1:
            raise ValueError(f"num_clips > 1 is for evaluation; got num_clips={num_clips} with train=True")
        self.samples = samples
        self.classes = classes
        self.num_frames = num_frames
        self.stride = stride
        self.transform = transform if transform is not None else to_float_cthw
        self.sampling = sampling
        self.train = train
        self.num_clips = num_clips
        self.skip_bad = skip_bad
        self.num_skipped = 0
        self.bad_paths: set[Path] = set()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def _clip_indices(self, num_video_frames: int, path: Path) -> list[list[int]]:
        """Frame indices of the clip(s) to take from a video of ``num_video_frames`` frames."""
        n, t, sampling, stride = num_video_frames, self.num_frames, self.sampling, self.stride
        if not self.train:
            return clip_indices(n, t, sampling=sampling, stride=stride, num_clips=self.num_clips, source=path)
        warn_if_short(n, t, sampling=sampling, stride=stride, source=path)
        if self.sampling == "dense":
            return [dense_indices(num_video_frames, self.num_frames, self.stride, mode="random")]
        return [uniform_indices(num_video_frames, self.num_frames, mode="random")]

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """Sample ``index`` without bad-file handling (raises `VideoDecodeError`)."""
        path, label = self.samples[index]
        with VideoReader(path) as reader:
            frames = reader.get_clips(self._clip_indices(reader.num_frames, path))  # each (T, H, W, 3)
        clips = [self.transform(clip) for clip in frames]  # each (C, T, H, W)
        video = clips[0] if self.num_clips == 1 else torch.stack(clips)
        return video, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Returns ``(video, label)``: video ``(C, T, H, W)``, or ``(num_clips, C, T, H, W)`` if ``num_clips > 1``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} videos")
        index %= len(self)
        if not self.skip_bad:
            return self.load(index)
        for step in range(len(self)):
            candidate = (index + step) % len(self)
            path = self.samples[candidate][0]
            if path not in self.bad_paths:
                try:
                    return self.load(candidate)
                except VideoDecodeError as err:
                    self.bad_paths.add(path)
                    logger.warning("skipping a bad video (%s)", err)
            self.num_skipped += 1
        raise VideoDecodeError(self.samples[index][0], f"no decodable video in the whole dataset ({len(self)} files)")


def _label_index(token: str, class_to_idx: dict[str, int] | None, num_classes: int | None, where: str) -> int:
    """Turn a list-file label (class name or integer index) into an index."""
    if class_to_idx is not None and token in class_to_idx:
        return class_to_idx[token]
    try:
        label = int(token)
    except ValueError:
        raise ValueError(f"{where}: unknown label {token!r} (not a class name nor an integer)") from None
    if label < 0:
        raise ValueError(f"{where}: label {label} is negative (labels are class names or indices >= 0)")
    if num_classes is not None and label >= num_classes:
        raise ValueError(f"{where}: label {label} out of range for {num_classes} classes")
    return label


def _suffixes(extensions: str | Sequence[str]) -> tuple[str, ...]:
    """Lower-case suffixes with their dot: ``"mp4"``, ``".MP4"`` and ``["mp4"]`` all mean ``(".mp4",)``."""
    items = [extensions] if isinstance(extensions, str) else list(extensions)
    if not items or not all(isinstance(ext, str) and ext.strip(".") for ext in items):
        raise ValueError(f"extensions must be file suffixes such as '.mp4', got {extensions!r}")
    return tuple("." + ext.lower().lstrip(".") for ext in items)


class VideoFolderDataset(_VideoClipDataset):
    """Videos laid out as ``root/<class name>/<video file>``; classes are the sorted folder names.

    Args:
        root: Dataset folder.
        num_frames: Frames per clip (dense) or segments (uniform).
        stride: Step between frames of a dense clip.
        transform: uint8 ``(T, H, W, 3)`` → float ``(C, T, H, W)`` (e.g. `build_transform`); default: `to_float_cthw`
            (``[0, 1]`` pixels, no resizing).
        sampling: ``"dense"`` or ``"uniform"`` (see `sampling`).
        train: Random clip positions (training) or centred/evenly spread ones (evaluation).
        num_clips: Clips per video in evaluation (multi-view testing).
        skip_bad: Replace undecodable videos by the next good one (and count them) instead of raising.
        extensions: File suffixes taken as videos (case-insensitive, the dot optional: ``"mp4"`` or ``".mp4"``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        num_frames: int,
        stride: int = 1,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sampling: str = "dense",
        train: bool = True,
        num_clips: int = 1,
        skip_bad: bool = True,
        extensions: str | Sequence[str] = VIDEO_EXTENSIONS,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"dataset root {str(root)!r} is not a folder")
        classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
        if not classes:
            raise ValueError(f"dataset root {str(root)!r} has no class folders (expected root/<class>/<video>)")
        suffixes = _suffixes(extensions)
        samples = [
            (path, label)
            for label, name in enumerate(classes)
            for path in sorted((root / name).rglob("*"))
            if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith(".")
        ]
        if not samples:
            raise ValueError(f"no video files ({', '.join(suffixes)}) under {str(root)!r}")
        empty = sorted(set(classes) - {classes[label] for _, label in samples})
        if empty:
            logger.warning(
                "%s: class folder(s) %s hold no video file (%s); they stay classes (labels keep the folder order)",
                root,
                empty,
                ", ".join(suffixes),
            )
        self.root = root
        super().__init__(
            samples,
            classes,
            num_frames=num_frames,
            stride=stride,
            transform=transform,
            sampling=sampling,
            train=train,
            num_clips=num_clips,
            skip_bad=skip_bad,
        )


class VideoListDataset(_VideoClipDataset):
    """Videos listed in a text file, one ``<path> <label>`` per line (Kinetics / Something-Something style).

    Paths are relative to ``root`` (default: the list file's folder) unless absolute and may contain spaces (the
    label is the last whitespace-separated token). Labels are class names or integer indices. Blank lines and lines
    starting with ``#`` are ignored.

    Args:
        list_file: The list file.
        root: Folder that relative paths start from.
        num_frames, stride, transform, sampling, train, num_clips, skip_bad: As in `VideoFolderDataset`.
        classes: Class names in label order. Default: the sorted label names when the file uses names, else
            ``["0", ..., str(max label)]``.
    """

    def __init__(
        self,
        list_file: str | os.PathLike,
        *,
        root: str | os.PathLike | None = None,
        num_frames: int,
        stride: int = 1,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sampling: str = "dense",
        train: bool = True,
        num_clips: int = 1,
        skip_bad: bool = True,
        classes: Sequence[str] | None = None,
    ) -> None:
        list_file = Path(list_file)
        if not list_file.is_file():
            raise ValueError(f"list file {str(list_file)!r} does not exist")
        base = Path(root) if root is not None else list_file.parent
        try:
            text = list_file.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of a path
        except UnicodeDecodeError as err:
            problem = f"{err.reason} at byte {err.start}"
            raise ValueError(f"list file {str(list_file)!r} is not UTF-8 text ({problem})") from None
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{list_file}:{number}: expected '<path> <label>', got {line!r}")
            if parts[1].lower().endswith(VIDEO_EXTENSIONS):
                raise ValueError(f"{list_file}:{number}: no label after the path ('<path> <label>'), got {line!r}")
            entries.append((parts[0], parts[1], f"{list_file}:{number}"))
        if not entries:
            raise ValueError(f"list file {str(list_file)!r} lists no video")
        if classes is None:
            names = {token for _, token, _ in entries if not token.lstrip("-").isdigit()}
            if names:
                classes = sorted(names)
            else:
                classes = [str(i) for i in range(max(int(token) for _, token, _ in entries) + 1)]
        classes = list(classes)
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be distinct, got {classes}")
        class_to_idx = {name: i for i, name in enumerate(classes)}
        samples = [
            (base / path, _label_index(token, class_to_idx, len(classes), where)) for path, token, where in entries
        ]
        self.list_file = list_file
        self.root = base
        super().__init__(
            samples,
            classes,
            num_frames=num_frames,
            stride=stride,
            transform=transform,
            sampling=sampling,
            train=train,
            num_clips=num_clips,
            skip_bad=skip_bad,
        )
