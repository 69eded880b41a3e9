"""What an export starts from: a model instance, or a source resolved by :mod:`sifa_hub.loading`.

Sources (as ``sifa-hub export --model`` takes them): a timm-created SIFA model; a training run or checkpoint folder;
an exported folder (``local-dir:``) or a Hub id; or a variant name together with an official SIFA checkpoint
(converted by the family's ``checkpoint_filter_fn``) or 2D ImageNet weights (inflated to 3D).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..loading import is_sifa_variant, load_model, resolve_source, sifa_variants

__all__ = ["ExportSource", "label_list", "load_export_source", "read_labels_file"]


@dataclass(frozen=True)
class ExportSource:
    """A model ready to export.

    Attributes:
        model: the network, on the CPU.
        kind: where the weights come from (one of :data:`sifa_hub.publish.card.WEIGHT_KINDS`).
        description: the weights' origin in one line, for the card.
        labels: class names stored with the source, or ``None``.
    """

    model: nn.Module
    kind: str
    description: str
    labels: list[str] | None


def label_list(labels: Sequence[str] | Mapping[Any, str] | None) -> list[str] | None:
    """Class names in index order from a list or an ``{index: name}`` mapping (``None`` passes through)."""
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        return [str(labels[k]) for k in sorted(labels, key=int)]
    if isinstance(labels, (list, tuple)):
        return [str(x) for x in labels]
    raise TypeError(f"labels must be a list of class names or an {{index: name}} mapping, got {type(labels)}")


def read_labels_file(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file, one per line in index order (blank lines ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{os.fspath(path)}: cannot read class names ({e})") from e
    if not names:
        raise ValueError(f"{os.fspath(path)}: no class names (expected one per line)")
    return names


def _from_instance(model: nn.Module, *, num_classes: int | None, num_frames: int | None) -> ExportSource:
    if num_classes is not None or num_frames is not None:
        raise ValueError("num_classes / num_frames cannot change a model instance; build it with them instead")
    if any(t.device.type != "cpu" for t in model.state_dict().values()):
        model = copy.deepcopy(model).to("cpu")  # exports, statistics and checks run on the CPU
    return ExportSource(model, "instance", "the weights of the model passed to `export_model`", None)


def _from_weights_file(
    arch: str, path: str, *, official: bool, num_classes: int | None, num_frames: int | None
) -> ExportSource:
    """A variant with an official checkpoint (converted) or 2D ImageNet weights (inflated) loaded into it."""
    if not is_sifa_variant(arch):
        raise ValueError(f"unknown model architecture {arch!r}; SIFA architectures: {', '.join(sifa_variants())}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    overlay: dict[str, Any] = {"file": os.path.abspath(path)}
    if official and num_classes is not None:
        overlay["num_classes"] = num_classes  # the family's filter keeps or drops the head, timm must not strip it
    loaded = load_model(
        arch, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=num_classes, num_frames=num_frames
    )
    name = os.path.basename(path)
    if official:
        return ExportSource(loaded.model, "official", f"official SIFA release weights, converted from `{name}`", None)
    description = f"ImageNet 2D weights from `{name}` inflated to 3D: an initialisation, not trained on video"
    return ExportSource(loaded.model, "imagenet-inflated", description, None)


def _from_tag(name: str, *, num_classes: int | None, num_frames: int | None) -> ExportSource:
    """A registered weight tag (``sifa_resnet50.a1_in1k``, ``sifa_resnet_pico.motion4``), loaded as timm does."""
    loaded = load_model(name, num_classes=num_classes, num_frames=num_frames)
    cfg = getattr(loaded.model, "pretrained_cfg", None) or {}
    description = f"the `{name}` weight set: {cfg.get('description') or 'registered weights'}"
    notes = " ".join(cfg.get("notes") or ())
    if cfg.get("hf_hub_id"):  # ImageNet weights from timm's Hub repository, inflated: an initialisation
        return ExportSource(loaded.model, "imagenet-inflated", f"{description}. {notes}".strip(), None)
    return ExportSource(loaded.model, "export", f"{description}. {notes}".strip(), loaded.labels)


def _from_source(source: str, *, num_classes: int | None, num_frames: int | None) -> ExportSource:
    """A training run / checkpoint, an exported folder or a Hub id, through :func:`sifa_hub.loading.load_model`."""
    resolved = resolve_source(source)
    if resolved.kind == "variant" and "." in source:
        return _from_tag(source, num_classes=num_classes, num_frames=num_frames)
    if resolved.kind == "variant":
        raise ValueError(
            f"{source!r} gives no weights: pass a model instance, a training checkpoint or exported directory, or an "
            "architecture name with official_checkpoint= (official SIFA .pth) or imagenet_checkpoint= (2D weights)"
        )
    loaded = load_model(source, num_classes=num_classes, num_frames=num_frames)
    if resolved.kind == "training-checkpoint":
        return ExportSource(loaded.model, "training-checkpoint", loaded.description, loaded.labels)
    stored = label_list((getattr(loaded.model, "pretrained_cfg", None) or {}).get("label_names"))
    where = os.path.basename(resolved.path) if resolved.path else resolved.name.removeprefix("hf-hub:")
    return ExportSource(loaded.model, "export", f"the weights of the exported model `{where}`", stored)


def load_export_source(
    model_or_source: nn.Module | str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    num_frames: int | None = None,
    official_checkpoint: str | os.PathLike[str] | None = None,
    imagenet_checkpoint: str | os.PathLike[str] | None = None,
) -> ExportSource:
    """Build the model to export (see the module docstring); raises ``ValueError`` naming what is wrong."""
    if official_checkpoint is not None and imagenet_checkpoint is not None:
        raise ValueError("give official_checkpoint or imagenet_checkpoint, not both")
    weights_file = official_checkpoint if official_checkpoint is not None else imagenet_checkpoint
    if isinstance(model_or_source, nn.Module):
        if weights_file is not None:
            raise ValueError("official_checkpoint / imagenet_checkpoint need an architecture name, not a model")
        return _from_instance(model_or_source, num_classes=num_classes, num_frames=num_frames)
    if not isinstance(model_or_source, (str, os.PathLike)):
        raise TypeError(
            f"model_or_source must be an nn.Module, a directory or an architecture name, got {type(model_or_source)}"
        )
    source = os.fspath(model_or_source)
    if weights_file is not None:
        return _from_weights_file(
            source,
            os.fspath(weights_file),
            official=official_checkpoint is not None,
            num_classes=num_classes,
            num_frames=num_frames,
        )
    return _from_source(source, num_classes=num_classes, num_frames=num_frames)
