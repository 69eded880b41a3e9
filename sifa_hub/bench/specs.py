"""The benchmarked models: specs (how to build each, its role, its C2D twin) and the adapters they need.

Every model takes a ``(B, C, T, H, W)`` clip and returns logits (or a tuple of logits for multi-head models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = [
    "MODEL_SPECS",
    "NUM_CLASSES",
    "OFFSET_WEIGHT_STD",
    "QUICK_MODELS",
    "REFERENCE_MODEL",
    "FrameWise",
    "ModelSpec",
    "Reported",
    "TimeFirst",
    "output_logits",
    "perturb_offset_convs",
    "spec_for",
]

REFERENCE_MODEL = "resnet50_framewise"
NUM_CLASSES = 400
OFFSET_WEIGHT_STD = 0.01


class FrameWise(nn.Module):
    """Runs an image model on every frame and averages the logits over time (a C2D baseline).

    Args:
        model: image classifier taking ``(N, C, H, W)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, num_classes)``."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B·T, C, H, W)
        return self.model(frames).view(b, t, -1).mean(1)  # (B, num_classes)


class TimeFirst(nn.Module):
    """Adapter for Hugging Face video classifiers, whose ``pixel_values`` are ``(B, T, C, H, W)``.

    Args:
        model: a ``*ForVideoClassification`` model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, num_labels)``."""
        return self.model(pixel_values=x.transpose(1, 2)).logits


def output_logits(output: Any) -> list[torch.Tensor]:
    """The logits tensors of a model's output: a tensor, a tuple/list of tensors, or an object with ``logits``."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [o for o in output if isinstance(o, torch.Tensor)]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return [logits]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


@dataclasses.dataclass(frozen=True)
class Reported:
    """A Kinetics-400 top-1 accuracy reported by a paper (never measured here).

    Args:
        top1: top-1 accuracy in percent.
        setting: the paper's evaluation setting (frames × views, pre-training).
        source: citation (paper and arXiv id, where in the paper).
    """

    top1: float
    setting: str
    source: str


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One benchmarked model.

    Args:
        name: row name.
        description: what is built, in words.
        build: ``num_classes -> nn.Module`` taking ``(B, C, T, H, W)``.
        role: ``"reference"``, ``"sifa"``, ``"c2d"`` (our twins) or ``"peer"`` (published video models).
        twin: for a SIFA model, the name of its C2D twin.
        heavy: a large model: the time budget gives it one training step, at the smallest batch only.
        reported: the paper's Kinetics-400 top-1, if one can be cited.
    """

    name: str
    description: str
    build: Callable[[int], nn.Module]
    role: str
    twin: str | None = None
    heavy: bool = False
    reported: Reported | None = None

    def build_trained_path(self, seed: int = 0) -> nn.Module:
        """The model as every benchmark runs it: built with seed ``seed`` and :data:`NUM_CLASSES` classes, its
        offset convs perturbed (:func:`perturb_offset_convs`) so SIFA takes a trained model's path."""
        torch.manual_seed(seed)
        model = self.build(NUM_CLASSES)
        perturb_offset_convs(model, seed)
        return model


def _timm_video(arch: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import timm

        import sifa_hub  # noqa: F401  (registers the sifa_hub models with timm)

        return timm.create_model(arch, pretrained=False, num_classes=num_classes)

    return build


def _timm_framewise(arch: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import timm

        return FrameWise(timm.create_model(arch, pretrained=False, num_classes=num_classes))

    return build


def _torchvision_video(arch: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        from torchvision.models import video

        return getattr(video, arch)(weights=None, num_classes=num_classes)

    return build


def _hf_video(kind: str, frames: int = 16) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import transformers

        config_cls = getattr(transformers, f"{kind}Config")
        model_cls = getattr(transformers, f"{kind}ForVideoClassification")
        return TimeFirst(model_cls(config_cls(num_labels=num_classes, num_frames=frames)))

    return build


_SIFA_PAPER = "Long et al., SIFA, CVPR 2022, arXiv 2206.06931, abstract"
MODEL_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            REFERENCE_MODEL,
            "C2D-R50: timm `resnet50` on the B·T frames, logits averaged over T",
            _timm_framewise("resnet50"),
            role="reference",
        ),
        ModelSpec(
            "sifa_resnet50", "SIFA-Net R50 (sifa_hub, timm)", _timm_video("sifa_resnet50"), "sifa", "c2d_resnet50"
        ),
        ModelSpec("c2d_resnet50", "C2D twin of SIFA-Net R50 (sifa_hub, timm)", _timm_video("c2d_resnet50"), "c2d"),
        ModelSpec(
            "sifa_swin_base_patch4_window7_224",
            "SIFA-Transformer Swin-B (sifa_hub, timm)",
            _timm_video("sifa_swin_base_patch4_window7_224"),
            "sifa",
            "c2d_swin_base_patch4_window7_224",
            heavy=True,
            reported=Reported(83.1, "Swin-B, as in the abstract", _SIFA_PAPER),
        ),
        ModelSpec(
            "c2d_swin_base_patch4_window7_224",
            "C2D twin of SIFA-Transformer Swin-B (sifa_hub, timm)",
            _timm_video("c2d_swin_base_patch4_window7_224"),
            "c2d",
            heavy=True,
        ),
        ModelSpec(
            "sifa_swin_tiny_patch4_window7_224",
            "SIFA-Transformer Swin-T (sifa_hub, timm)",
            _timm_video("sifa_swin_tiny_patch4_window7_224"),
            "sifa",
            "c2d_swin_tiny_patch4_window7_224",
        ),
        ModelSpec(
            "c2d_swin_tiny_patch4_window7_224",
            "C2D twin of SIFA-Transformer Swin-T (sifa_hub, timm)",
            _timm_video("c2d_swin_tiny_patch4_window7_224"),
            "c2d",
        ),
        ModelSpec("r3d_18", "torchvision `r3d_18` (weights=None)", _torchvision_video("r3d_18"), "peer", heavy=True),
        ModelSpec(
            "swin3d_t",
            "torchvision `swin3d_t` (Video Swin-T, weights=None)",
            _torchvision_video("swin3d_t"),
            "peer",
            reported=Reported(
                78.8, "32×224², 4×3 views, ImageNet-1K pre-training", "Liu et al., Video Swin, arXiv 2106.13230"
            ),
        ),
        ModelSpec(
            "mvit_v2_s",
            "torchvision `mvit_v2_s` (weights=None)",
            _torchvision_video("mvit_v2_s"),
            "peer",
            reported=Reported(81.0, "16×4, 5×1 views, from scratch", "Li et al., MViTv2, arXiv 2112.01526"),
        ),
        ModelSpec(
            "videomae_base",
            "transformers `VideoMAEForVideoClassification`, base config, random init",
            _hf_video("VideoMAE"),
            "peer",
            heavy=True,
            reported=Reported(81.5, "ViT-B, 16×5×3 views", "Tong et al., VideoMAE, arXiv 2203.12602"),
        ),
        ModelSpec(
            "timesformer_base",
            "transformers `TimesformerForVideoClassification`, base config with num_frames=16, random init",
            _hf_video("Timesformer"),
            "peer",
            heavy=True,
            reported=Reported(
                78.0, "8×224², 1×3 views, ImageNet-21K pre-training", "Bertasius et al., arXiv 2102.05095"
            ),
        ),
    )
}


def spec_for(name: str) -> ModelSpec:
    """The spec of ``name``: one of :data:`MODEL_SPECS`, or any timm-registered model taking ``(B, C, T, H, W)``.

    Unlisted ``sifa_*`` models are paired with their ``c2d_*`` twin of the same suffix.
    """
    if name in MODEL_SPECS:
        return MODEL_SPECS[name]
    import timm

    import sifa_hub  # noqa: F401  (registers the sifa_hub models with timm)

    if name not in timm.list_models():
        raise ValueError(f"unknown model {name!r}: not in {sorted(MODEL_SPECS)} and not registered with timm")
    if name.startswith("sifa_"):
        return ModelSpec(name, f"{name} (sifa_hub, timm)", _timm_video(name), "sifa", "c2d_" + name[len("sifa_") :])
    role = "c2d" if name.startswith("c2d_") else "peer"
    return ModelSpec(name, f"{name} (timm)", _timm_video(name), role)


QUICK_MODELS = (
    REFERENCE_MODEL,
    "sifa_resnet50",
    "c2d_resnet50",
    "sifa_swin_tiny_patch4_window7_224",
    "c2d_swin_tiny_patch4_window7_224",
)


def perturb_offset_convs(model: nn.Module, seed: int = 0, std: float = OFFSET_WEIGHT_STD) -> int:
    """Give the zero-initialised offset convs of every :class:`sifa_hub.layers.SIFA` random weights ``N(0, std²)``.

    A trained SIFA-Net predicts non-zero offsets, so its operator samples at fractional positions and its offset
    convs run; a freshly built one predicts zero offsets, and ``SIFA`` skips an all-zero offset conv at inference.
    Benchmarking the trained path needs non-zero weights (``std = 0.01`` gives offsets of a few tenths of a pixel).

    Returns:
        how many offset convs were changed.
    """
    from ..layers import SIFA

    gen = torch.Generator().manual_seed(seed)
    changed = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SIFA) and m.conv_offset is not None:
                w = m.conv_offset.weight
                w.copy_(torch.randn(w.shape, generator=gen) * std)
                changed += 1
    return changed
