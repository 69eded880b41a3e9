"""Training checkpoints: folders of safetensors + JSON under ``<run>/checkpoints/``, written, found and read here.

A checkpoint folder ``step-<N>/`` holds ``model.safetensors``, ``optimizer.safetensors`` (the optimizer's tensors,
flattened), ``trainer_state.json`` (counters, config, class names, the model's architecture, optimizer scalars,
scheduler and loss-scaler state) and one RNG state per rank (``rng-rank<R>.safetensors`` + ``.json``).
``<run>/checkpoints/latest.json`` names the newest one. Folders are written through
:func:`sifa_hub.utils.io.atomic_dir`, so a checkpoint is complete or absent; :func:`latest_checkpoint` still checks
and falls back to the newest complete one when ``latest.json`` names a deleted or damaged folder. No file is ever
unpickled.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .distributed import DistContext, unwrap_model
from .utils.io import atomic_dir, atomic_write_json

__all__ = [
    "CHECKPOINT_FORMAT",
    "flatten_optimizer_state",
    "is_complete_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "model_architecture",
    "read_checkpoint_model",
    "read_trainer_state",
    "save_checkpoint",
    "unflatten_optimizer_state",
]

CHECKPOINT_FORMAT = 1
_STEP_DIR = re.compile(r"step-\d{8}")
_REQUIRED_FILES = ("trainer_state.json", "model.safetensors", "optimizer.safetensors")


def model_architecture(model: nn.Module) -> str:
    """The registered variant a model was built as (``pretrained_cfg['architecture']``), else its class name."""
    cfg = getattr(unwrap_model(model), "pretrained_cfg", None) or {}
    return str(cfg.get("architecture") or type(unwrap_model(model)).__name__)


def is_complete_checkpoint(path: str) -> bool:
    """Whether ``path`` is a checkpoint folder with every file a resume needs."""
    return all(os.path.isfile(os.path.join(path, name)) for name in _REQUIRED_FILES)


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint folder under ``output_dir/checkpoints``, or ``None``.

    ``latest.json`` names it; when that folder was deleted or lacks a file, the newest complete ``step-<N>``
    folder is used instead.
    """
    root = os.path.join(output_dir, "checkpoints")
    pointer = os.path.join(root, "latest.json")
    if os.path.isfile(pointer):
        try:
            with open(pointer, encoding="utf-8") as f:
                name = json.load(f).get("checkpoint")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            name = None
        if isinstance(name, str) and _STEP_DIR.fullmatch(name) and is_complete_checkpoint(os.path.join(root, name)):
            return os.path.join(root, name)
    if not os.path.isdir(root):
        return None
    steps = sorted((d for d in os.listdir(root) if _STEP_DIR.fullmatch(d)), reverse=True)
    return next((os.path.join(root, d) for d in steps if is_complete_checkpoint(os.path.join(root, d))), None)


# ----------------------------------------------------------------------------------------------------------------
# Optimizer and RNG state as tensors + JSON


def flatten_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into flat tensors (``state.<param>.<name>``) and a JSON remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[Any, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, entry in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["cuda"] = torch.cuda.get_rng_state(device)
    np_state: Any = np.random.get_state()  # legacy tuple: (name, keys, pos, has_gauss, cached_gaussian)
    tensors["numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_version, py_internal, py_gauss = random.getstate()
    meta: dict[str, Any] = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_version, list(py_internal), py_gauss],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(tensors["torch"])
    if device.type == "cuda" and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"], device)
    name, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ----------------------------------------------------------------------------------------------------------------
# Save / load


def _cpu_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _write_checkpoint_files(
    folder: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    trainer_state: dict[str, Any],
    rng_states: list[tuple[dict[str, torch.Tensor], dict[str, Any]]],
) -> None:
    from safetensors.torch import save_file

    for rank, (rng_tensors, rng_meta) in enumerate(rng_states):
        save_file(rng_tensors, os.path.join(folder, f"rng-rank{rank}.safetensors"))
        with open(os.path.join(folder, f"rng-rank{rank}.json"), "w", encoding="utf-8") as f:
            json.dump(rng_meta, f)
    save_file(_cpu_tensors(unwrap_model(model).state_dict()), os.path.join(folder, "model.safetensors"))
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer.state_dict())
    save_file(opt_tensors, os.path.join(folder, "optimizer.safetensors"))
    state = dict(
        trainer_state,
        format=CHECKPOINT_FORMAT,
        architecture=model_architecture(model),
        world_size=len(rng_states),
        optimizer=opt_meta,
        scheduler={k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        scaler=scaler.state_dict(),
    )
    with open(os.path.join(folder, "trainer_state.json"), "w", encoding="utf-8") as f:
        json.dump(state, f, indent=2)


def save_checkpoint(
    output_dir: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    trainer_state: dict[str, Any],
    ctx: DistContext,
    keep: int = 2,
) -> str:
    """Write ``checkpoints/step-<N>/`` atomically, point ``checkpoints/latest.json`` at it, keep the ``keep`` newest.

    Collective: every rank must call it. The RNG states of all ranks are gathered to rank 0, which writes the whole
    folder through :func:`~sifa_hub.utils.io.atomic_dir` (folders 0755, files 0644 under umask 022).

    Args:
        output_dir: the run folder.
        model: the model (wrappers are removed); rank 0's state is saved.
        optimizer / scheduler / scaler: their states are saved.
        trainer_state: counters, config, classes, history (``global_step`` names the folder).
        ctx: process placement.
        keep: how many ``step-<N>`` folders to keep.

    Returns:
        The checkpoint folder.
    """
    root = os.path.join(output_dir, "checkpoints")
    name = f"step-{trainer_state['global_step']:08d}"
    final = os.path.join(root, name)
    rng_states = ctx.all_gather(_rng_state(ctx.device))
    if ctx.is_main:
        with atomic_dir(final, replace=lambda p: os.path.isfile(os.path.join(p, "trainer_state.json"))) as tmp:
            _write_checkpoint_files(
                tmp,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                trainer_state=trainer_state,
                rng_states=rng_states,
            )
        atomic_write_json(os.path.join(root, "latest.json"), {"checkpoint": name})
        old = sorted(d for d in os.listdir(root) if _STEP_DIR.fullmatch(d) and d != name)
        for stale in old[: max(len(old) - (keep - 1), 0)]:
            shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
    ctx.barrier()
    return final


def read_trainer_state(path: str) -> dict[str, Any]:
    """``trainer_state.json`` of checkpoint folder ``path``, checked; ``ValueError`` naming the file otherwise."""
    state_file = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state_file):
        raise ValueError(f"{path!r} is not a training checkpoint (no trainer_state.json)")
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{state_file}: not valid JSON ({e})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{state_file}: checkpoint format {found}, expected {CHECKPOINT_FORMAT}")
    for key in ("config", "classes", "global_step", "epoch", "step_in_epoch", "optimizer", "scheduler"):
        if key not in state:
            raise ValueError(f"{state_file}: missing field {key!r}")
    return state


def load_checkpoint(
    path: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    ctx: DistContext,
) -> dict[str, Any]:
    """Restore a :func:`save_checkpoint` folder in place (this rank's RNG too); returns its trainer state."""
    from safetensors.torch import load_file

    state = read_trainer_state(path)
    for name in _REQUIRED_FILES[1:]:
        if not os.path.isfile(os.path.join(path, name)):
            raise ValueError(f"training checkpoint {path!r} has no {name}")
    unwrap_model(model).load_state_dict(load_file(os.path.join(path, "model.safetensors"), device=str(ctx.device)))
    opt_tensors = load_file(os.path.join(path, "optimizer.safetensors"))
    optimizer.load_state_dict(unflatten_optimizer_state(opt_tensors, state["optimizer"]))
    scheduler.load_state_dict(dict(state["scheduler"], lr_lambdas=[None] * len(optimizer.param_groups)))
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rank_file = os.path.join(path, f"rng-rank{ctx.rank}")
    if os.path.isfile(rank_file + ".safetensors"):
        with open(rank_file + ".json", encoding="utf-8") as f:
            _set_rng_state(load_file(rank_file + ".safetensors"), json.load(f), ctx.device)
    return state


def _source_name(cfg: Mapping[str, Any], state: Mapping[str, Any]) -> str:
    """What to rebuild the model from: the run's exported ``--model`` folder when it still exists, else its recorded
    architecture when registered (no download), else the run's ``--model``."""
    import timm

    name = str(cfg["model"])  # a variant name, an exported folder or a Hub id
    if os.path.isdir(name):
        return f"local-dir:{os.path.abspath(name)}"
    arch = state.get("architecture")
    if isinstance(arch, str) and timm.is_model(arch):
        return arch
    if not name.startswith(("local-dir:", "hf-hub:")) and name.count("/") == 1:
        return f"hf-hub:{name}"
    return name


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

    from . import models  # noqa: F401  (registers the variants, so a recorded architecture is found)

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
    kwargs: dict[str, Any] = {"num_classes": len(classes), "num_frames": cfg.get("num_frames")}
    if cfg.get("img_size") is not None:
        kwargs["img_size"] = cfg["img_size"]
    model = create(_source_name(cfg, state), pretrained=False, **kwargs)  # the architecture; weights: the checkpoint's
    model.load_state_dict(load_file(weights))
    description = "trained with `sifa-hub train`" + (f" on `{cfg['data']}`" if cfg.get("data") else "")
    details = [f"checkpoint at optimizer step {state['global_step']}" if "global_step" in state else None]
    details.append(f"seed {cfg['seed']}" if "seed" in cfg else None)
    if any(details):
        description += " (" + ", ".join(d for d in details if d) + ")"
    return model, [str(c) for c in classes], description, dict(cfg)
