"""Training checkpoints: folders of safetensors + JSON under ``<run>/checkpoints/``, found and read here.

A checkpoint folder holds ``model.safetensors``, ``optimizer.safetensors``, ``trainer_state.json`` (counters,
config, class names) and per-rank RNG states; ``<run>/checkpoints/latest.json`` names the newest one. No file is
ever unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

__all__ = ["latest_checkpoint", "read_checkpoint_model"]


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint directory under ``output_dir/checkpoints``, or ``None``."""
    pointer = os.path.join(output_dir, "checkpoints", "latest.json")
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        name = json.load(f)["checkpoint"]
    path = os.path.join(output_dir, "checkpoints", name)
    return path if os.path.isdir(path) else None


def read_checkpoint_model(
    path: str,
    *,
    create: Callable[..., nn.Module],
    num_classes: int | None = None,
    num_frames: int | None = None,
    **_: Any,
) -> tuple[nn.Module, list[str], str, dict[str, Any]]:
    """Rebuild the model of checkpoint folder ``path`` and load its weights.

    Args:
        path: a checkpoint folder (``trainer_state.json`` + ``model.safetensors``).
        create: ``timm.create_model``-like builder (``None`` kwargs dropped).
        num_classes / num_frames: must equal the checkpoint's when given.

    Returns:
        ``(model, class_names, description, train_config)``.
    """
    from safetensors.torch import load_file

    with open(os.path.join(path, "trainer_state.json"), encoding="utf-8") as f:
        state = json.load(f)
    cfg, classes = state.get("config"), state.get("classes")
    if not isinstance(cfg, Mapping) or not isinstance(cfg.get("model"), str) or not isinstance(classes, list):
        raise ValueError(f"training checkpoint {path!r}: trainer_state.json lacks config.model or classes")
    if num_classes is not None and num_classes != len(classes):
        raise ValueError(f"training checkpoint {path!r} has {len(classes)} classes, num_classes={num_classes} given")
    if num_frames is not None and num_frames != cfg.get("num_frames"):
        raise ValueError(f"training checkpoint {path!r} was trained with num_frames={cfg.get('num_frames')}")
    weights = os.path.join(path, "model.safetensors")
    if not os.path.isfile(weights):
        raise ValueError(f"training checkpoint {path!r} has no model.safetensors")
    name = cfg["model"]  # what the run started from: a variant name, an exported folder or a Hub id
    if os.path.isdir(name):
        name = f"local-dir:{os.path.abspath(name)}"
    elif not name.startswith(("local-dir:", "hf-hub:")) and name.count("/") == 1:
        name = f"hf-hub:{name}"
    kwargs: dict[str, Any] = {"num_classes": len(classes), "num_frames": cfg.get("num_frames")}
    if cfg.get("img_size") is not None:
        kwargs["img_size"] = cfg["img_size"]
    model = create(name, pretrained=False, **kwargs)  # the architecture only; the weights are the checkpoint's
    model.load_state_dict(load_file(weights))
    description = "trained with `sifa-hub train`" + (f" on `{cfg['data']}`" if cfg.get("data") else "")
    details = [f"checkpoint at optimizer step {state['global_step']}" if "global_step" in state else None]
    details.append(f"seed {cfg['seed']}" if "seed" in cfg else None)
    if any(details):
        description += " (" + ", ".join(d for d in details if d) + ")"
    return model, [str(c) for c in classes], description, dict(cfg)
