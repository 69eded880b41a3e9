"""Datasets and samplers of training and evaluation runs: what ``--data`` names, turned into clips.

``--data`` is ``motion`` (the embedded synthetic set, rendered into memory: :class:`MotionClips`), a folder of class
sub-folders (with ``train/`` + ``val/`` splits, or one tree split by ``val_fraction``) or a list file. A
:class:`DataSpec` holds the fields that decide the clips; :func:`build_datasets` turns it into
``(train_set, val_set, classes)``. Samplers shard over DDP ranks, and the training one can skip what a resumed run
has already seen.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, Subset

__all__ = [
    "MOTION_VAL_SEED_OFFSET",
    "DataSpec",
    "MotionClips",
    "MultiCropTransform",
    "ResumableDistributedSampler",
    "ShardSampler",
    "build_datasets",
    "build_eval_dataset",
]

MOTION_VAL_SEED_OFFSET = 7919  # validation clips of the motion set use seed + this (train: seed)


@dataclass(frozen=True)
class DataSpec:
    """What decides a run's clips (the data fields of ``TrainConfig``, same names and defaults).

    Attributes:
        data: ``"motion"``, a folder or a list file.
        val_data: validation folder or list file (``None``: a ``val/`` split or ``val_fraction`` of ``data``).
        data_root: root of relative paths in list files.
        classes_file: class names of list files (default ``classes.txt`` beside the list file).
        val_fraction: held-out fraction of a folder without splits.
        num_frames: frames per clip ``T``.
        frame_stride: frame step of dense sampling.
        sampling: ``"uniform"`` or ``"dense"``.
        img_size: crop side ``S``.
        hflip: random horizontal flips of training clips.
        motion_classes: 4 or 8 classes of the motion set.
        motion_train_samples / motion_val_samples: clips of the motion set.
        eval_clips: temporal views per validation video.
        eval_crops: spatial crops per view (1 or 3).
        seed: seed of the motion set and of the held-out split.
    """

    data: str = "motion"
    val_data: str | None = None
    data_root: str | None = None
    classes_file: str | None = None
    val_fraction: float = 0.1
    num_frames: int = 8
    frame_stride: int = 2
    sampling: str = "uniform"
    img_size: int = 32
    hflip: bool = False
    motion_classes: int = 8
    motion_train_samples: int = 2000
    motion_val_samples: int = 400
    eval_clips: int = 1
    eval_crops: int = 1
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Any) -> DataSpec:
        """The data fields of any config object that has them (``TrainConfig``)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)})


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` (rank-disjoint shards, epoch-seeded shuffles) that can skip its first ``start`` items.

    Skipping lets a run resumed mid-epoch see exactly the batches the interrupted run had not yet seen.
    """

    def __init__(self, dataset: Dataset, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


class ShardSampler(Sampler[int]):
    """Evaluation sharding without padding: rank r gets indices ``r, r + W, r + 2W, …`` (every sample once)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class MotionClips(Dataset):
    """The embedded motion set (:class:`sifa_hub.data.MotionDataset`) rendered once into memory.

    Clips are stored as uint8 and normalised with the *model's* mean/std on access, so training, evaluation and
    ``predict`` on mp4 files of the same clips see identical inputs.

    Args:
        num_samples: clips (labels ``i % num_classes``, balanced).
        num_frames: frames per clip ``T``.
        size: frame side ``S``.
        seed: clip ``i`` depends only on ``(seed, i)``.
        mean: per-channel mean of ``[0, 1]`` pixels.
        std: per-channel std.
        num_classes: 8 (all four time-reversal pairs) or 4 (left/right/up/down).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        num_frames: int,
        size: int,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
        num_classes: int = 8,
    ) -> None:
        from .data import MotionDataset

        source = MotionDataset(
            num_samples,
            num_frames=num_frames,
            size=size,
            seed=seed,
            classes=num_classes,  # the first n classes: pairs (left, right), (up, down), ...
            normalize=False,
        )
        self.classes: list[str] = list(source.classes)
        self.pairs = list(source.pairs)
        chunks = [source.clips_uint8(range(i, min(i + 256, num_samples))) for i in range(0, num_samples, 256)]
        self.videos = torch.cat(chunks) if chunks else torch.empty(0, num_frames, size, size, 3, dtype=torch.uint8)
        self.labels = torch.tensor([source.label(i) for i in range(num_samples)], dtype=torch.long)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(video (3, T, S, S) float, label)``."""
        video = self.videos[index].permute(3, 0, 1, 2).float().div_(255.0)  # (3, T, S, S)
        return (video - self.mean) / self.std, int(self.labels[index])


class MultiCropTransform:
    """Evaluation transform with ``num_crops`` spatial views: short side → ``size``, normalise, crops along the long
    side (:func:`sifa_hub.data.multi_crop_views`).

    Maps uint8 ``(T, H, W, 3)`` to float ``(num_crops, 3, T, size, size)``.
    """

    def __init__(self, size: int, num_crops: int, *, mean: Sequence[float], std: Sequence[float]) -> None:
        from torchvision.transforms import v2

        from .data import VideoTransform

        self.size, self.num_crops = size, num_crops
        self.resize = VideoTransform(
            v2.Compose(
                [v2.Resize(size, antialias=True), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
            )
        )

    def __call__(self, video: torch.Tensor) -> torch.Tensor:
        from .data import multi_crop_views

        return torch.stack(multi_crop_views(self.resize(video), self.size, self.num_crops))  # (V, 3, T, S, S)


def _motion_sets(
    spec: DataSpec, mean: Sequence[float], std: Sequence[float], train_split: bool
) -> tuple[Dataset | None, Dataset, list[str]]:
    geometry: dict[str, Any] = {"num_frames": spec.num_frames, "size": spec.img_size, "mean": mean, "std": std}
    geometry["num_classes"] = spec.motion_classes
    val = MotionClips(spec.motion_val_samples, seed=spec.seed + MOTION_VAL_SEED_OFFSET, **geometry)
    train = MotionClips(spec.motion_train_samples, seed=spec.seed, **geometry) if train_split else None
    return train, val, val.classes


def _transforms(
    spec: DataSpec, mean: Sequence[float], std: Sequence[float], crop_pct: float
) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]:
    """Training transform (random crop of a ``img_size / crop_pct`` short side) and evaluation transform."""
    from . import data as D

    train_tf = D.build_transform(
        train=True, size=spec.img_size, crop_pct=crop_pct, mean=mean, std=std, flip=spec.hflip
    )
    val_tf: Callable[[torch.Tensor], torch.Tensor]
    if spec.eval_crops == 1:  # the clip pipeline's rule (floor(crop / crop_pct)): predict's pixels
        val_tf = D.build_transform(train=False, size=spec.img_size, crop_pct=crop_pct, mean=mean, std=std)
    else:
        val_tf = MultiCropTransform(spec.img_size, spec.eval_crops, mean=mean, std=std)
    return train_tf, val_tf


def _video_dataset(spec: DataSpec, path: str, train: bool, transform: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A folder or list-file dataset of ``path`` (``num_clips`` views for evaluation)."""
    from . import data as D

    kw: dict[str, Any] = {"num_frames": spec.num_frames, "stride": spec.frame_stride, "sampling": spec.sampling}
    kw.update(transform=transform, train=train, num_clips=1 if train else spec.eval_clips)
    if os.path.isdir(path):
        return D.VideoFolderDataset(path, skip_bad=True, **kw)
    if os.path.isfile(path):
        names_file = spec.classes_file or os.path.join(os.path.dirname(os.path.abspath(path)), "classes.txt")
        names = None
        if os.path.isfile(names_file):
            with open(names_file, encoding="utf-8-sig") as f:
                names = [line.strip() for line in f if line.strip()]
        elif spec.classes_file:
            raise ValueError(f"classes file {spec.classes_file!r} does not exist")
        return D.VideoListDataset(path, root=spec.data_root, skip_bad=True, classes=names, **kw)
    raise ValueError(f"data {path!r} is neither 'motion', a folder nor a list file")


def _held_out_split(spec: DataSpec, train_tf: Any, val_tf: Any) -> tuple[Any, Any]:
    """``val_fraction`` of one tree held out (the same videos for every run with this seed)."""
    full_train = _video_dataset(spec, spec.data, True, train_tf)
    full_val = _video_dataset(spec, spec.data, False, val_tf)
    order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(spec.seed)).tolist()
    n_val = max(1, round(spec.val_fraction * len(order)))
    if n_val >= len(order):
        raise ValueError(f"data {spec.data!r} has {len(order)} videos: too few to hold out a validation split")
    train_set: Any = Subset(full_train, sorted(order[n_val:]))
    val_set: Any = Subset(full_val, sorted(order[:n_val]))
    train_set.classes, val_set.classes = full_train.classes, full_val.classes
    return train_set, val_set


def build_datasets(
    spec: DataSpec,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    crop_pct: float = 1.0,
    train_split: bool = True,
) -> tuple[Dataset | None, Dataset, list[str]]:
    """Training set (``None`` unless ``train_split``), validation set and class names of ``spec.data``.

    Video files: training clips are random ``img_size`` crops of frames resized to a short side of
    ``img_size / crop_pct`` (flipped with ``spec.hflip``); evaluation takes the centre crop, or ``spec.eval_crops``
    crops spanning a short side of ``img_size``; ``spec.eval_clips`` temporal views.

    Args:
        spec: the data fields of the run.
        mean: per-channel normalisation mean of the model.
        std: per-channel normalisation std of the model.
        crop_pct: the model's crop fraction (``pretrained_cfg['crop_pct']``).
        train_split: also build the training set.
    """
    if spec.data == "motion":
        return _motion_sets(spec, mean, std, train_split)
    train_tf, val_tf = _transforms(spec, mean, std, crop_pct)
    train_set: Any
    if spec.val_data is not None:
        train_set = _video_dataset(spec, spec.data, True, train_tf) if train_split else None
        val_set = _video_dataset(spec, spec.val_data, False, val_tf)
    elif os.path.isdir(os.path.join(spec.data, "train")) and os.path.isdir(os.path.join(spec.data, "val")):
        train_set = _video_dataset(spec, os.path.join(spec.data, "train"), True, train_tf) if train_split else None
        val_set = _video_dataset(spec, os.path.join(spec.data, "val"), False, val_tf)
    else:
        train_set, val_set = _held_out_split(spec, train_tf, val_tf)
        train_set = train_set if train_split else None
    classes = list(val_set.classes)
    if train_set is not None and list(train_set.classes) != classes:
        raise ValueError(f"training classes {list(train_set.classes)} differ from validation classes {classes}")
    return train_set, val_set, classes


def build_eval_dataset(
    data: str,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    num_frames: int,
    img_size: int,
    crop_pct: float = 1.0,
    **fields: Any,
) -> tuple[Dataset, list[str]]:
    """The evaluation set of ``data`` and its class names (a folder's ``val/`` split when it has one).

    Args:
        data: ``"motion"``, a folder or a list file.
        mean / std / num_frames / img_size / crop_pct: the model's input (:func:`sifa_hub.loading.data_config`).
        **fields: further :class:`DataSpec` fields (``eval_clips``, ``motion_classes``, ``seed``, ...).
    """
    if data != "motion" and os.path.isdir(data) and os.path.isdir(os.path.join(data, "val")):
        data = os.path.join(data, "val")
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(DataSpec)})
    if unknown:
        raise TypeError(f"build_eval_dataset: unknown DataSpec fields {unknown}")
    spec = DataSpec(data=data, val_data=data, num_frames=num_frames, img_size=img_size, **fields)
    _, val_set, classes = build_datasets(spec, mean, std, crop_pct=crop_pct, train_split=False)
    return val_set, classes
