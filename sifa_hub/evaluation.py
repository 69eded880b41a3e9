"""Evaluation: top-1 / top-5 accuracy, NLL and throughput of a model on a loader or on a named dataset.

:func:`evaluate` scores any model on any loader (multi-view batches averaged, DDP shards summed); it is the
validation step of training. :func:`evaluate_model` is ``sifa-hub eval``: it loads ``--model`` through
:func:`sifa_hub.loading.load_model`, builds the evaluation set of ``--data`` with the model's own input geometry
and scores the model on *the classes it was trained on*: data classes the model does not know are left out, and
labels are mapped to the model's class order by name.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .distributed import DistContext
from .utils.runtime import autocast, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["ClassSubset", "clip_probabilities", "evaluate", "evaluate_model", "forward_views", "progress_bar"]


def progress_bar(iterable: Any, enabled: bool, desc: str, total: int | None = None, initial: int = 0) -> Any:
    """``iterable`` wrapped in a tqdm bar when ``enabled`` (else itself)."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, initial=initial, leave=False, dynamic_ncols=True)


def clip_probabilities(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Class probabilities ``(B, N)`` of a model output: softmax of logits, averaged over heads if several."""
    if isinstance(output, torch.Tensor):
        return output.float().softmax(-1)
    return torch.stack([o.float().softmax(-1) for o in output]).mean(0)


def forward_views(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Probabilities ``(B, N)`` averaged over views.

    ``x`` is ``(B, C, T, H, W)``, or ``(B, V, C, T, H, W)`` / ``(B, clips, crops, C, T, H, W)`` views.
    """
    if x.dim() == 5:
        return clip_probabilities(model(x))
    if x.dim() not in (6, 7):
        raise ValueError(f"expected clips (B, C, T, H, W) or views (B, V..., C, T, H, W), got {tuple(x.shape)}")
    b = x.shape[0]
    views = x.reshape(-1, *x.shape[-4:])  # (B·V, C, T, H, W)
    probs = clip_probabilities(model(views))  # (B·V, N)
    return probs.view(b, -1, probs.shape[-1]).mean(1)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | DataLoader,
    *,
    device: torch.device | str = "cpu",
    amp: str = "none",
    ctx: DistContext | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (%), mean NLL and throughput of a model on a loader.

    Multi-view batches ``(B, V, C, T, H, W)`` average the views' probabilities. Under DDP every rank evaluates its
    shard and the counts are summed. Top-5 is top-min(5, N) for fewer classes.

    Returns:
        ``{"top1", "top5", "loss", "num_samples", "clips_per_s"}`` (clips = model inputs, views included).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    counts = torch.zeros(4, dtype=torch.float64)  # correct@1, correct@5, nll sum, samples
    clips = 0
    start = time.perf_counter()
    for x, y in progress_bar(loader, progress and (ctx is None or ctx.is_main), desc):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            probs = forward_views(model, x)  # (B, N)
        top = probs.topk(min(5, probs.shape[-1]), dim=-1).indices  # (B, k)
        hit = top == y[:, None]
        counts += torch.tensor(
            [
                hit[:, 0].sum().item(),
                hit.any(-1).sum().item(),
                -probs.gather(1, y[:, None]).clamp_min(1e-12).log().sum().item(),
                y.numel(),
            ],
            dtype=torch.float64,
        )
        clips += math.prod(x.shape[:-4])  # model inputs, views included
    elapsed = time.perf_counter() - start
    if ctx is not None and ctx.distributed:
        counts = ctx.all_reduce_sum(counts)
        total = ctx.all_reduce_sum(torch.tensor([float(clips), elapsed], dtype=torch.float64))
        clips, elapsed = int(total[0].item()), float(total[1].item()) / ctx.world_size  # time: mean per rank
    model.train(was_training)
    n = max(counts[3].item(), 1.0)
    return {
        "top1": 100.0 * counts[0].item() / n,
        "top5": 100.0 * counts[1].item() / n,
        "loss": counts[2].item() / n,
        "num_samples": int(counts[3].item()),
        "clips_per_s": clips / max(elapsed, 1e-9),
    }


class ClassSubset(Dataset):
    """The samples of ``dataset`` whose class the model knows, labelled with the model's class indices.

    Args:
        dataset: items ``(x, label)`` with ``label`` indexing ``data_classes``.
        labels: the dataset's label of every item (read without decoding any video).
        data_classes: class names of the dataset.
        model_classes: class names of the model, in its output order.
    """

    def __init__(
        self, dataset: Dataset, labels: Sequence[int], data_classes: Sequence[str], model_classes: Sequence[str]
    ) -> None:
        position = {name: i for i, name in enumerate(model_classes)}
        self.mapping = {d: position[name] for d, name in enumerate(data_classes) if name in position}
        self.dataset = dataset
        self.indices = [i for i, label in enumerate(labels) if int(label) in self.mapping]
        self.classes = [name for name in data_classes if name in position]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        load = getattr(self.dataset, "load", None)  # a video dataset: no substitution of a bad file by another
        x, label = load(self.indices[index]) if load is not None else self.dataset[self.indices[index]]
        return x, self.mapping[int(label)]

    def drop_unreadable(self) -> list[str]:
        """Leave out the videos that cannot be opened (missing, empty, corrupt; found by reading, not decoding):
        scored, a bad file would be replaced by another video and counted twice. Returns their paths."""
        from .data.decode import VideoDecodeError, VideoReader

        samples = getattr(self.dataset, "samples", None)
        if samples is None or getattr(self.dataset, "load", None) is None:
            return []
        bad: list[str] = []
        for i in self.indices:
            path = samples[i][0]
            try:
                VideoReader(path).close()
            except VideoDecodeError as err:
                logger.warning("eval: leaving out a bad video (%s)", err)
                bad.append(str(path))
        self.indices = [i for i in self.indices if str(samples[i][0]) not in set(bad)]
        return bad


def _dataset_labels(dataset: Any) -> list[int]:
    """Every item's label without loading the items (motion clips, folder/list datasets, subsets of them)."""
    if isinstance(dataset, torch.utils.data.Subset):
        inner = _dataset_labels(dataset.dataset)
        return [inner[i] for i in dataset.indices]
    if isinstance(getattr(dataset, "labels", None), torch.Tensor):
        return [int(v) for v in dataset.labels.tolist()]
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        return [int(label) for _, label in samples]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def _motion_classes_for(model_classes: Sequence[str]) -> int:
    """The motion-set size (4 or 8) whose classes cover a model's: its held-out clips are then the training run's."""
    from .data import MotionDataset

    four = MotionDataset(1, classes=4).classes
    return 4 if set(model_classes) <= set(four) else 8


def _named_by_index(labels: Sequence[str], data_classes: Sequence[str], data: str) -> list[str]:
    """Integer labels of a list file without class names (classes ``"0"``, ``"1"``, ...) index the model's classes:
    their names are the model's (when the model names its classes and none of them is a bare number)."""
    if list(data_classes) != [str(i) for i in range(len(data_classes))] or set(labels) & set(data_classes):
        return list(data_classes)
    if all(name == f"class_{i}" for i, name in enumerate(labels)):
        return list(data_classes)
    if len(data_classes) > len(labels):
        raise ValueError(
            f"data {data!r} has integer labels up to {len(data_classes) - 1} but the model has {len(labels)} classes"
        )
    return [labels[i] for i in range(len(data_classes))]


def _model_classes(labels: Sequence[str], data_classes: Sequence[str], data: str) -> list[str]:
    """The model's class names, or the data's when the model stores none (``class_<i>``) and sizes agree."""
    if all(name == f"class_{i}" for i, name in enumerate(labels)):
        if len(labels) != len(data_classes):
            raise ValueError(
                f"model has {len(labels)} unnamed classes but data {data!r} has {len(data_classes)}: "
                "save the model with its label names (sifa-hub export --labels) or evaluate on matching data"
            )
        return list(data_classes)
    if not set(labels) & set(data_classes):
        raise ValueError(f"model classes {list(labels)} and data {data!r}'s classes {list(data_classes)} share none")
    return list(labels)


def evaluate_model(
    model: str | nn.Module,
    data: str,
    *,
    data_root: str | None = None,
    num_clips: int = 1,
    num_crops: int = 1,
    batch_size: int = 16,
    workers: int = 0,
    device: str | torch.device = "auto",
    amp: str = "none",
    motion_samples: int = 400,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy of a model on the evaluation set of ``data``, on the model's own classes.

    Args:
        model: variant name, exported folder, training run or checkpoint, Hub id, or a model instance.
        data: ``"motion"`` (the held-out clips of a ``sifa-hub train`` run with this ``seed``, of the motion
            classes the model knows), a folder (its ``val/`` split when present) or a list file.
        data_root: root of relative paths in a list file.
        num_clips: temporal views per video.
        num_crops: spatial crops per view (1 or 3).
        batch_size: videos per batch.
        workers: DataLoader workers.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: autocast dtype name.
        motion_samples: clips of the motion set.
        seed: seed of the motion split (as ``sifa-hub train --seed``).
        progress: show a progress bar.

    Returns:
        :func:`evaluate`'s metrics plus ``"classes"`` (the data classes scored) and ``"excluded_classes"`` (data
        classes the model does not know, whose videos were left out) and ``"skipped_videos"`` (files that cannot be
        read, left out of the scores).
    """
    from .loading import load_model
    from .training_data import build_eval_dataset

    if num_crops not in (1, 3):
        raise ValueError(f"eval: crops must be 1 or 3, got {num_crops}")
    if num_clips < 1 or batch_size < 1:
        raise ValueError(f"eval: clips and batch size must be >= 1, got {num_clips} and {batch_size}")
    dev = resolve_device(device)
    loaded = load_model(model, device=dev)
    geometry = {k: loaded.data_config[k] for k in ("mean", "std", "num_frames", "img_size", "crop_pct")}
    extra: dict[str, Any] = {"eval_clips": num_clips, "eval_crops": num_crops, "data_root": data_root, "seed": seed}
    if data == "motion":
        extra.update(motion_classes=_motion_classes_for(loaded.labels), motion_val_samples=motion_samples)
    dataset, data_classes = build_eval_dataset(data, **geometry, **extra)
    data_classes = _named_by_index(loaded.labels, data_classes, data)
    model_classes = _model_classes(loaded.labels, data_classes, data)
    subset = ClassSubset(dataset, _dataset_labels(dataset), data_classes, model_classes)
    skipped = subset.drop_unreadable()
    if len(subset) == 0 and skipped:
        raise ValueError(f"data {data!r}: none of its videos of the model's classes can be read (e.g. {skipped[0]})")
    if len(subset) == 0:
        raise ValueError(f"data {data!r} has no video of the model's classes {model_classes}")
    loader = DataLoader(subset, batch_size=batch_size, num_workers=workers, shuffle=False)
    metrics: dict[str, Any] = evaluate(loaded.model, loader, device=dev, amp=amp, progress=progress)
    metrics["classes"] = subset.classes
    metrics["excluded_classes"] = [name for name in data_classes if name not in subset.classes]
    metrics["skipped_videos"] = skipped
    return metrics
