"""Fine-tuning of SIFA video models, from one CPU process to multi-node DDP.

``train(TrainConfig(...))`` fine-tunes any registered variant (a timm name, a local exported directory or a
Hugging Face Hub id) on a class-per-folder video tree, a list file or the embedded synthetic motion set.
It does warm-up + cosine learning-rate steps, label smoothing, bf16/fp16 autocast, gradient accumulation and
gradient checkpointing; checkpoints are safetensors + JSON only (no pickle) and resume exactly.

The run reads as timm's ``train.py`` does, one function per step: :func:`build_run` (model, data, optimizer),
:func:`resume_run` (checks the saved config and architecture, restores the state), :func:`train_one_epoch`,
:func:`validate`, :func:`finish_run` (metrics, export). Data lives in :mod:`sifa_hub.training_data`, process
placement in :mod:`sifa_hub.distributed`, checkpoints in :mod:`sifa_hub.checkpoint`, scoring in
:mod:`sifa_hub.evaluation`.

Distributed training runs under ``torchrun`` (one process per device; gloo on CPU, NCCL on GPU)::

    # one machine, 8 GPUs
    torchrun --nproc_per_node 8 -m sifa_hub.cli train --model sifa_resnet50 --data /data/k400 --amp bf16
    # two machines: run on each, with the same rendezvous endpoint (a host both can reach)
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint node0:29500 \\
        -m sifa_hub.cli train --model sifa_resnet50 --data /data/k400 --output-dir /shared/run1

Rank 0 writes checkpoints (with every rank's RNG state) into ``--output-dir``; resuming a multi-node run needs it
on a shared filesystem. ``--batch-size`` is per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import latest_checkpoint, load_checkpoint, model_architecture, read_trainer_state, save_checkpoint
from .distributed import DistContext, distributed_context, unwrap_model
from .evaluation import clip_probabilities, evaluate, progress_bar
from .training_data import DataSpec, ResumableDistributedSampler, ShardSampler, build_datasets
from .utils.io import atomic_write_json
from .utils.runtime import AMP_DTYPES, autocast

__all__ = [
    "RESUME_MAY_CHANGE",
    "TrainConfig",
    "TrainingForward",
    "TrainingRun",
    "build_run",
    "check_resume_config",
    "compute_loss",
    "finish_run",
    "resume_run",
    "train",
    "train_one_epoch",
    "validate",
]

# TrainConfig fields a resumed run may set differently from the checkpoint's: where files go, how the run is shown
# and when it checkpoints, evaluates or stops. Every other field changes the computation and is refused.
RESUME_MAY_CHANGE = frozenset(
    {
        "resume",
        "output_dir",
        "export_dir",
        "device",
        "workers",
        "progress",
        "log_every",
        "eval_every",
        "save_every_steps",
        "keep_checkpoints",
        "stop_after_steps",
    }
)


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
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"TrainConfig.amp must be one of {tuple(AMP_DTYPES)}, got {self.amp!r}")
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
# Resume checks


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_resume_config(saved: Mapping[str, Any], cfg: TrainConfig, checkpoint: str) -> None:
    """Refuse to resume ``checkpoint`` (saved config ``saved``) with a config that changes the computation.

    Raises:
        ValueError: naming the first field outside :data:`RESUME_MAY_CHANGE` whose value differs, with both values.
    """
    missing = object()
    allowed = ", ".join(sorted(map(_flag, RESUME_MAY_CHANGE)))
    for name, value in dataclasses.asdict(cfg).items():
        if name in RESUME_MAY_CHANGE:
            continue
        before = saved.get(name, missing)
        if before is missing or before != value:
            was = "absent" if before is missing else repr(before)
            raise ValueError(
                f"cannot resume {checkpoint}: {_flag(name)} was {was} in that run, now {value!r}. Resume with the "
                f"same value, or train into a new --output-dir; only {allowed} may change when resuming"
            )


def _check_resume_architecture(state: Mapping[str, Any], model: nn.Module, cfg: TrainConfig, checkpoint: str) -> None:
    saved = state.get("architecture")
    built = model_architecture(model)
    if saved is not None and saved != built:
        raise ValueError(
            f"cannot resume {checkpoint}: it holds a {saved} model, but --model {cfg.model} builds {built}; resume "
            "with the run's own --model, or train into a new --output-dir"
        )


def _resume_path(cfg: TrainConfig) -> str | None:
    """The checkpoint folder ``cfg.resume`` names (``latest``/``auto``: the newest complete one in the run)."""
    if not cfg.resume:
        return None
    run_dir = cfg.output_dir if cfg.resume in ("latest", "auto") else cfg.resume
    if cfg.resume not in ("latest", "auto") and os.path.isfile(os.path.join(cfg.resume, "trainer_state.json")):
        return cfg.resume
    path = latest_checkpoint(run_dir)
    if path is None:
        raise ValueError(f"--resume {cfg.resume}: no checkpoint found in {run_dir}/checkpoints")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Loss


class TrainingForward(nn.Module):
    """Train-time forward of a model: the raw logits of every head when it has several.

    SIFA-Net (``forward_heads``) gives ``(logits_a, logits_b)`` for its reference two-branch loss; other models give
    their usual logits. Wrapping (rather than calling ``model.forward_heads``) keeps DDP's gradient hooks in the path.
    """

    is_training_wrapper = True  # :func:`sifa_hub.distributed.unwrap_model` looks through it

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

    Several heads are the model's to combine: its own ``loss`` (SIFA-Net's reference ``CE(a) + CE(b)``); one
    logits tensor gets cross-entropy.
    """
    if isinstance(output, torch.Tensor):
        return F.cross_entropy(output.float(), target, label_smoothing=label_smoothing)
    loss_fn = getattr(unwrap_model(model), "loss", None)
    if not callable(loss_fn):
        raise TypeError(f"{type(model).__name__} returns {len(output)} heads from forward_heads but has no loss()")
    return loss_fn(tuple(o.float() for o in output), target, label_smoothing=label_smoothing)


# ----------------------------------------------------------------------------------------------------------------
# Building a run


def _fresh_running() -> dict[str, Any]:
    """Running sums of the current epoch (kept in checkpoints: a mid-epoch resume reports the same numbers)."""
    return {"loss": 0.0, "correct": 0.0, "seen": 0.0, "time": 0.0, "curve": []}


@dataclass
class TrainingRun:
    """Everything a training run carries from step to step (built by :func:`build_run`)."""

    cfg: TrainConfig
    ctx: DistContext
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    sampler: ResumableDistributedSampler
    train_loader: DataLoader
    val_loader: DataLoader
    loader_gen: torch.Generator
    classes: list[str]
    params: int
    micro_per_epoch: int
    steps_per_epoch: int
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    steps_this_run: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    running: dict[str, Any] = field(default_factory=_fresh_running)
    last_eval: dict[str, Any] = field(default_factory=dict)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _prepare_kernels(ctx: DistContext) -> None:
    """Build the fused CPU kernel once, on rank 0, while the other ranks wait (then they load it from the cache)."""
    from . import ops

    build = getattr(ops, "build_kernels", None)
    if build is None or ctx.device.type != "cpu":
        return
    if ctx.is_main:
        build()
    ctx.barrier()
    if not ctx.is_main:
        build()


def _build_model(cfg: TrainConfig, ctx: DistContext, datasets: Any) -> tuple[nn.Module, Dataset, Dataset, list[str]]:
    """The model (head sized for the data's classes, on this rank's device) and the datasets."""
    from .loading import load_model

    loaded = load_model(
        cfg.model,
        num_frames=cfg.num_frames,
        img_size=cfg.img_size,
        pretrained=cfg.pretrained,
        drop_rate=cfg.drop_rate,
        drop_path_rate=cfg.drop_path_rate,
    )
    model, dcfg = loaded.model, loaded.data_config
    train_set: Any
    val_set: Any
    if datasets is None:
        spec = DataSpec.from_config(cfg)
        train_set, val_set, classes = build_datasets(spec, dcfg["mean"], dcfg["std"], crop_pct=dcfg["crop_pct"])
    else:
        train_set, val_set, classes = datasets[0], datasets[1], list(datasets[2])
    if train_set is None or len(train_set) == 0 or len(val_set) == 0:
        n_train = 0 if train_set is None else len(train_set)
        raise ValueError(f"data {cfg.data!r}: empty training ({n_train}) or validation ({len(val_set)}) set")
    if getattr(model, "num_classes", None) != len(classes):
        model.reset_classifier(len(classes))  # type: ignore[operator]
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)  # type: ignore[operator]
    model.train().to(ctx.device)
    return model, train_set, val_set, classes


def _build_loaders(
    cfg: TrainConfig, ctx: DistContext, train_set: Dataset, val_set: Dataset
) -> tuple[ResumableDistributedSampler, DataLoader, DataLoader, torch.Generator, int]:
    """Sharded, resumable training loader; sharded validation loader; micro-batches per epoch."""
    sampler = ResumableDistributedSampler(
        train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    drop_last = sampler.num_samples >= cfg.batch_size
    loader_gen = torch.Generator()
    pin = ctx.device.type == "cuda"
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=pin,
        drop_last=drop_last,
        generator=loader_gen,
    )
    val_loader = DataLoader(
        val_set,
        batch_size=max(1, cfg.batch_size // max(1, cfg.eval_clips * cfg.eval_crops)),
        sampler=ShardSampler(len(val_set), ctx.rank, ctx.world_size),  # type: ignore[arg-type]
        num_workers=cfg.workers,
        pin_memory=pin,
    )
    micro = sampler.num_samples // cfg.batch_size if drop_last else math.ceil(sampler.num_samples / cfg.batch_size)
    return sampler, train_loader, val_loader, loader_gen, micro


def _make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak rate, then a cosine down to ``min_ratio`` of it."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_run(cfg: TrainConfig, ctx: DistContext, datasets: Any = None) -> TrainingRun:
    """Model, data, optimizer, schedule and (under DDP) the wrapped model of a fresh run."""
    import timm.optim

    _prepare_kernels(ctx)
    _seed(cfg.seed)
    model, train_set, val_set, classes = _build_model(cfg, ctx, datasets)
    params = sum(p.numel() for p in model.parameters())
    _seed(cfg.seed + ctx.rank)  # per-rank dropout / augmentation streams
    sampler, train_loader, val_loader, loader_gen, micro_per_epoch = _build_loaders(cfg, ctx, train_set, val_set)
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
    train_model: nn.Module = TrainingForward(model)
    if ctx.distributed:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(train_model, device_ids=device_ids)
    return TrainingRun(
        cfg=cfg,
        ctx=ctx,
        model=model,
        train_model=train_model,
        optimizer=optimizer,
        scheduler=_make_scheduler(optimizer, total_steps, warmup_steps, cfg.min_lr_ratio),
        scaler=torch.amp.GradScaler(ctx.device.type, enabled=cfg.amp == "fp16"),
        sampler=sampler,
        train_loader=train_loader,
        val_loader=val_loader,
        loader_gen=loader_gen,
        classes=classes,
        params=params,
        micro_per_epoch=micro_per_epoch,
        steps_per_epoch=steps_per_epoch,
    )


def resume_run(run: TrainingRun, path: str) -> None:
    """Check checkpoint ``path`` against the run (architecture, then config), then restore its state into ``run``."""
    state = read_trainer_state(path)
    _check_resume_architecture(state, run.model, run.cfg, path)
    check_resume_config(state["config"], run.cfg, path)
    if list(state["classes"]) != run.classes:
        raise ValueError(f"cannot resume {path}: it was trained on classes {state['classes']}, not {run.classes}")
    load_checkpoint(
        path, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler, ctx=run.ctx
    )
    if state.get("world_size", run.ctx.world_size) != run.ctx.world_size and run.ctx.is_main:
        print(f"warning: {path} was written by {state['world_size']} processes, resuming with {run.ctx.world_size}")
    run.epoch, run.step_in_epoch, run.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
    run.history = list(state.get("history", []))
    run.last_eval = run.history[-1].get("val", {}) if run.history else {}
    if run.step_in_epoch:
        run.running.update(state.get("running", {}))
    if run.step_in_epoch >= run.steps_per_epoch:
        run.epoch, run.step_in_epoch = run.epoch + 1, 0


# ----------------------------------------------------------------------------------------------------------------
# One epoch


def _checkpoint(run: TrainingRun, epoch: int, step_in_epoch: int) -> None:
    """Save the run's state as of ``(epoch, step_in_epoch)``; the model's BN statistics are rank 0's."""
    run.ctx.broadcast_buffers(run.model)
    trainer_state = {
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "global_step": run.global_step,
        "running": dict(run.running),
        "config": dataclasses.asdict(run.cfg),
        "classes": run.classes,
        "history": run.history,
    }
    save_checkpoint(
        run.cfg.output_dir,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.scaler,
        trainer_state=trainer_state,
        ctx=run.ctx,
        keep=run.cfg.keep_checkpoints,
    )


def _micro_step(run: TrainingRun, x: torch.Tensor, y: torch.Tensor, micro: int) -> tuple[torch.Tensor, bool]:
    """Forward + backward of one micro-batch; returns its loss and whether an optimizer step follows."""
    cfg, ctx = run.cfg, run.ctx
    group_start = (micro // cfg.accum_steps) * cfg.accum_steps
    group_size = min(cfg.accum_steps, run.micro_per_epoch - group_start)
    sync = micro + 1 == group_start + group_size
    no_sync: Any = contextlib.nullcontext()
    if ctx.distributed and not sync:
        no_sync = run.train_model.no_sync()  # type: ignore[operator]  # DDP: accumulate locally
    with no_sync:
        with autocast(ctx.device, cfg.amp):
            output = run.train_model(x)
        loss = compute_loss(run.model, output, y, cfg.label_smoothing)
        run.scaler.scale(loss / group_size).backward()
    run.running["loss"] += loss.item() * y.numel()
    run.running["correct"] += float((clip_probabilities(output).argmax(-1) == y).sum().item())
    run.running["seen"] += y.numel()
    return loss, sync


def _optimizer_step(run: TrainingRun) -> None:
    if run.cfg.clip_grad is not None:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    run.global_step += 1
    run.steps_this_run += 1


def train_one_epoch(run: TrainingRun) -> bool:
    """Train epoch ``run.epoch`` from ``run.step_in_epoch``; ``True`` when it ran to the end of the epoch.

    Stops early (with a checkpoint) after ``stop_after_steps`` optimizer steps of this run; checkpoints every
    ``save_every_steps`` steps mid-epoch.
    """
    cfg, ctx = run.cfg, run.ctx
    run.sampler.set_epoch(run.epoch)
    run.sampler.start = run.step_in_epoch * cfg.accum_steps * cfg.batch_size
    run.loader_gen.manual_seed(cfg.seed * 1_000_003 + run.epoch * 1009 + ctx.rank)
    run.train_model.train()
    t0 = time.perf_counter()
    micro = run.step_in_epoch * cfg.accum_steps
    desc = f"epoch {run.epoch + 1}/{cfg.epochs}"
    bar = progress_bar(run.train_loader, cfg.progress and ctx.is_main, desc, total=run.micro_per_epoch, initial=micro)
    run.optimizer.zero_grad(set_to_none=True)
    for x, y in bar:
        loss, sync = _micro_step(run, x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True), micro)
        micro += 1
        if not sync:
            continue
        _optimizer_step(run)
        run.step_in_epoch = -(-micro // cfg.accum_steps)
        if run.global_step % cfg.log_every == 0:
            run.running["curve"].append([run.global_step, loss.item()])
        if bar is not run.train_loader:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}")
        run.stopped = bool(cfg.stop_after_steps) and run.steps_this_run >= cfg.stop_after_steps
        periodic = bool(cfg.save_every_steps) and run.global_step % cfg.save_every_steps == 0
        if run.step_in_epoch < run.steps_per_epoch and (run.stopped or periodic):
            run.running["time"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            _checkpoint(run, run.epoch, run.step_in_epoch)
        if run.stopped:
            break
    if bar is not run.train_loader:
        bar.close()
    run.running["time"] += time.perf_counter() - t0
    return run.step_in_epoch >= run.steps_per_epoch


def _epoch_record(run: TrainingRun) -> dict[str, Any]:
    """Training numbers of the finished epoch, summed over ranks."""
    stats = torch.tensor([run.running["loss"], run.running["correct"], run.running["seen"]], dtype=torch.float64)
    stats = run.ctx.all_reduce_sum(stats)
    seen = max(stats[2].item(), 1.0)
    return {
        "epoch": run.epoch + 1,
        "global_step": run.global_step,
        "lr": run.scheduler.get_last_lr()[0],
        "train_loss": stats[0].item() / seen,
        "train_top1": 100.0 * stats[1].item() / seen,
        "train_clips_per_s": stats[2].item() / max(run.running["time"], 1e-9),
        "loss_curve": run.running["curve"],
    }


def validate(run: TrainingRun) -> dict[str, Any]:
    """Close epoch ``run.epoch``: its record (with ``val`` when due), history, checkpoint; then the next epoch."""
    cfg = run.cfg
    record = _epoch_record(run)
    run.running = _fresh_running()
    run.ctx.broadcast_buffers(run.model)
    if (run.epoch + 1) % cfg.eval_every == 0 or run.epoch + 1 == cfg.epochs:
        run.last_eval = evaluate(
            run.model, run.val_loader, device=run.ctx.device, amp=cfg.amp, ctx=run.ctx, progress=cfg.progress
        )
        record["val"] = run.last_eval
    run.history.append(record)
    if run.ctx.is_main and cfg.progress:
        tail = f", val top-1 {record['val']['top1']:.1f}%" if "val" in record else ""
        print(f"epoch {run.epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.4f}{tail}", flush=True)
    run.epoch, run.step_in_epoch = run.epoch + 1, 0
    _checkpoint(run, run.epoch, 0)
    return record


# ----------------------------------------------------------------------------------------------------------------
# Finishing: metrics and export


def finish_run(run: TrainingRun) -> dict[str, Any]:
    """Metrics of the run (written to ``metrics.json`` by rank 0) and, once complete, the exported model."""
    from .publish import export_model

    cfg = run.cfg
    history = run.history
    metrics: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "classes": run.classes,
        "world_size": run.ctx.world_size,
        "params": run.params,
        "history": history,
        "completed": not run.stopped and len(history) == cfg.epochs,
        "final": dict(run.last_eval, train_clips_per_s=history[-1]["train_clips_per_s"] if history else 0.0),
        "model_dir": None,
    }
    if run.ctx.is_main:
        metrics_file = os.path.join(cfg.output_dir, "metrics.json")
        atomic_write_json(metrics_file, metrics)  # first, so a failing export loses no result
        if metrics["completed"]:
            run.model.eval()
            metrics["model_dir"] = export_model(
                unwrap_model(run.model),
                cfg.export_dir or os.path.join(cfg.output_dir, "model"),
                labels=list(run.classes),
                metrics={"final": metrics["final"], "config": {"data": cfg.data}},
            )
            atomic_write_json(metrics_file, metrics)
    run.ctx.barrier()
    return metrics


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
    cfg.validate()
    with distributed_context(cfg.device) as ctx:
        resume_from = _resume_path(cfg)  # before building: a missing checkpoint fails fast
        run = build_run(cfg, ctx, datasets)
        if resume_from:
            resume_run(run, resume_from)
        while run.epoch < cfg.epochs and not run.stopped:
            if not train_one_epoch(run):
                break  # stopped mid-epoch (stop_after_steps): the checkpoint is written
            validate(run)
        return finish_run(run)
