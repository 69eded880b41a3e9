"""Checkpoint helpers shared by the model families: unwrap, inflate, adapt, fit classifiers, report mismatches."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import torch
from timm.models._manipulate import adapt_input_conv
from torch import nn

__all__ = [
    "CheckpointMismatchError",
    "adapt_stem_weight",
    "check_output_fmt",
    "check_state_dict",
    "fit_classifier",
    "inflate_conv_weight",
    "unwrap_state_dict",
]

_logger = logging.getLogger(__name__)


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


def adapt_stem_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a 3D stem kernel ``(O, I, t, kh, kw)`` to ``in_chans`` input channels as timm does for 2D stems.

    One channel: the sum over the input channels; more than ``I``: the kernel repeated and rescaled.
    """
    o, i, t, kh, kw = weight.shape
    if i == in_chans:
        return weight
    adapted = adapt_input_conv(in_chans, weight.reshape(o, i, t * kh, kw))  # timm's rule on a (O, I, t·kh, kw) view
    return adapted.reshape(o, in_chans, t, kh, kw)


def fit_classifier(
    state: dict[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    keys: Sequence[str],
    source: str,
) -> list[str]:
    """Keep a checkpoint's classifier when it fits the model; otherwise the model's head keeps its initialisation.

    A classifier whose shapes equal the model's loads whatever ``num_classes`` the registered cfg says. One that
    does not fit (another number of classes, or none in the checkpoint) is replaced in ``state`` by the model's
    own tensors and a WARNING names the file and both shapes. A model without classifier (``num_classes=0``)
    drops the checkpoint's quietly.

    Args:
        state: the converted checkpoint (modified in place).
        own: the model's state dict.
        keys: the classifier's tensor names (e.g. ``fc.weight``, ``fc.bias``).
        source: the checkpoint's name for messages (a file path).

    Returns:
        The classifier keys that keep the model's initialisation.
    """
    model_keys = [k for k in keys if k in own]
    ckpt_shapes = {k: tuple(state[k].shape) for k in keys if k in state}
    if not model_keys:
        for k in ckpt_shapes:
            del state[k]
        if ckpt_shapes:
            _logger.info("%s: the model has no classifier (num_classes=0); ignoring %s", source, list(ckpt_shapes))
        return []
    model_shapes = {k: tuple(own[k].shape) for k in model_keys}
    if all(ckpt_shapes.get(k) == shape for k, shape in model_shapes.items()):
        return []
    _logger.warning(
        "%s: the checkpoint's classifier %s does not fit the model's %s: the classifier keeps the model's "
        "initialisation (build the model with the checkpoint's num_classes to keep the trained head)",
        source,
        ckpt_shapes or "(absent)",
        model_shapes,
    )
    for k in ckpt_shapes:
        del state[k]
    for k in model_keys:
        state[k] = own[k].clone()
    return model_keys


def check_output_fmt(model: nn.Module, output_fmt: object) -> None:
    """Refuse any ``forward_intermediates`` format but ``"NCTHW"`` with a message saying what to pass."""
    if output_fmt != "NCTHW":
        raise ValueError(
            f"{type(model).__name__}.forward_intermediates: output_fmt={output_fmt!r} is not available for a video "
            "model; pass 'NCTHW' (output_fmt='NCTHW': maps (B, C, T, H, W)); per-frame image maps are "
            "m.transpose(1, 2).flatten(0, 1)"
        )


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
