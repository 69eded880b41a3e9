"""Model loading: the one way from what a user names to a model, its input config and its class names.

Every application (``train``, ``eval``, ``predict``, ``explain``, ``demo``, ``export``, ``push``) resolves its
``--model`` here. A source is one of:

- a registered variant name, optionally with a weight tag: ``sifa_resnet50``, ``c2d_resnet_pico``;
- an exported folder (``config.json`` + ``model.safetensors``: ``sifa-hub export``, a training run's ``model/``),
  or ``local-dir:DIR``;
- a Hugging Face Hub id (``ORG/NAME``) or ``hf-hub:ORG/NAME``;
- a training run folder (``sifa-hub train --output-dir``: its newest complete checkpoint) or one checkpoint
  folder (``trainer_state.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedModel",
    "data_config",
    "is_sifa_variant",
    "label_names",
    "load_model",
    "resolve_source",
    "sifa_variants",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # every SIFA model is normalised as ImageNet
IMAGENET_STD = (0.229, 0.224, 0.225)
_VARIANT_PREFIXES = ("sifa_", "c2d_")


def is_sifa_variant(name: str) -> bool:
    """Whether ``name`` (with or without a ``.tag``) is one of the registered SIFA-Net / SIFA-Transformer / C2D
    variants."""
    import timm

    from . import models  # noqa: F401  (registers the variants)

    arch = name.split(".", 1)[0]
    return arch.startswith(_VARIANT_PREFIXES) and timm.is_model(arch)


def sifa_variants() -> list[str]:
    """Every registered SIFA and C2D variant."""
    import timm

    from . import models  # noqa: F401

    return [n for n in timm.list_models() if n.startswith(_VARIANT_PREFIXES)]


@dataclass(frozen=True)
class Source:
    """A resolved model source.

    ``kind`` is ``"variant"`` (a registered name; ``name`` is it), ``"export"`` (``name`` is ``local-dir:DIR``),
    ``"hub"`` (``name`` is ``hf-hub:ORG/NAME``) or ``"training-checkpoint"`` (``path`` is the checkpoint folder).
    """

    kind: str
    name: str
    path: str | None = None


def _newest_checkpoint(run_dir: str) -> str | None:
    from .checkpoint import latest_checkpoint

    return latest_checkpoint(run_dir, for_resume=False)


def resolve_source(name_or_path: str | os.PathLike[str]) -> Source:
    """Classify a ``--model`` value; raises ``ValueError`` naming what is wrong with it."""
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):
        raise ValueError(f"model must be a non-empty name or path, got {name_or_path!r}")
    value = os.fspath(name_or_path)
    if value.startswith("hf-hub:"):
        return Source("hub", value)
    if value.startswith("local-dir:"):
        value = value[len("local-dir:") :]
        if not os.path.isdir(value):
            raise ValueError(f"model folder {value!r} does not exist")
    if os.path.isdir(value):
        if os.path.isfile(os.path.join(value, "trainer_state.json")):
            return Source("training-checkpoint", value, path=os.path.abspath(value))
        if os.path.isfile(os.path.join(value, "config.json")):
            return Source("export", f"local-dir:{os.path.abspath(value)}", path=os.path.abspath(value))
        if os.path.isdir(os.path.join(value, "checkpoints")):
            newest = _newest_checkpoint(value)
            if newest is None:
                raise ValueError(f"training run {value!r} has no complete checkpoint yet")
            return Source("training-checkpoint", newest, path=newest)
        raise ValueError(
            f"{value!r} is neither an exported model (config.json), a training checkpoint (trainer_state.json) "
            "nor a training run (checkpoints/)"
        )
    if os.path.exists(value):
        raise ValueError(f"{value!r} is a file; pass a variant name, an exported model folder or a Hub id")
    if "/" in value or os.sep in value:
        if value.startswith((".", os.sep, "~")) or value.count("/") != 1:
            raise ValueError(f"model folder {value!r} does not exist")
        return Source("hub", f"hf-hub:{value}")
    if not is_sifa_variant(value):
        raise ValueError(f"unknown model {value!r}; SIFA/C2D variants: {', '.join(sifa_variants())}")
    return Source("variant", value)


def _pair(size: Any) -> tuple[Any, Any]:
    return (size[0], size[-1]) if isinstance(size, (tuple, list)) else (size, size)


def _built_img_size(model: nn.Module) -> int | None:
    """The input side a model was explicitly built with (``img_size=``), or None when it kept its constructor's
    default (a fully convolutional ResNet records 224 whatever its pretrained config says)."""
    import inspect

    size = getattr(model, "img_size", None)
    try:
        default = inspect.signature(type(model).__init__).parameters["img_size"].default
    except (KeyError, TypeError, ValueError):
        default = inspect.Parameter.empty
    if size is None or (default is not inspect.Parameter.empty and _pair(size) == _pair(default)):
        return None
    return int(_pair(size)[-1])


def data_config(model: nn.Module) -> dict[str, Any]:
    """The inference input of a model: ``mean``, ``std``, ``num_frames``, ``img_size`` (crop side), ``crop_pct``.

    The input side is the one the model was explicitly built with (``img_size=``), else its own pretrained
    config's ``input_size`` (``c2d_resnet_pico``: 32; a folder or Hub model: the size it was saved with), else 224.
    """
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = None if cfg.get("source") in ("local-dir", "hf-hub") else _built_img_size(model)
    if size is None:
        size = cfg.get("input_size", (3, 224, 224))[-1]
    return {
        "mean": tuple(float(m) for m in cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(float(s) for s in cfg.get("std", IMAGENET_STD)),
        "num_frames": int(getattr(model, "num_frames", 8)),
        "img_size": int(size),
        "crop_pct": float(cfg.get("crop_pct", 1.0)),
    }


def label_names(model: nn.Module) -> list[str]:
    """Class names stored with a model (``pretrained_cfg['label_names']``), or ``class_<i>``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    n = int(getattr(model, "num_classes", 0) or 0)
    if isinstance(names, Mapping):
        names = [names.get(str(i), names.get(i, f"class_{i}")) for i in range(n)]
    if isinstance(names, (list, tuple)) and len(names) == n:
        return [str(x) for x in names]
    return [f"class_{i}" for i in range(n)]


@dataclass
class LoadedModel:
    """A model with everything an application needs to feed it and name its outputs.

    Attributes:
        model: the network (eval mode), taking clips ``(B, C, T, H, W)``.
        data_config: its inference input (:func:`data_config`).
        labels: one name per class.
        kind: ``"variant"``, ``"export"``, ``"hub"``, ``"training-checkpoint"``.
        description: where the weights come from, in words (for model cards and logs).
        source: the resolved source (``local-dir:DIR``, ``hf-hub:ID``, a checkpoint folder or a variant name).
        train_config: for a training checkpoint, the ``TrainConfig`` fields it was trained with.
    """

    model: nn.Module
    data_config: dict[str, Any]
    labels: list[str]
    kind: str
    description: str
    source: str
    train_config: dict[str, Any] = field(default_factory=dict)


def _create(name: str, **kwargs: Any) -> nn.Module:
    import timm

    from . import models  # noqa: F401  (registers the variants)

    variant, _, tag = name.partition(".")
    if tag and is_sifa_variant(variant) and name not in timm.list_pretrained(variant):
        tags = timm.list_pretrained(variant)
        raise ValueError(f"unknown weight tag {name!r}; registered tags of {variant}: {', '.join(tags) or '(none)'}")
    return timm.create_model(name, **{k: v for k, v in kwargs.items() if v is not None})


def _from_training_checkpoint(path: str, **kwargs: Any) -> tuple[nn.Module, list[str], str, dict[str, Any]]:
    """Rebuild the model of a training checkpoint folder and load its weights."""
    from .checkpoint import read_checkpoint_model

    return read_checkpoint_model(path, create=_create, **kwargs)


def load_model(
    name_or_path: str | os.PathLike[str] | nn.Module,
    *,
    num_classes: int | None = None,
    num_frames: int | None = None,
    img_size: int | None = None,
    pretrained: bool = False,
    device: str | torch.device = "cpu",
    labels: Sequence[str] | None = None,
    **model_kwargs: Any,
) -> LoadedModel:
    """Resolve ``name_or_path`` (see the module docstring) and build the model on ``device`` in eval mode.

    Args:
        name_or_path: a source, or an ``nn.Module`` (passed through, its configs read).
        num_classes: classifier size (``None``: the source's own; a different size re-initialises the head).
        num_frames: clip length (``None``: the source's own).
        img_size: input side (``None``: the source's own).
        pretrained: for a variant name, load its registered weights.
        device: where to put the model.
        labels: class names to use instead of the stored ones.
        **model_kwargs: further constructor arguments (``drop_rate``, ...); ``None`` values are dropped.
    """
    from .utils.runtime import resolve_device

    target = resolve_device(device)  # before any work: an unknown device or missing CUDA is one clear error
    train_config: dict[str, Any] = {}
    if isinstance(name_or_path, nn.Module):
        model, kind, description, source = name_or_path, "instance", "the model passed in", type(name_or_path).__name__
        stored = None
    else:
        resolved = resolve_source(name_or_path)
        source, kind = resolved.name, resolved.kind
        kwargs = dict(num_classes=num_classes, num_frames=num_frames, img_size=img_size, **model_kwargs)
        if kind == "training-checkpoint":
            assert resolved.path is not None
            model, stored, description, train_config = _from_training_checkpoint(resolved.path, **kwargs)
            source = resolved.path
        else:
            if kind == "export":  # timm would read config.json itself and raise a bare JSON/KeyError
                from .models._validation import read_model_config

                read_model_config(os.path.join(resolved.path or "", "config.json"))
            tagged = kind == "variant" and "." in source  # NAME.TAG names a weight set: load it
            model = _create(source, pretrained=pretrained or tagged or kind != "variant", **kwargs)
            stored = None
            if kind == "variant":
                description = f"`{source}`" + (
                    " with its registered weights" if pretrained or tagged else ", randomly initialised"
                )
            else:
                description = f"the weights of `{os.fspath(name_or_path)}`"
    model = model.to(target).eval()
    names = list(labels) if labels is not None else (stored or label_names(model))
    n = int(getattr(model, "num_classes", 0) or 0)
    if n and len(names) != n:
        raise ValueError(f"{len(names)} label names given for a model with {n} classes")
    return LoadedModel(
        model=model,
        data_config=data_config(model),
        labels=[str(x) for x in names],
        kind=kind,
        description=description,
        source=source,
        train_config=train_config,
    )


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a malformed or unreadable one raises ``ValueError`` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{os.fspath(path)}: not valid JSON ({e.msg} at line {e.lineno})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{os.fspath(path)}: not a UTF-8 text file") from e
