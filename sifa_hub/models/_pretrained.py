"""Weight tags of the SIFA variants: ImageNet initialisations from timm's Hub repositories, and trained models.

timm names a weight set ``<architecture>.<tag>`` and resolves it from the cfg's ``hf_hub_id``. No video-trained
SIFA weights were ever released, so the tags here are of two kinds:

* **ImageNet initialisations** (the official recipe's starting point): ``sifa_resnet50.a1_in1k`` downloads
  ``timm/resnet50.a1_in1k`` through the Hub cache (``HF_HUB_OFFLINE`` honoured) and the family's
  ``checkpoint_filter_fn`` inflates it to video. Their cfgs say so in ``description``/``notes`` and claim no
  accuracy; the ImageNet classifier is kept when ``num_classes`` is its size (1000 / 21841), else re-initialised.
* **Trained models shipped with the package**: ``sifa_resnet_pico.motion4``, the demo's SIFA-Net trained on the
  embedded motion data set (4 classes), loads from package data with no network.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["IMAGENET_TAGS", "imagenet_cfgs", "packaged_weights", "pico_motion_cfg"]

# 2D timm architecture -> the tags of it that initialise our variants (timm/<arch>.<tag> on the Hub)
IMAGENET_TAGS: dict[str, tuple[str, ...]] = {
    "resnet50": ("a1_in1k",),
    "resnet101": ("a1h_in1k",),
    "swin_tiny_patch4_window7_224": ("ms_in1k", "ms_in22k"),
    "swin_small_patch4_window7_224": ("ms_in1k", "ms_in22k"),
    "swin_base_patch4_window7_224": ("ms_in1k", "ms_in22k"),
    "swin_large_patch4_window7_224": ("ms_in22k",),
}
_INIT_NOTE = (
    "An initialisation, not video-trained weights: ImageNet 2D weights inflated to video (no video accuracy "
    "is claimed). The classifier defaults to 400 classes (re-initialised, with a warning); pass num_classes=N to "
    "fine-tune, or num_classes=1000 (in1k) / 21841 (in22k) to keep the ImageNet classifier."
)


def imagenet_cfgs(variant: str, arch_2d: str, base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Tagged cfgs ``{"<variant>.<tag>": cfg}`` initialising ``variant`` from ``timm/<arch_2d>.<tag>``.

    Args:
        variant: a registered SIFA or C2D variant (``sifa_resnet50``, ``c2d_swin_base_patch4_window7_224``).
        arch_2d: the timm 2D architecture its trunk inflates (``resnet50``, ``swin_base_patch4_window7_224``).
        base: the variant's untagged cfg (input size, mean/std, classifier names, ...).
    """
    out = {}
    for tag in IMAGENET_TAGS[arch_2d]:
        repo = f"timm/{arch_2d}.{tag}"
        out[f"{variant}.{tag}"] = {
            **base,
            "hf_hub_id": repo,
            "description": f"{variant} initialised from the ImageNet weights of {repo}, inflated to video",
            "notes": (_INIT_NOTE,),
            "origin_url": f"https://huggingface.co/{repo}",
        }
    return out


def packaged_weights(name: str) -> str:
    """Path of a weight file shipped in ``sifa_hub/weights/`` (package data; found beside this module's package, so
    importing works where the package is bundled elsewhere, e.g. remote code)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights", name)


_MOTION4_LABELS = ("left", "right", "up", "down")


def pico_motion_cfg(base: dict[str, Any]) -> dict[str, Any]:
    """The ``sifa_resnet_pico.motion4`` cfg: the demo's trained model (``model_cards/sifa_resnet_pico``).

    Measured by ``sifa-hub demo`` (2,000 training / 400 validation clips of 8 frames at 32², 3 epochs): top-1
    100.0%, top-5 100.0% on the validation clips; its C2D twin reached 49.75% of a 50% ceiling.
    """
    return {
        **base,
        "file": packaged_weights("sifa_resnet_pico.motion4.safetensors"),
        "num_classes": len(_MOTION4_LABELS),
        "label_names": _MOTION4_LABELS,
        "description": "sifa_resnet_pico trained by `sifa-hub demo` on the embedded motion data set (4 classes)",
        "notes": (
            "Measured: top-1 100.0% / top-5 100.0% on 400 validation clips (8 frames, 32x32); the C2D twin "
            "c2d_resnet_pico reached 49.75% (its ceiling is 50%: time-reversal pairs).",
            "Synthetic data only: a demonstration and test model, not an action-recognition model.",
        ),
    }
