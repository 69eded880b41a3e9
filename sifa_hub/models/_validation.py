"""Validation of what users hand to the models: weight files, exported ``config.json`` files, input clips.

Every checkpoint the package opens goes through :func:`load_weights_file`: safetensors, or a torch file read with
``torch.load(weights_only=True)`` (no Python object is ever unpickled). Problems come back as one
``ValueError`` that starts with the file's path and says what is wrong, instead of a library's raw error.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import torch

from ._helpers import unwrap_state_dict

__all__ = ["check_clip", "load_weights_file", "read_model_config", "validate_model_config"]

_ZIP_MAGIC = b"PK\x03\x04"


def _looks_like_safetensors(path: str) -> bool:
    """safetensors files start with a little-endian u64 header length followed by a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and head[:4] != _ZIP_MAGIC


def _load_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path}: not a valid checkpoint (safetensors: {e})") from None


def _looks_like_torch(path: str) -> bool:
    """torch files are zip archives (``torch.save``) or legacy pickles (protocol 2+ starts with ``0x80``)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == _ZIP_MAGIC or head[:1] == b"\x80"


def _load_torch(path: str) -> Any:
    if not _looks_like_torch(path):
        raise ValueError(f"{path}: not a valid checkpoint (neither a safetensors file nor a torch.save file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path}: not a valid checkpoint (it holds Python objects that the safe loader refuses to unpickle, "
            f"weights_only=True: {first}); convert it to .safetensors from a trusted environment"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}: not a valid checkpoint (torch file: {type(e).__name__}: {e})") from None


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` or torch (``.pth``/``.pt``/``.bin``) file, safely.

    torch files are read with ``weights_only=True``: a pickle that would build Python objects (a payload) is
    refused. ``{"state_dict": ...}`` / ``{"model": ...}`` containers and a ``module.`` prefix are unwrapped.

    Args:
        path: the file.

    Returns:
        ``{name: tensor}`` on the CPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``"<path>: not a valid checkpoint (...)"`` for an empty, truncated, corrupt or unsafe file, one
            that holds no tensors, or one with NaN/Inf weights.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        kind = "a directory, not a checkpoint file" if os.path.isdir(path) else "checkpoint file not found"
        raise FileNotFoundError(f"{path}: {kind}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: not a valid checkpoint (the file is empty)")
    if path.endswith(".safetensors") or _looks_like_safetensors(path):
        return _check_finite(_load_safetensors(path), path)
    checkpoint = _load_torch(path)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path}: not a valid checkpoint (it holds a {type(checkpoint).__name__}, not a state dict)")
    state = unwrap_state_dict(checkpoint)
    if not state:
        raise ValueError(f"{path}: not a valid checkpoint (no tensors in it)")
    return _check_finite(state, path)


def _check_finite(state: Mapping[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """Refuse weights with NaN/Inf values: the model would predict NaN for every clip."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: not a valid checkpoint (tensor {name!r} holds NaN/Inf values)")
    return dict(state)


# ---------------------------------------------------------------------------------------------------------------
# exported config.json
# ---------------------------------------------------------------------------------------------------------------


def read_model_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate an exported ``config.json`` (a file, or the folder that holds it).

    Returns:
        The config, checked by :func:`validate_model_config`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``"<path>: ..."`` for malformed JSON, a non-object, or an invalid field.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text JSON file ({e})") from None
    if not text.strip():
        raise ValueError(f"{path}: the file is empty (expected a JSON object)")
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return validate_model_config(cfg, path)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: Any, field: str, source: str) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{source}: {field} must be a positive int, got {value!r}")
    return int(value)


def _check_size(value: Any, field: str, source: str) -> None:
    sizes = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(sizes) not in (1, 2) or not all(_is_int(s) and s > 0 for s in sizes):
        raise ValueError(f"{source}: {field} must be a positive int or [H, W] of positive ints, got {value!r}")


def _check_stats(cfg: Mapping[str, Any], field: str, source: str, channels: int | None, std: bool) -> None:
    value = cfg.get(field)
    if value is None:
        return
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    if not ok or (channels is not None and len(value) != channels):
        want = f"{channels} finite numbers" if channels is not None else "a list of finite numbers"
        raise ValueError(f"{source}: {field} must be {want} (one per channel), got {value!r}")
    if std and any(v <= 0 for v in value):
        raise ValueError(f"{source}: {field} must be positive (it divides the pixels), got {list(value)}")


def _sifa_architectures() -> list[str]:
    import timm

    return sorted(timm.list_models(["sifa_*", "c2d_*"]))


def _check_architecture(cfg: Mapping[str, Any], source: str) -> str:
    arch = cfg.get("architecture")
    if arch is None:
        raise ValueError(f"{source}: missing field 'architecture' (the timm variant name, e.g. 'sifa_resnet50')")
    known = _sifa_architectures()
    if not isinstance(arch, str) or arch.split(".")[0] not in known:
        raise ValueError(f"{source}: unknown architecture {arch!r}; SIFA architectures: {', '.join(known)}")
    return arch.split(".")[0]


def _build_meta(arch: str, model_args: Mapping[str, Any], source: str) -> torch.nn.Module:
    """The architecture built on the meta device (no memory): checks ``model_args`` and gives the defaults."""
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(arch, pretrained=False, **model_args)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: model_args {dict(model_args)} do not build {arch}: {e}") from None


def _check_frames(cfg: Mapping[str, Any], model_args: Mapping[str, Any], early_stride: int, source: str) -> None:
    for field in ("num_frames", "model_args.num_frames"):
        value = model_args.get("num_frames") if field.startswith("model_args") else cfg.get("num_frames")
        if value is None:
            continue
        if not _is_int(value) or value <= 0 or value % early_stride:
            raise ValueError(
                f"{source}: {field} must be a positive int multiple of early_stride ({early_stride}), got {value!r}"
            )


def _check_labels(cfg: Mapping[str, Any], num_classes: int, source: str) -> None:
    for field in ("label_names", "id2label"):
        labels = cfg.get(field)
        if labels is None and field == "label_names":
            labels = (cfg.get("pretrained_cfg") or {}).get("label_names")
        if labels is None:
            continue
        if not isinstance(labels, (list, tuple, dict)):
            raise ValueError(f"{source}: {field} must be a list of class names, got {type(labels).__name__}")
        if len(labels) != num_classes:
            raise ValueError(f"{source}: {field} has {len(labels)} names but num_classes is {num_classes}")


def validate_model_config(cfg: Any, source: str) -> dict[str, Any]:
    """Check an exported model config (``config.json`` of ``sifa-hub export`` / ``save_pretrained``).

    Checks: ``architecture`` present and a registered SIFA variant; ``model_args`` build it; ``num_frames``
    (top level and in ``model_args``) a positive int multiple of the variant's early stride; ``num_classes`` a
    non-negative int; ``image_size`` positive; ``image_mean`` / ``image_std`` (and ``pretrained_cfg``'s
    ``mean`` / ``std``) one finite number per channel, std positive; ``label_names`` / ``id2label`` of
    ``num_classes`` names.

    Args:
        cfg: the parsed JSON.
        source: how to name the file in errors, e.g. ``"<dir>/config.json"``.

    Returns:
        ``cfg`` (a shallow copy), unchanged.

    Raises:
        ValueError: ``"<source>: <field> ..."`` for the first invalid field.
    """
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
    arch = _check_architecture(cfg, source)
    model_args = cfg.get("model_args") or {}
    if not isinstance(model_args, Mapping):
        raise ValueError(f"{source}: model_args must be an object, got {type(model_args).__name__}")
    for field in ("num_frames", "early_stride", "in_chans", "num_classes"):
        if field in model_args and not _is_int(model_args[field]):
            raise ValueError(f"{source}: model_args.{field} must be an int, got {model_args[field]!r}")
    if "early_stride" in model_args:
        _positive_int(model_args["early_stride"], "model_args.early_stride", source)
    if "num_frames" in model_args:
        _positive_int(model_args["num_frames"], "model_args.num_frames", source)
    if "early_stride" in model_args:  # before building: the constructor's own error would not name the field
        _check_frames(cfg, model_args, model_args["early_stride"], source)
    model = _build_meta(arch, model_args, source)
    _check_frames(cfg, model_args, int(getattr(model, "early_stride", 1)), source)
    num_classes = cfg.get("num_classes", model_args.get("num_classes", getattr(model, "num_classes", 0)))
    if not _is_int(num_classes) or num_classes < 0:
        raise ValueError(f"{source}: num_classes must be a non-negative int, got {num_classes!r}")
    for field in ("image_size", "img_size"):
        if field in cfg:
            _check_size(cfg[field], field, source)
    if "img_size" in model_args:
        _check_size(model_args["img_size"], "model_args.img_size", source)
    channels = model_args.get("in_chans", cfg.get("num_channels", getattr(model, "in_chans", None)))
    pretrained_cfg = cfg.get("pretrained_cfg") or {}
    for where, fields in ((cfg, ("image_mean", "image_std")), (pretrained_cfg, ("mean", "std"))):
        for field in fields:
            name = field if where is cfg else f"pretrained_cfg.{field}"
            _check_stats({name: where.get(field)}, name, source, channels, std=field.endswith("std"))
    _check_labels(cfg, num_classes, source)
    return dict(cfg)


# ---------------------------------------------------------------------------------------------------------------
# input clips
# ---------------------------------------------------------------------------------------------------------------


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()


def check_clip(x: Any, model: torch.nn.Module, weight: torch.Tensor) -> None:
    """Refuse a clip whose type, dtype or values a SIFA model cannot take, with a message that says what to do.

    Args:
        x: the model's input, expected a floating ``(B, C, T, H, W)`` tensor.
        model: the model (named in messages).
        weight: a parameter of the model (its dtype is what ``x`` must have).

    Raises:
        TypeError: not a tensor, or an integer / bool tensor (decoded ``uint8`` frames).
        ValueError: a float dtype other than the weights' (outside autocast), or NaN/Inf values (not checked
            while ``torch.compile`` / ``torch.export`` trace the model).
    """
    name = type(model).__name__
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor clip (B, C, T, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} got a {x.dtype} clip: convert it to float and normalise it first, e.g. "
            f"((x.float() / 255) - mean) / std with the model's pretrained_cfg mean/std (or use the video processor)"
        )
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"{name} got a {x.dtype} clip but its weights are {weight.dtype}: pass x.to({weight.dtype}) "
            f"or convert the model with model.to({x.dtype})"
        )
    if _tracing() or x.device.type == "meta":
        return  # a data-dependent check would break the graph (torch.compile / torch.export / jit tracing)
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError("input clip contains NaN/Inf")
