"""Inference with a trained model: ``predict`` (top-k labels of video files) and ``evaluate_model`` (accuracy).

Both take ``--model`` as a timm name, an exported directory (``sifa-hub train``'s ``model/``, ``sifa-hub export``)
or a Hugging Face Hub id, and preprocess exactly as the model was trained: the model's own ``num_frames``,
input size and ``pretrained_cfg`` mean/std.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .train import (
    TrainConfig,
    _autocast,
    _forward_views,
    _resolve_device,
    build_datasets,
    create_model,
    evaluate,
    label_names,
    model_data_config,
)

__all__ = ["load_model", "video_to_views", "predict", "evaluate_model"]


def load_model(name_or_path: str | nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """A model in eval mode on ``device`` from a name, directory or Hub id (a module passes through)."""
    model = name_or_path if isinstance(name_or_path, nn.Module) else create_model(name_or_path)
    return model.to(device).eval()


def video_to_views(
    frames: torch.Tensor,
    *,
    num_frames: int,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    num_clips: int = 1,
) -> torch.Tensor:
    """Model inputs of a decoded video: ``num_clips`` segment-sampled clips, short side resized, centre crop.

    Args:
        frames: uint8 ``(N, H, W, 3)`` decoded frames.
        num_frames: frames per clip ``T`` (one from each of ``T`` equal segments of the video).
        img_size: crop side ``S``.
        mean: per-channel normalisation mean of ``[0, 1]`` pixels.
        std: per-channel normalisation std.
        num_clips: temporal views (segment offsets spread over each segment).

    Returns:
        float ``(V, 3, T, S, S)`` with ``V = num_clips``.
    """
    from .data import build_transform, multi_uniform_indices, uniform_indices

    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    n = frames.shape[0]
    if num_clips == 1:
        clips = [uniform_indices(n, num_frames, mode="center")]
    else:
        clips = multi_uniform_indices(n, num_frames, num_clips)
    transform = build_transform(train=False, size=img_size, mean=mean, std=std)
    return torch.stack([transform(frames[idx]) for idx in clips])  # (V, 3, T, S, S)


@torch.no_grad()
def predict(
    videos: Sequence[str | os.PathLike[str]],
    model: str | nn.Module,
    *,
    top_k: int = 5,
    num_clips: int = 1,
    device: str = "auto",
    amp: str = "none",
) -> list[dict[str, Any]]:
    """Top-k labels of video files.

    Args:
        videos: video file paths.
        model: timm name, exported directory, Hub id, or a model instance.
        top_k: labels per video (capped at the number of classes).
        num_clips: temporal views averaged per video.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` autocast.

    Returns:
        One ``{"video": path, "predictions": [{"label", "index", "score"}, ...]}`` per video, best first; scores
        are probabilities (averaged over views).

    Raises:
        sifa_hub.data.VideoDecodeError: a file is missing or cannot be decoded (the message names it).
    """
    from .data import decode_video

    if isinstance(videos, (str, os.PathLike)):
        videos = [videos]
    if not videos:
        raise ValueError("predict needs at least one video")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    dev = _resolve_device(device)
    net = load_model(model, dev)
    cfg = model_data_config(net)
    names = label_names(net)
    results = []
    for path in videos:
        frames, _ = decode_video(path)
        views = video_to_views(
            frames,
            num_frames=cfg["num_frames"],
            img_size=cfg["img_size"],
            mean=cfg["mean"],
            std=cfg["std"],
            num_clips=num_clips,
        )
        with _autocast(dev, amp):
            probs = _forward_views(net, views[None].to(dev))[0]  # (N,)
        scores, indices = probs.topk(min(top_k, probs.numel()))
        results.append(
            {
                "video": os.fspath(path),
                "predictions": [
                    {"label": names[i], "index": int(i), "score": float(s)}
                    for s, i in zip(scores.tolist(), indices.tolist())
                ],
            }
        )
    return results


def evaluate_model(
    model: str | nn.Module,
    data: str,
    *,
    data_root: str | None = None,
    num_clips: int = 1,
    num_crops: int = 1,
    batch_size: int = 16,
    workers: int = 0,
    device: str = "auto",
    amp: str = "none",
    motion_samples: int = 400,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy of a model on a dataset, with multi-view averaging.

    Args:
        model: timm name, exported directory, Hub id, or a model instance.
        data: ``"motion"`` (the held-out motion clips of a ``sifa-hub train`` run with this ``seed``), a folder
            (its ``val/`` split when present) or a list file.
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
        :func:`sifa_hub.train.evaluate`'s metrics plus ``"classes"``.
    """
    dev = _resolve_device(device)
    net = load_model(model, dev)
    dcfg = model_data_config(net)
    if os.path.isdir(data) and os.path.isdir(os.path.join(data, "val")):
        data = os.path.join(data, "val")
    cfg = TrainConfig(
        data=data,
        val_data=data,
        data_root=data_root,
        num_frames=dcfg["num_frames"],
        img_size=dcfg["img_size"],
        eval_clips=num_clips,
        eval_crops=num_crops,
        motion_train_samples=1,
        motion_val_samples=motion_samples,
        seed=seed,
        batch_size=batch_size,
    )
    cfg.validate()
    _, dataset, classes = build_datasets(cfg, dcfg["mean"], dcfg["std"], crop_pct=dcfg["crop_pct"], train_split=False)
    if len(classes) != getattr(net, "num_classes", len(classes)):
        raise ValueError(f"model has {net.num_classes} classes but data {data!r} has {len(classes)}: {classes}")
    model_classes = label_names(net)
    if not all(n.startswith("class_") for n in model_classes) and model_classes != list(classes):
        raise ValueError(f"model classes {model_classes} differ from the data's {list(classes)}")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    metrics: dict[str, Any] = evaluate(net, loader, device=dev, amp=amp, progress=progress)
    metrics["classes"] = list(classes)
    return metrics
