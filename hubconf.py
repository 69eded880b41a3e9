"""torch.hub entrypoints for sifa_hub: SIFA video backbones (Long et al., CVPR 2022, arXiv:2206.06931).

Every entrypoint builds the timm model of the same name (``timm.create_model``), so the result is a timm
model taking clips ``(B, C, T, H, W)``::

    model = torch.hub.load("<repo or local dir>", "sifa_resnet50", num_classes=400)            # GitHub
    model = torch.hub.load("/path/to/sifa_hub", "sifa_resnet_pico", source="local", num_classes=5)

``torch.hub.list(...)`` shows every variant, ``torch.hub.help(..., name)`` its documentation.
The repository directory is put on ``sys.path`` first, so the package need not be pip-installed. Only torch, timm
and safetensors are needed: the entrypoints work the same without transformers and PyAV.
"""

from __future__ import annotations

import os
import sys
import typing

dependencies = ["torch", "timm", "safetensors"]

_REPO_DIR = os.path.dirname(os.path.abspath(__file__))
if _REPO_DIR not in sys.path:
    sys.path.insert(0, _REPO_DIR)

import timm  # noqa: E402
from torch import nn  # noqa: E402

import sifa_hub.models  # noqa: E402, F401  (importing registers every variant with timm)

_DESCRIPTIONS = {
    "sifa_resnet50": "SIFA-Net R50: C2D ResNet-50 with SIFA blocks in layers 2-4 and a dual temporal head.",
    "sifa_resnet101": "SIFA-Net R101: C2D ResNet-101 with SIFA blocks in layers 2-4 and a dual temporal head.",
    "sifa_resnet_pico": "Tiny SIFA-Net for CPU demos (8 frames, 32-64 px).",
    "c2d_resnet50": "C2D twin of sifa_resnet50 (identical network, SIFA blocks plain).",
    "c2d_resnet101": "C2D twin of sifa_resnet101 (identical network, SIFA blocks plain).",
    "c2d_resnet_pico": "C2D twin of sifa_resnet_pico.",
    "sifa_swin_tiny_patch4_window7_224": "SIFA-Transformer, Swin-T (our addition; D=96, depths 2-2-6-2).",
    "sifa_swin_small_patch4_window7_224": "SIFA-Transformer, Swin-S (D=96, depths 2-2-18-2).",
    "sifa_swin_base_patch4_window7_224": "SIFA-Transformer, Swin-B (D=128, depths 2-2-18-2).",
    "sifa_swin_large_patch4_window7_224": "SIFA-Transformer, Swin-L (D=192, depths 2-2-18-2).",
    "sifa_swin_pico": "Tiny SIFA-Transformer for CPU demos (8-frame 32 px clips).",
    "c2d_swin_tiny_patch4_window7_224": "C2D twin of sifa_swin_tiny_patch4_window7_224 (no SIFA).",
    "c2d_swin_small_patch4_window7_224": "C2D twin of sifa_swin_small_patch4_window7_224 (no SIFA).",
    "c2d_swin_base_patch4_window7_224": "C2D twin of sifa_swin_base_patch4_window7_224 (no SIFA).",
    "c2d_swin_large_patch4_window7_224": "C2D twin of sifa_swin_large_patch4_window7_224 (no SIFA).",
    "c2d_swin_pico": "C2D twin of sifa_swin_pico.",
}


def _tags(name: str) -> list[str]:
    return [m.split(".", 1)[1] for m in timm.list_models(name, pretrained=True) if "." in m]


def _entrypoint(name: str) -> typing.Callable[..., nn.Module]:
    """A hub entrypoint delegating to ``timm.create_model(name, ...)``, documented from ``_DESCRIPTIONS``."""

    def entrypoint(
        pretrained: bool = False,
        num_classes: int | None = None,
        num_frames: int | None = None,
        tag: str | None = None,
        **kwargs: typing.Any,
    ) -> nn.Module:
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        if num_frames is not None:
            kwargs["num_frames"] = num_frames
        if tag and tag not in _tags(name):
            raise ValueError(f"unknown weight tag {tag!r} for {name}; its tags: {', '.join(_tags(name)) or '(none)'}")
        return timm.create_model(f"{name}.{tag}" if tag else name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"""{_DESCRIPTIONS[name]}

    Returns ``timm.create_model("{name}", pretrained=pretrained, **kwargs)`` (``"{name}.<tag>"`` with ``tag``);
    input clips are ``(B, C, T, H, W)``. Weight tags: {", ".join(_tags(name)) or "none"}.

    Args:
        pretrained: load weights: the tag's (default: the first listed; ImageNet tags are initialisations
            downloaded from timm's Hub repositories and inflated), or a local file given as
            ``pretrained_cfg_overlay=dict(file="weights.safetensors")`` (``.pth`` works too; official SIFA
            checkpoints and 2D ImageNet ResNet/Swin weights are converted on load).
        num_classes: classifier size (the variant's default when None; 0 removes the classifier).
        num_frames: nominal clip length (the variant's default when None).
        tag: a weight tag (``timm.list_models("{name}", pretrained=True)``), e.g. the first above.
        **kwargs: any other constructor argument of the model (``early_stride``, ``drop_rate``, ...).
    """
    return entrypoint


sifa_resnet50 = _entrypoint("sifa_resnet50")
sifa_resnet101 = _entrypoint("sifa_resnet101")
sifa_resnet_pico = _entrypoint("sifa_resnet_pico")
c2d_resnet50 = _entrypoint("c2d_resnet50")
c2d_resnet101 = _entrypoint("c2d_resnet101")
c2d_resnet_pico = _entrypoint("c2d_resnet_pico")
sifa_swin_tiny_patch4_window7_224 = _entrypoint("sifa_swin_tiny_patch4_window7_224")
sifa_swin_small_patch4_window7_224 = _entrypoint("sifa_swin_small_patch4_window7_224")
sifa_swin_base_patch4_window7_224 = _entrypoint("sifa_swin_base_patch4_window7_224")
sifa_swin_large_patch4_window7_224 = _entrypoint("sifa_swin_large_patch4_window7_224")
sifa_swin_pico = _entrypoint("sifa_swin_pico")
c2d_swin_tiny_patch4_window7_224 = _entrypoint("c2d_swin_tiny_patch4_window7_224")
c2d_swin_small_patch4_window7_224 = _entrypoint("c2d_swin_small_patch4_window7_224")
c2d_swin_base_patch4_window7_224 = _entrypoint("c2d_swin_base_patch4_window7_224")
c2d_swin_large_patch4_window7_224 = _entrypoint("c2d_swin_large_patch4_window7_224")
c2d_swin_pico = _entrypoint("c2d_swin_pico")

__all__ = sorted(_DESCRIPTIONS)
