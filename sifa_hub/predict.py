"""Inference on video files: ``predict`` (top-k labels), behind ``sifa-hub predict``.

``--model`` is anything :func:`sifa_hub.loading.load_model` resolves (a variant name, an exported folder, a
training run, ``local-dir:``/``hf-hub:``). Each video goes through the clip pipeline
(:class:`sifa_hub.data.pipeline.ClipPipeline`) with the model's own data config — frame count, input size,
``crop_pct``, mean/std — decoding only the frames its clips use, so the input is the one ``sifa-hub eval``, ``explain``
and the transformers video processor build from the same video. Accuracy over a dataset is
:func:`sifa_hub.evaluation.evaluate_model`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from . import loading
from .data.pipeline import ClipPipeline
from .utils.runtime import autocast, resolve_device

__all__ = ["load_model", "predict", "predict_clips"]


def load_model(name_or_path: str | os.PathLike[str] | nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """The network of :func:`sifa_hub.loading.load_model`, in eval mode on ``device`` (a module passes through)."""
    return loading.load_model(name_or_path, device=device).model


def predict_clips(model: nn.Module, views: torch.Tensor, *, amp: str = "none") -> torch.Tensor:
    """Class probabilities of one video, averaged over its views.

    Args:
        model: A classifier in eval mode taking ``(B, C, T, H, W)`` clips; its softmax is the prediction (for
            SIFA-Net the log of the two heads' mean prediction, see :mod:`sifa_hub.models.sifa_resnet`).
        views: ``(V, C, T, H, W)`` preprocessed clips on the model's device.
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` autocast.

    Returns:
        ``(num_classes,)`` float probabilities.
    """
    with autocast(views.device, amp):
        logits = model(views)  # (V, num_classes)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"{type(model).__name__} returned {type(logits).__name__}; expected (V, classes) logits")
    return logits.float().softmax(-1).mean(0)


def _check_videos(videos: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(videos, (str, bytes, os.PathLike)):
        videos = [videos]
    if not videos:
        raise ValueError("predict needs at least one video")
    bad = [v for v in videos if not isinstance(v, (str, bytes, os.PathLike))]
    if bad:
        raise TypeError(f"predict takes video paths (str or os.PathLike), got {type(bad[0]).__name__}: {bad[0]!r}")
    return [os.fsdecode(v) for v in videos]


@torch.no_grad()
def predict(
    videos: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str] | nn.Module,
    *,
    top_k: int = 5,
    num_clips: int = 1,
    device: str | torch.device = "auto",
    amp: str = "none",
) -> list[dict[str, Any]]:
    """Top-k labels of video files.

    Args:
        videos: One path or several.
        model: A source for :func:`sifa_hub.loading.load_model`, or a model instance.
        top_k: Labels per video (capped at the number of classes).
        num_clips: Temporal views averaged per video (uniform clips interleaved over the video).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: ``"none"``, ``"bf16"`` or ``"fp16"`` autocast.

    Returns:
        One ``{"video": path, "predictions": [{"label", "index", "score"}, ...]}`` per video, best first; scores
        are probabilities (averaged over views).

    Raises:
        sifa_hub.data.VideoDecodeError: A file is missing or cannot be decoded (the message names it).
    """
    paths = _check_videos(videos)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    dev = resolve_device(device)
    loaded = loading.load_model(model, device=dev)
    pipeline = ClipPipeline.from_data_config(loaded.data_config, num_clips=num_clips)
    results = []
    for path in paths:
        views = pipeline.load(path)  # (V, 3, T, H, W)
        probs = predict_clips(loaded.model, views.to(dev), amp=amp)  # (N,)
        scores, indices = probs.topk(min(top_k, probs.numel()))
        predictions = [
            {"label": loaded.labels[i], "index": int(i), "score": float(s)}
            for s, i in zip(scores.tolist(), indices.tolist())
        ]
        results.append({"video": path, "predictions": predictions})
    return results
