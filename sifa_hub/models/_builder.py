"""Build SIFA models for timm and load their pretrained weights through one safe loader.

``timm.create_model("sifa_*", pretrained=True, ...)`` ends here, in :func:`build_sifa_model`. timm's
``build_model_with_cfg`` still resolves the pretrained config, the default model arguments and the
``features_only`` wrapper, but it is called with ``pretrained=False``: the weights are read by
:func:`load_pretrained` below, never by timm's loader (whose ``torch.load`` unpickled arbitrary objects in the
timm releases this package allows). Every source goes through
:func:`sifa_hub.models._validation.load_weights_file`:

* ``pretrained_cfg_overlay=dict(file=...)`` — a ``.safetensors`` file, or a torch file read with
  ``weights_only=True`` (official ``.pth`` releases, 2D ImageNet weights);
* ``pretrained_cfg_overlay=dict(state_dict=...)`` — an in-memory state dict (used as is);
* ``timm.create_model("local-dir:<dir>")`` — ``<dir>/model.safetensors`` (else ``pytorch_model.bin``), after
  ``<dir>/config.json`` is validated;
* ``hf-hub:`` ids and ``hf_hub_id`` cfgs — the same two files downloaded with ``huggingface_hub``;
* ``url`` cfgs — downloaded into torch's hub cache.

The family's ``checkpoint_filter_fn(state_dict, model, source=...)`` then converts the tensors (official key
names, inflation, input channels, classifier fit) and reports every mismatch; the model loads the result strictly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg
from timm.models._features import FeatureGetterNet
from torch import nn

from ._helpers import unwrap_state_dict
from ._validation import load_weights_file, read_model_config

__all__ = ["VideoFeatureGetterNet", "build_sifa_model", "load_pretrained", "read_pretrained_state_dict"]

_logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=nn.Module)
FilterFn = Callable[..., dict[str, torch.Tensor]]

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # preferred first


class VideoFeatureGetterNet(FeatureGetterNet):
    """timm's ``features_only`` wrapper over ``forward_intermediates`` with video maps ``(B, C, T, H, W)``.

    timm's :class:`~timm.models._features.FeatureGetterNet` asks for ``output_fmt="NCHW"`` (image maps); SIFA
    models refuse it, so this wrapper asks for ``"NCTHW"``.
    """

    def __init__(self, model: nn.Module, out_indices: Any = 4, norm: bool = False, prune: bool = True, **kwargs: Any):
        super().__init__(model, out_indices=out_indices, norm=norm, prune=prune, **kwargs)
        self.output_fmt = "NCTHW"  # type: ignore[assignment]


def _weights_in_dir(folder: str) -> str:
    for name in WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{folder}: no weights file in the folder (expected {' or '.join(WEIGHT_FILES)})")


def _from_hf_hub(repo: str, filename: str | None, cache_dir: str | os.PathLike[str] | None) -> str:
    """Local path of the weights of a Hub repository (``org/name`` or ``org/name@revision``)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, _, revision = repo.partition("@")
    cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
    try:
        try:  # validate a SIFA config first (a 2D source's timm config is not ours to check)
            config = hf_hub_download(repo_id, "config.json", revision=revision or None, cache_dir=cache_dir)
            if _is_sifa_config(config):
                read_model_config(config)
        except EntryNotFoundError:
            pass
        names = (filename,) if filename else WEIGHT_FILES
        for name in names:
            try:
                return hf_hub_download(repo_id, name, revision=revision or None, cache_dir=cache_dir)
            except EntryNotFoundError:
                if name == names[-1]:
                    raise
    except RepositoryNotFoundError:
        raise OSError(f"hf-hub:{repo}: repository not found on the Hub (or private without a token)") from None
    except LocalEntryNotFoundError:
        raise OSError(f"hf-hub:{repo}: not in the local Hub cache and the Hub is not reachable (offline?)") from None
    except EntryNotFoundError:
        raise OSError(f"hf-hub:{repo}: the repository has no {' or '.join(names)}") from None
    raise AssertionError("unreachable")


def _is_sifa_config(path: str) -> bool:
    """Whether a downloaded ``config.json`` describes a SIFA model (else, e.g. a 2D timm source, it is skipped)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            arch = json.load(f).get("architecture", "")
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: let read_model_config report it with the path
    return isinstance(arch, str) and arch.startswith(("sifa_", "c2d_"))


def _from_url(url: str, cache_dir: str | os.PathLike[str] | None) -> str:
    folder = os.fspath(cache_dir) if cache_dir else os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, os.path.basename(url.split("?")[0]))
    if not os.path.isfile(path):
        os.makedirs(folder, exist_ok=True)
        torch.hub.download_url_to_file(url, path, progress=False)
    return path


def read_pretrained_state_dict(
    pretrained_cfg: Mapping[str, Any], cache_dir: str | os.PathLike[str] | None = None
) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict a pretrained cfg points at, read safely, and a name of its source for messages.

    Sources in timm's order of priority: ``source="hf-hub"`` / ``"local-dir"`` model ids, then an in-memory
    ``state_dict``, a ``file``, an ``hf_hub_id``, a ``url``.

    Raises:
        RuntimeError: the cfg names no weights.
        FileNotFoundError / ValueError: from :func:`~sifa_hub.models._validation.load_weights_file`.
    """
    source = pretrained_cfg.get("source") or ""
    file = pretrained_cfg.get("file")
    hub_id = pretrained_cfg.get("hf_hub_id")
    if source == "local-dir" and file:
        folder = os.fspath(file)
        if os.path.isfile(os.path.join(folder, "config.json")):
            read_model_config(folder)
        path = _weights_in_dir(folder)
        return load_weights_file(path), path
    if source != "hf-hub":
        state = pretrained_cfg.get("state_dict")
        if state:
            return unwrap_state_dict(state), "the state_dict in pretrained_cfg"
        if file:
            return load_weights_file(file), os.fspath(file)
    if hub_id:
        path = _from_hf_hub(hub_id, pretrained_cfg.get("hf_hub_filename"), cache_dir)
        return load_weights_file(path), f"hf-hub:{hub_id} ({path})"
    if pretrained_cfg.get("url"):
        path = _from_url(pretrained_cfg["url"], cache_dir)
        return load_weights_file(path), path
    name = pretrained_cfg.get("architecture") or "this model"
    raise RuntimeError(
        f"no pretrained weights exist for {name}: pass pretrained_cfg_overlay=dict(file=PATH) (a .safetensors or "
        f".pth file), a 'local-dir:' / 'hf-hub:' model name, or pretrained=False"
    )


def load_pretrained(
    model: nn.Module,
    pretrained_cfg: Mapping[str, Any],
    filter_fn: FilterFn,
    cache_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Load the weights ``pretrained_cfg`` points at into ``model`` (strictly, after ``filter_fn``)."""
    state, source = read_pretrained_state_dict(pretrained_cfg, cache_dir)
    _logger.info("loading pretrained weights from %s", source)
    model.load_state_dict(filter_fn(state, model, source=source), strict=True)


def _check_common_args(variant: str, kwargs: dict[str, Any], feature_cfg: dict[str, Any]) -> None:
    """Refuse ``in_chans`` / ``num_classes`` / ``out_indices`` values that would build a broken model silently."""
    for field, low in (("in_chans", 1), ("num_classes", 0)):
        value = kwargs.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise ValueError(f"{variant}: {field} must be an int >= {low}, got {value!r}")
    out_indices = kwargs.get("out_indices", feature_cfg.get("out_indices"))
    if kwargs.get("features_only") and isinstance(out_indices, (list, tuple)) and not out_indices:
        raise ValueError(f"{variant}: out_indices is empty; give the feature levels to return, e.g. (0, 1)")


def build_sifa_model(
    model_cls: Callable[..., ModelT],
    variant: str,
    pretrained: bool,
    filter_fn: FilterFn,
    feature_cfg: dict[str, Any] | None = None,
    **kwargs: Any,
) -> ModelT:
    """``build_model_with_cfg`` for SIFA models, with the weights loaded by :func:`load_pretrained`.

    Args:
        model_cls: the model class.
        variant: registered variant name.
        pretrained: load the weights the (resolved) pretrained cfg points at.
        filter_fn: the family's ``checkpoint_filter_fn``.
        feature_cfg: ``features_only`` options (``out_indices``); the wrapper is :class:`VideoFeatureGetterNet`.
        kwargs: model arguments, plus timm's ``pretrained_cfg``, ``pretrained_cfg_overlay``, ``features_only``,
            ``out_indices``, ``cache_dir``.
    """
    _check_common_args(variant, kwargs, feature_cfg or {})
    pretrained_cfg = resolve_pretrained_cfg(
        variant,
        pretrained_cfg=kwargs.pop("pretrained_cfg", None),
        pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None),
    ).to_dict()
    cache_dir = kwargs.pop("cache_dir", None)
    kwargs.pop("pretrained_strict", None)  # loading is always strict: filter_fn reports what does not fit

    def construct(**model_kwargs: Any) -> ModelT:
        model = model_cls(**model_kwargs)
        if pretrained:
            load_pretrained(model, pretrained_cfg, filter_fn, cache_dir=cache_dir)
        return model

    return build_model_with_cfg(
        construct,
        variant,
        False,  # timm's loader is never used: `construct` loads the weights before any features wrapper
        pretrained_cfg=pretrained_cfg,
        feature_cfg={"feature_cls": VideoFeatureGetterNet, **(feature_cfg or {})},
        **kwargs,
    )
