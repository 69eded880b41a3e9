"""Checkpoint helpers shared by the model families: unwrap, inflate, load safely, report mismatches."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

__all__ = [
    "CheckpointMismatchError",
    "check_state_dict",
    "inflate_conv_weight",
    "load_state_dict_file",
    "unwrap_state_dict",
]


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the model; the message lists every difference."""


def unwrap_state_dict(checkpoint: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` containers and strip a DataParallel ``module.`` prefix."""
    state: Mapping[str, object] = checkpoint
    for key in ("state_dict", "model", "model_state", "module"):
        inner = state.get(key) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            state = inner
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out


def inflate_conv_weight(weight: torch.Tensor, time: int = 1, center: bool = True) -> torch.Tensor:
    """Inflate a 2D conv weight ``(O, I, kh, kw)`` to 3D ``(O, I, time, kh, kw)``.

    With ``center=True`` the 2D kernel sits at temporal index ``time // 2`` and the other slices are zero
    (so a clip of one repeated frame gives the 2D response); otherwise it is repeated and divided by ``time``.
    """
    if weight.dim() == 5:
        return weight
    if weight.dim() != 4:
        raise ValueError(f"inflate_conv_weight: expected a (O, I, kh, kw) weight, got shape {tuple(weight.shape)}")
    if center:
        out = weight.new_zeros(weight.shape[:2] + (time,) + weight.shape[2:])
        out[:, :, time // 2] = weight
        return out
    return weight.unsqueeze(2).repeat(1, 1, time, 1, 1) / time


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a ``.safetensors`` or torch (``.pth``/``.pt``/``.bin``) checkpoint safely (never unpickles objects)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, unsupported globals
        raise ValueError(f"could not load checkpoint {path} with weights_only=True: {e}") from e
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict")
    return unwrap_state_dict(checkpoint)


def check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    allow_missing: Iterable[str] = (),
    source: str = "checkpoint",
) -> None:
    """Raise :class:`CheckpointMismatchError` listing missing, unexpected and mis-shaped keys.

    Args:
        model: the model the state dict is meant for.
        state_dict: the (already filtered) state dict.
        allow_missing: key suffixes that may be absent (e.g. ``num_batches_tracked``).
        source: how to name the checkpoint in the message.
    """
    allowed = tuple(allow_missing)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not (allowed and k.endswith(allowed))]
    unexpected = [k for k in state_dict if k not in own]
    mis_shaped = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or mis_shaped):
        return
    lines = [f"{source} does not match {type(model).__name__}:"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mis_shaped)):
        if items:
            shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
            lines.append(f"  {len(items)} {title}: {shown}")
    raise CheckpointMismatchError("\n".join(lines))
