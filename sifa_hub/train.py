"""Fine-tuning and evaluation of SIFA video models, from one CPU process to multi-node DDP.

``train(TrainConfig(...))`` fine-tunes any registered variant (a timm name, a local exported directory or a
Hugging Face Hub id) on a class-per-folder video tree, a list file or the embedded synthetic motion set.
It does warm-up + cosine learning-rate steps, label smoothing, bf16/fp16 autocast, gradient accumulation and
gradient checkpointing; checkpoints are safetensors + JSON only (no pickle) and resume exactly.

Distributed training runs under ``torchrun`` (one process per device; gloo on CPU, NCCL on GPU)::

    # one machine, 8 GPUs
    torchrun --nproc_per_node 8 -m sifa_hub.cli train --model sifa_resnet50 --data /data/k400 --amp bf16
    # two machines: run on each, with the same rendezvous endpoint (a host both can reach)
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint node0:29500 \\
        -m sifa_hub.cli train --model sifa_resnet50 --data /data/k400 --output-dir /shared/run1

Checkpoints are written by every rank into one directory (each rank saves its own RNG state), so multi-node
runs need ``--output-dir`` on a shared filesystem. ``--batch-size`` is per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

__all__ = [
    "TrainConfig",
    "DistContext",
    "train",
    "evaluate",
    "create_model",
    "model_source",
    "build_datasets",
    "MotionClips",
    "MultiCropTransform",
    "TrainingForward",
    "compute_loss",
    "clip_probabilities",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "export_trained_model",
    "write_json_atomic",
]

CHECKPOINT_FORMAT = 1
_AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    """Everything a training run needs; every field is also a ``sifa-hub train`` option (``_`` → ``-``)."""

    model: str = field(
        default="sifa_resnet_pico",
        metadata={"help": "timm name (e.g. sifa_resnet50), an exported model directory, or hf-hub:ORG/NAME"},
    )
    data: str = field(
        default="motion",
        metadata={
            "help": "'motion' (embedded synthetic set), a folder of class sub-folders (with train/ and val/ "
            "splits, or one tree split by --val-fraction), or a list file ('path label' per line)"
        },
    )
    val_data: str | None = field(default=None, metadata={"help": "validation folder or list file"})
    data_root: str | None = field(default=None, metadata={"help": "root directory for relative paths in list files"})
    classes_file: str | None = field(
        default=None,
        metadata={"help": "class names, one per line, for list files (default: classes.txt beside the list file)"},
    )
    val_fraction: float = field(
        default=0.1, metadata={"help": "held-out fraction when a folder has no val/ split and no --val-data"}
    )
    output_dir: str = field(default="./sifa_train_out", metadata={"help": "checkpoints, metrics.json, model/"})
    export_dir: str | None = field(
        default=None, metadata={"help": "where to export the trained model (default: OUTPUT_DIR/model)"}
    )
    pretrained: bool = field(default=False, metadata={"help": "load the registered pretrained weights (timm names)"})
    drop_rate: float | None = field(default=None, metadata={"help": "classifier dropout (default: the model's)"})
    drop_path_rate: float | None = field(default=None, metadata={"help": "stochastic depth (default: the model's)"})
    num_frames: int = field(default=8, metadata={"help": "frames per clip"})
    frame_stride: int = field(default=2, metadata={"help": "frame step of dense sampling (video data)"})
    hflip: bool = field(
        default=False,
        metadata={"help": "random horizontal flips (appearance data like Kinetics; never for direction classes)"},
    )
    sampling: str = field(default="uniform", metadata={"help": "'uniform' (TSN-style) or 'dense' frame sampling"})
    img_size: int = field(default=32, metadata={"help": "square crop size fed to the model"})
    motion_classes: int = field(
        default=8, metadata={"help": "motion set classes: 8 (all four time-reversal pairs) or 4 (the translations)"}
    )
    motion_train_samples: int = field(default=2000, metadata={"help": "training clips of the motion set"})
    motion_val_samples: int = field(default=400, metadata={"help": "validation clips of the motion set"})
    epochs: int = field(default=5, metadata={"help": "training epochs"})
    batch_size: int = field(default=32, metadata={"help": "clips per process and micro-step"})
    accum_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step (gradient accumulation)"})
    optimizer: str = field(default="adamw", metadata={"help": "'adamw' or 'sgd' (momentum, nesterov)"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(default=0.01, metadata={"help": "final learning rate as a fraction of --lr"})
    weight_decay: float = field(default=0.05, metadata={"help": "decoupled weight decay (not on norms, biases)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    warmup_epochs: float = field(default=1.0, metadata={"help": "linear warm-up length in epochs (may be fractional)"})
    label_smoothing: float = field(default=0.1, metadata={"help": "cross-entropy label smoothing"})
    clip_grad: float | None = field(default=None, metadata={"help": "clip the gradient norm to this value"})
    amp: str = field(default="none", metadata={"help": "autocast: 'none', 'bf16' or 'fp16' (with loss scaling)"})
    grad_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    sync_bn: bool = field(default=False, metadata={"help": "SyncBatchNorm across ranks (distributed runs)"})
    eval_clips: int = field(default=1, metadata={"help": "temporal views per validation video (scores averaged)"})
    eval_crops: int = field(
        default=1, metadata={"help": "spatial crops per view: 1 (centre) or 3 (left/centre/right)"}
    )
    eval_every: int = field(default=1, metadata={"help": "evaluate every N epochs (and after the last one)"})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu', 'cuda' or 'cuda:N'"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, data order and augmentation"})
    resume: str | None = field(
        default=None, metadata={"help": "'latest' (newest checkpoint in --output-dir) or a checkpoint directory"}
    )
    save_every_steps: int = field(default=0, metadata={"help": "also checkpoint every N optimizer steps (0: epochs)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "how many recent checkpoints to keep"})
    stop_after_steps: int = field(
        default=0,
        metadata={"help": "leave cleanly after N optimizer steps of this run with a checkpoint (time-limited jobs)"},
    )
    log_every: int = field(default=10, metadata={"help": "record the training loss every N optimizer steps"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        positive = (
            "num_frames",
            "frame_stride",
            "img_size",
            "epochs",
            "batch_size",
            "accum_steps",
            "eval_clips",
            "eval_every",
            "log_every",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"TrainConfig.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.amp not in _AMP_DTYPES:
            raise ValueError(f"TrainConfig.amp must be one of {tuple(_AMP_DTYPES)}, got {self.amp!r}")
        if self.sampling not in ("uniform", "dense"):
            raise ValueError(f"TrainConfig.sampling must be 'uniform' or 'dense', got {self.sampling!r}")
        if self.eval_crops not in (1, 3):
            raise ValueError(f"TrainConfig.eval_crops must be 1 or 3, got {self.eval_crops}")
        if not 0.0 < self.lr < 10.0:
            raise ValueError(f"TrainConfig.lr must be in (0, 10), got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("warmup_epochs", "weight_decay", "save_every_steps", "stop_after_steps", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"TrainConfig.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        for name in ("drop_rate", "drop_path_rate"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {value}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"TrainConfig.clip_grad must be > 0, got {self.clip_grad}")
        if self.motion_classes not in (4, 8):
            raise ValueError(f"TrainConfig.motion_classes must be 4 or 8, got {self.motion_classes}")
        if self.data == "motion" and (self.motion_train_samples < 1 or self.motion_val_samples < 1):
            raise ValueError("TrainConfig.motion_train_samples and motion_val_samples must be >= 1")


# ----------------------------------------------------------------------------------------------------------------
# Distributed context


@dataclass
class DistContext:
    """Process placement: ``rank`` of ``world_size`` processes, the device this process uses."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device: str = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (a no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


# ----------------------------------------------------------------------------------------------------------------
# Models


def model_source(name_or_path: str) -> tuple[str, bool]:
    """Map a ``--model`` value to a ``timm.create_model`` name and whether it carries its own weights.

    A directory becomes ``local-dir:DIR``; ``hf-hub:`` / ``local-dir:`` names pass through; ``ORG/NAME`` that is
    not a local path is taken as a Hugging Face Hub id; anything else must be a registered timm name.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ValueError(f"model must be a non-empty string, got {name_or_path!r}")
    if name_or_path.startswith(("hf-hub:", "local-dir:")):
        return name_or_path, True
    if os.path.isdir(name_or_path):
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise ValueError(f"model directory {name_or_path!r} has no config.json (expected an exported model)")
        return f"local-dir:{os.path.abspath(name_or_path)}", True
    if "/" in name_or_path or os.sep in name_or_path:
        if name_or_path.startswith((".", os.sep)) or name_or_path.count("/") != 1:
            raise ValueError(f"model directory {name_or_path!r} does not exist")
        return f"hf-hub:{name_or_path}", True
    import timm

    if not timm.is_model(name_or_path.split(".")[0]):
        sifa = [n for n in timm.list_models() if "sifa" in n or "c2d" in n]
        raise ValueError(f"unknown model {name_or_path!r}; registered SIFA/C2D models: {', '.join(sifa)}")
    return name_or_path, False


def create_model(
    name_or_path: str,
    *,
    num_classes: int | None = None,
    num_frames: int | None = None,
    img_size: int | None = None,
    pretrained: bool = False,
    **model_kwargs: Any,
) -> nn.Module:
    """Create a model from a timm name, an exported directory or a Hub id.

    Directories and Hub ids load their weights; ``num_classes`` different from theirs re-initialises the head.

    Args:
        name_or_path: see :func:`model_source`.
        num_classes: classifier size (``None``: the model's own).
        num_frames: clip length the model is built for (``None``: its default / saved value).
        img_size: input side (``None``: its default / saved value).
        pretrained: load registered pretrained weights for a timm name.
        **model_kwargs: further constructor arguments (e.g. ``drop_rate``); ``None`` values are dropped.
    """
    import timm

    import sifa_hub  # noqa: F401  (registers the models)

    source, has_weights = model_source(name_or_path)
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if num_frames is not None:
        kwargs["num_frames"] = num_frames
    if img_size is not None:
        kwargs["img_size"] = img_size
    kwargs.update({k: v for k, v in model_kwargs.items() if v is not None})
    return timm.create_model(source, pretrained=has_weights or pretrained, **kwargs)


def model_data_config(model: nn.Module) -> dict[str, Any]:
    """Normalisation and geometry of a model's input: ``mean``, ``std``, ``num_frames``, ``img_size``, ``crop_pct``."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    # a model loaded from a directory / the Hub: its saved input size; a model built here: the size it was built for
    size = None if cfg.get("source") in ("local-dir", "hf-hub") else getattr(model, "img_size", None)
    if isinstance(size, (tuple, list)):
        size = size[-1]
    return {
        "mean": tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        "num_frames": int(getattr(model, "num_frames", 8)),
        "img_size": int(size if isinstance(size, int) else cfg.get("input_size", (3, 224, 224))[-1]),
        "crop_pct": float(cfg.get("crop_pct", 1.0)),
    }


def label_names(model: nn.Module) -> list[str]:
    """Class names stored with a model (``pretrained_cfg['label_names']``), or ``class_<i>``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    n = int(getattr(model, "num_classes", 0))
    if isinstance(names, dict):
        names = [names.get(str(i), names.get(i, f"class_{i}")) for i in range(n)]
    if isinstance(names, (list, tuple)) and len(names) == n:
        return [str(x) for x in names]
    return [f"class_{i}" for i in range(n)]


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP and :class:`TrainingForward` wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, TrainingForward)):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model.model
    return model


# ----------------------------------------------------------------------------------------------------------------
# Loss and scores


class TrainingForward(nn.Module):
    """Train-time forward of a model: the raw logits of every head when it has several.

    SIFA-Net (``forward_heads``) gives ``(logits_a, logits_b)`` for its reference two-branch loss; other models give
    their usual logits. Wrapping (rather than calling ``model.forward_heads``) keeps DDP's gradient hooks in the path.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """``(B, C, T, H, W)`` → logits ``(B, N)`` or a tuple of per-head logits."""
        heads = getattr(self.model, "forward_heads", None)
        if callable(heads) and bool(getattr(self.model, "num_classes", 0)):
            return heads(x)
        return self.model(x)


def compute_loss(
    model: nn.Module,
    output: torch.Tensor | Sequence[torch.Tensor],
    target: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Training loss of a :class:`TrainingForward` output.

    A tuple of head logits goes to the model's own reference loss (``model.loss``; SIFA-Net:
    ``CE(a) + CE(b)``), or the sum of the heads' cross-entropies; one logits tensor gets cross-entropy.
    """
    if isinstance(output, torch.Tensor):
        return F.cross_entropy(output.float(), target, label_smoothing=label_smoothing)
    loss_fn = getattr(model, "loss", None)
    if callable(loss_fn):
        return loss_fn(tuple(o.float() for o in output), target, label_smoothing=label_smoothing)
    return torch.stack([F.cross_entropy(o.float(), target, label_smoothing=label_smoothing) for o in output]).sum()


def clip_probabilities(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Class probabilities ``(B, N)`` of a model output: softmax of logits, averaged over heads if several."""
    if isinstance(output, torch.Tensor):
        return output.float().softmax(-1)
    return torch.stack([o.float().softmax(-1) for o in output]).mean(0)


def _forward_views(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
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
    loader: Iterator[tuple[torch.Tensor, torch.Tensor]] | DataLoader,
    *,
    device: torch.device | str = "cpu",
    amp: str = "none",
    ctx: DistContext | None = None,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
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
    bar = _progress(loader, progress and (ctx is None or ctx.is_main), desc)
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, amp):
            probs = _forward_views(model, x)
        k = min(5, probs.shape[-1])
        top = probs.topk(k, dim=-1).indices  # (B, k)
        hit = top == y[:, None]
        counts[0] += hit[:, 0].sum().item()
        counts[1] += hit.any(-1).sum().item()
        counts[2] += -probs.gather(1, y[:, None]).clamp_min(1e-12).log().sum().item()
        counts[3] += y.numel()
        clips += math.prod(x.shape[:-4])  # model inputs, views included
    elapsed = time.perf_counter() - start
    if ctx is not None and ctx.distributed:
        counts = counts.to(ctx.device)
        dist.all_reduce(counts)
        counts = counts.cpu()
        total = torch.tensor([float(clips), elapsed], dtype=torch.float64, device=ctx.device)
        dist.all_reduce(total)  # clips summed; time summed → mean per rank below
        clips, elapsed = int(total[0].item()), float(total[1].item()) / ctx.world_size
    model.train(was_training)
    n = max(counts[3].item(), 1.0)
    return {
        "top1": 100.0 * counts[0].item() / n,
        "top5": 100.0 * counts[1].item() / n,
        "loss": counts[2].item() / n,
        "num_samples": int(counts[3].item()),
        "clips_per_s": clips / max(elapsed, 1e-9),
    }


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    dtype = _AMP_DTYPES[amp]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _progress(iterable: Any, enabled: bool, desc: str, total: int | None = None, initial: int = 0) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, initial=initial, leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------------------------
# Data


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


MOTION_VAL_SEED_OFFSET = 7919  # validation clips of the motion set use seed + this (train: seed)


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


def build_datasets(
    cfg: TrainConfig,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    crop_pct: float = 1.0,
    train_split: bool = True,
) -> tuple[Dataset | None, Dataset, list[str]]:
    """Training set (``None`` unless ``train_split``), validation set and class names for ``cfg.data``.

    Video files: training clips are random ``img_size`` crops of frames resized to a short side of
    ``img_size / crop_pct`` (flipped with ``cfg.hflip``); evaluation takes the centre crop, or ``cfg.eval_crops``
    crops spanning a short side of ``img_size``; ``cfg.eval_clips`` temporal views.

    Args:
        cfg: the run's configuration (``data``, ``val_data``, ``data_root``, clip geometry, views).
        mean: per-channel normalisation mean of the model.
        std: per-channel normalisation std of the model.
        crop_pct: the model's crop fraction (``pretrained_cfg['crop_pct']``).
        train_split: also build the training set.
    """
    from . import data as D

    if cfg.data == "motion":
        geometry: dict[str, Any] = {"num_frames": cfg.num_frames, "size": cfg.img_size, "mean": mean, "std": std}
        geometry["num_classes"] = cfg.motion_classes
        motion_val = MotionClips(cfg.motion_val_samples, seed=cfg.seed + MOTION_VAL_SEED_OFFSET, **geometry)
        motion_train = MotionClips(cfg.motion_train_samples, seed=cfg.seed, **geometry) if train_split else None
        return motion_train, motion_val, motion_val.classes

    common = {"num_frames": cfg.num_frames, "stride": cfg.frame_stride, "sampling": cfg.sampling}
    short_side = max(cfg.img_size, round(cfg.img_size / crop_pct))
    train_tf = D.build_transform(
        train=True, size=cfg.img_size, short_side=short_side, mean=mean, std=std, flip=cfg.hflip
    )
    val_tf: Callable[[torch.Tensor], torch.Tensor]
    if cfg.eval_crops == 1:
        val_tf = D.build_transform(train=False, size=cfg.img_size, short_side=short_side, mean=mean, std=std)
    else:
        val_tf = MultiCropTransform(cfg.img_size, cfg.eval_crops, mean=mean, std=std)

    def make(path: str, train: bool) -> Dataset:
        kw: dict[str, Any] = dict(common, transform=train_tf if train else val_tf, train=train)
        kw["num_clips"] = 1 if train else cfg.eval_clips
        if os.path.isdir(path):
            return D.VideoFolderDataset(path, skip_bad=True, **kw)
        if os.path.isfile(path):
            names_file = cfg.classes_file or os.path.join(os.path.dirname(os.path.abspath(path)), "classes.txt")
            names = None
            if os.path.isfile(names_file):
                with open(names_file) as f:
                    names = [line.strip() for line in f if line.strip()]
            elif cfg.classes_file:
                raise ValueError(f"classes file {cfg.classes_file!r} does not exist")
            return D.VideoListDataset(path, root=cfg.data_root, skip_bad=True, classes=names, **kw)
        raise ValueError(f"data {path!r} is neither 'motion', a folder nor a list file")

    train_set: Any
    val_set: Any
    if cfg.val_data is not None:
        train_set = make(cfg.data, True) if train_split else None
        val_set = make(cfg.val_data, False)
    elif os.path.isdir(os.path.join(cfg.data, "train")) and os.path.isdir(os.path.join(cfg.data, "val")):
        train_set = make(os.path.join(cfg.data, "train"), True) if train_split else None
        val_set = make(os.path.join(cfg.data, "val"), False)
    else:
        full_train: Any = make(cfg.data, True)
        full_val: Any = make(cfg.data, False)
        order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        n_val = max(1, round(cfg.val_fraction * len(order)))
        if n_val >= len(order):
            raise ValueError(f"data {cfg.data!r} has {len(order)} videos: too few to hold out a validation split")
        train_set = torch.utils.data.Subset(full_train, sorted(order[n_val:]))
        val_set = torch.utils.data.Subset(full_val, sorted(order[:n_val]))
        train_set.classes = full_train.classes
        val_set.classes = full_val.classes
    classes = list(val_set.classes)
    if train_set is not None and list(train_set.classes) != classes:
        raise ValueError(f"training classes {list(train_set.classes)} differ from validation classes {classes}")
    return train_set, val_set, classes


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints (safetensors + JSON, written atomically)


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors (``state.<param>.<name>``) and a JSON remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[Any, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    np_state: Any = np.random.get_state()  # legacy tuple: (name, keys, pos, has_gauss, cached_gaussian)
    tensors["numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    meta: dict[str, Any] = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(tensors["torch"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)
    name, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint directory under ``output_dir/checkpoints``, or ``None``."""
    pointer = os.path.join(output_dir, "checkpoints", "latest.json")
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        name = json.load(f)["checkpoint"]
    path = os.path.join(output_dir, "checkpoints", name)
    return path if os.path.isdir(path) else None


def save_checkpoint(
    output_dir: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    trainer_state: dict[str, Any],
    ctx: DistContext,
    keep: int = 2,
) -> str:
    """Write ``checkpoints/step-<N>/`` atomically and point ``checkpoints/latest.json`` at it.

    Files: ``model.safetensors``, ``optimizer.safetensors`` (flattened optimizer tensors), ``trainer_state.json``
    (optimizer param groups and scalars, scheduler, loss scaler, counters, config, history) and per-rank
    ``rng-rank<R>.safetensors`` / ``.json``. Everything is written into a temporary directory that is renamed into
    place once complete, so a crash never leaves a half-written checkpoint behind ``latest.json``. Collective: every
    rank must call it.

    Returns:
        The checkpoint directory.
    """
    root = os.path.join(output_dir, "checkpoints")
    name = f"step-{trainer_state['global_step']:08d}"
    final = os.path.join(root, name)
    tmp = os.path.join(root, f".tmp-{name}")
    if ctx.is_main:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    ctx.barrier()
    rng_tensors, rng_meta = _rng_state(ctx.device)
    save_file(rng_tensors, os.path.join(tmp, f"rng-rank{ctx.rank}.safetensors"))
    write_json_atomic(os.path.join(tmp, f"rng-rank{ctx.rank}.json"), rng_meta)
    if ctx.is_main:
        save_file(_cpu_tensors(_unwrap(model).state_dict()), os.path.join(tmp, "model.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, os.path.join(tmp, "optimizer.safetensors"))
        sched_state = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        state = dict(
            trainer_state,
            format=CHECKPOINT_FORMAT,
            world_size=ctx.world_size,
            optimizer=opt_meta,
            scheduler=sched_state,
            scaler=scaler.state_dict(),
        )
        write_json_atomic(os.path.join(tmp, "trainer_state.json"), state)
    ctx.barrier()
    if ctx.is_main:
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_json_atomic(os.path.join(root, "latest.json"), {"checkpoint": name})
        old = sorted(d for d in os.listdir(root) if re.fullmatch(r"step-\d{8}", d))
        for stale in old[:-keep]:
            shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
    ctx.barrier()
    return final


def load_checkpoint(
    path: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    ctx: DistContext,
) -> dict[str, Any]:
    """Restore a :func:`save_checkpoint` directory in place; returns its trainer state (counters, history)."""
    state_file = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_file):
        raise ValueError(f"{path!r} is not a training checkpoint (no trainer_state.json)")
    with open(state_file) as f:
        state = json.load(f)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {path!r} has format {state.get('format')}, expected {CHECKPOINT_FORMAT}")
    _unwrap(model).load_state_dict(load_file(os.path.join(path, "model.safetensors"), device=str(ctx.device)))
    opt_tensors = load_file(os.path.join(path, "optimizer.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, state["optimizer"]))
    scheduler.load_state_dict(dict(state["scheduler"], lr_lambdas=[None] * len(optimizer.param_groups)))
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rank_file = os.path.join(path, f"rng-rank{ctx.rank}")
    if os.path.isfile(rank_file + ".safetensors"):
        with open(rank_file + ".json") as f:
            _set_rng_state(load_file(rank_file + ".safetensors"), json.load(f), ctx.device)
    return state


# ----------------------------------------------------------------------------------------------------------------
# Export of the trained model


def export_trained_model(
    model: nn.Module, out_dir: str, *, classes: Sequence[str], metrics: dict[str, Any] | None = None
) -> str:
    """Write ``model`` as a publishable directory (safetensors, config, model card) with :mod:`sifa_hub.publish`.

    The directory loads with ``timm.create_model("local-dir:DIR", pretrained=True)``, with transformers and with
    ``--model DIR`` in every ``sifa-hub`` command.

    Args:
        model: the trained model (wrappers are removed).
        out_dir: destination directory (replaced atomically).
        classes: class names, stored as ``label_names``.
        metrics: measured results for the card: ``{"final": evaluate(...) output, "config": {"data": ...}}``.
    """
    from .publish import export_model

    return export_model(_unwrap(model), out_dir, labels=list(classes), metrics=metrics)


# ----------------------------------------------------------------------------------------------------------------
# The training loop


def _make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(cfg: TrainConfig, *, datasets: tuple[Dataset, Dataset, Sequence[str]] | None = None) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.data``; returns the metrics dict also written to ``metrics.json``.

    Under ``torchrun`` it trains with DDP (call from every rank). Writes into ``cfg.output_dir``:
    ``checkpoints/step-<N>/`` (resumable), ``metrics.json`` and ``model/`` (the trained model, exported; or
    ``cfg.export_dir``).

    Args:
        cfg: the run's configuration.
        datasets: ``(train_set, val_set, class_names)`` to use instead of ``cfg.data`` (items ``(x, label)`` with
            ``x`` a ``(C, T, H, W)`` clip normalised with the model's mean/std, or ``(V, C, T, H, W)`` views).

    Returns:
        ``{"config", "classes", "history": [per-epoch dicts], "final": {...}, "model_dir"}``; ``final`` holds the
        last evaluation (``top1``, ``top5``, ``loss``, ``clips_per_s``), ``train_clips_per_s`` and ``params``.
    """
    import timm.optim

    cfg.validate()
    ctx = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)

    model = create_model(
        cfg.model,
        num_frames=cfg.num_frames,
        img_size=cfg.img_size,
        pretrained=cfg.pretrained,
        drop_rate=cfg.drop_rate,
        drop_path_rate=cfg.drop_path_rate,
    )
    data_cfg = model_data_config(model)
    train_set: Any
    val_set: Any
    if datasets is None:
        train_set, val_set, classes = build_datasets(
            cfg, data_cfg["mean"], data_cfg["std"], crop_pct=data_cfg["crop_pct"]
        )
    else:
        train_set, val_set, classes = datasets[0], datasets[1], list(datasets[2])
    if len(train_set) == 0 or len(val_set) == 0:
        raise ValueError(f"data {cfg.data!r}: empty training ({len(train_set)}) or validation ({len(val_set)}) set")
    if getattr(model, "num_classes", None) != len(classes):
        model.reset_classifier(len(classes))  # type: ignore[operator]
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)  # type: ignore[operator]
    model.to(ctx.device)
    params = sum(p.numel() for p in model.parameters())

    torch.manual_seed(cfg.seed + ctx.rank)  # per-rank dropout / augmentation streams
    random.seed(cfg.seed + ctx.rank)
    np.random.seed((cfg.seed + ctx.rank) % 2**32)

    sampler = ResumableDistributedSampler(
        train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    drop_last = sampler.num_samples >= cfg.batch_size
    loader_gen = torch.Generator()
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=ctx.device.type == "cuda",
        drop_last=drop_last,
        generator=loader_gen,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=max(1, cfg.batch_size // max(1, cfg.eval_clips * cfg.eval_crops)),
        sampler=ShardSampler(len(val_set), ctx.rank, ctx.world_size),
        num_workers=cfg.workers,
        pin_memory=ctx.device.type == "cuda",
    )
    micro_per_epoch = (
        sampler.num_samples // cfg.batch_size if drop_last else math.ceil(sampler.num_samples / cfg.batch_size)
    )
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.accum_steps)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = min(round(cfg.warmup_epochs * steps_per_epoch), max(total_steps - 1, 0))

    if cfg.sync_bn and ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = timm.optim.create_optimizer_v2(
        model,
        opt="adamw" if cfg.optimizer == "adamw" else "sgd" if cfg.momentum else "momentum",  # timm: sgd = nesterov
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
    )
    scheduler = _make_scheduler(optimizer, total_steps, warmup_steps, cfg.min_lr_ratio)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.amp == "fp16")

    history: list[dict[str, Any]] = []
    start_epoch = step_in_epoch = global_step = 0
    resume_path = latest_checkpoint(cfg.output_dir) if cfg.resume in ("latest", "auto") else cfg.resume
    if cfg.resume and resume_path is None:
        raise ValueError(f"--resume {cfg.resume}: no checkpoint found in {cfg.output_dir}/checkpoints")
    if resume_path:
        state = load_checkpoint(
            resume_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ctx=ctx
        )
        if state["world_size"] != ctx.world_size and ctx.is_main:
            print(
                f"warning: checkpoint was written by {state['world_size']} processes, resuming with {ctx.world_size}"
            )
        start_epoch, step_in_epoch, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        history = state["history"]
        if step_in_epoch >= steps_per_epoch:
            start_epoch, step_in_epoch = start_epoch + 1, 0

    train_model: nn.Module = TrainingForward(model)
    if ctx.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )

    # running sums of the current epoch (kept in checkpoints so a mid-epoch resume reports the same numbers)
    running: dict[str, Any] = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "time": 0.0, "curve": []}
    if resume_path and step_in_epoch:
        running.update(state.get("running", {}))

    def trainer_state(epoch: int, step: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "step_in_epoch": step,
            "global_step": global_step,
            "running": dict(running),
            "config": dataclasses.asdict(cfg),
            "classes": classes,
            "history": history,
        }

    def checkpoint(epoch: int, step: int) -> None:
        if ctx.distributed:  # BN statistics of rank 0 are the model's
            for buf in model.buffers():
                dist.broadcast(buf, 0)
        save_checkpoint(
            cfg.output_dir,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            trainer_state=trainer_state(epoch, step),
            ctx=ctx,
            keep=cfg.keep_checkpoints,
        )

    stopped = False
    steps_this_run = 0
    last_eval: dict[str, float] = history[-1].get("val", {}) if history else {}
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        sampler.start = step_in_epoch * cfg.accum_steps * cfg.batch_size
        loader_gen.manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + ctx.rank)
        train_model.train()
        t0 = time.perf_counter()
        micro = step_in_epoch * cfg.accum_steps
        bar = _progress(
            train_loader,
            cfg.progress and ctx.is_main,
            f"epoch {epoch + 1}/{cfg.epochs}",
            total=micro_per_epoch,
            initial=micro,
        )
        optimizer.zero_grad(set_to_none=True)
        for x, y in bar:
            x = x.to(ctx.device, non_blocking=True)
            y = y.to(ctx.device, non_blocking=True)
            group_start = (micro // cfg.accum_steps) * cfg.accum_steps
            group_size = min(cfg.accum_steps, micro_per_epoch - group_start)
            sync = micro + 1 == group_start + group_size
            no_sync: Any = contextlib.nullcontext()
            if ctx.distributed and not sync:
                no_sync = train_model.no_sync()  # type: ignore[operator]  # DDP: accumulate locally
            with no_sync:
                with _autocast(ctx.device, cfg.amp):
                    output = train_model(x)
                loss = compute_loss(model, output, y, cfg.label_smoothing)
                scaler.scale(loss / group_size).backward()
            running["loss"] += loss.item() * y.numel()
            running["correct"] += float((clip_probabilities(output).argmax(-1) == y).sum().item())
            running["seen"] += y.numel()
            micro += 1
            if not sync:
                continue
            if cfg.clip_grad is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            global_step += 1
            steps_this_run += 1
            step_in_epoch = -(-micro // cfg.accum_steps)
            if global_step % cfg.log_every == 0:
                running["curve"].append([global_step, loss.item()])
            if bar is not train_loader:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            stopped = bool(cfg.stop_after_steps) and steps_this_run >= cfg.stop_after_steps
            mid_epoch = step_in_epoch < steps_per_epoch
            if mid_epoch and (stopped or (cfg.save_every_steps and global_step % cfg.save_every_steps == 0)):
                running["time"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                checkpoint(epoch, step_in_epoch)
            if stopped:
                break
        if bar is not train_loader:
            bar.close()
        if stopped and step_in_epoch < steps_per_epoch:
            break
        running["time"] += time.perf_counter() - t0
        stats = torch.tensor([running["loss"], running["correct"], running["seen"]], dtype=torch.float64)
        if ctx.distributed:
            stats = stats.to(ctx.device)
            dist.all_reduce(stats)
            stats = stats.cpu()
        seen = max(stats[2].item(), 1.0)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "global_step": global_step,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": stats[0].item() / seen,
            "train_top1": 100.0 * stats[1].item() / seen,
            "train_clips_per_s": stats[2].item() / max(running["time"], 1e-9),
        }
        record["loss_curve"] = running["curve"]
        running = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "time": 0.0, "curve": []}
        if ctx.distributed:
            for buf in model.buffers():
                dist.broadcast(buf, 0)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            last_eval = evaluate(
                model, val_loader, device=ctx.device, amp=cfg.amp, ctx=ctx, progress=cfg.progress, desc="eval"
            )
            record["val"] = last_eval
        history.append(record)
        step_in_epoch = 0
        if ctx.is_main and cfg.progress:
            val = record.get("val")
            tail = f", val top-1 {val['top1']:.1f}%" if val else ""
            print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f}{tail}", flush=True)
        checkpoint(epoch + 1, 0)
        if stopped:
            break

    metrics: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "classes": classes,
        "world_size": ctx.world_size,
        "params": params,
        "history": history,
        "completed": not stopped and len(history) == cfg.epochs,
        "final": dict(last_eval, train_clips_per_s=history[-1]["train_clips_per_s"] if history else 0.0),
        "model_dir": None,
    }
    if ctx.is_main:
        metrics_file = os.path.join(cfg.output_dir, "metrics.json")
        write_json_atomic(metrics_file, metrics)  # first, so a failing export loses no result
        if metrics["completed"]:
            model.eval()
            metrics["model_dir"] = export_trained_model(
                model,
                cfg.export_dir or os.path.join(cfg.output_dir, "model"),
                classes=classes,
                metrics={"final": metrics["final"], "config": {"data": cfg.data}},
            )
            write_json_atomic(metrics_file, metrics)
    ctx.barrier()
    return metrics
