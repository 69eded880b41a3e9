"""Export: one folder that timm, transformers and torch.hub load, written atomically and never over foreign files.

:func:`export_model` writes:

* ``model.safetensors`` — the timm state dict (timm parameter names); metadata ``format="pt"``, ``variant``,
  ``sifa_hub_version``;
* ``config.json`` — timm's ``architecture`` / ``num_classes`` / ``num_features`` / ``label_names`` /
  ``pretrained_cfg`` / ``model_args``, merged with the transformers config (``model_type: "sifa"``, ``auto_map``)
  written by :mod:`sifa_hub.hf`;
* ``video_preprocessor_config.json`` and the remote-code files (transformers, ``trust_remote_code=True``);
* ``hubconf.py`` (torch.hub: ``torch.hub.load(DIR, "model", source="local")``);
* ``README.md`` — the model card (:mod:`sifa_hub.publish.card`);
* ``model.onnx`` with ``formats=("safetensors", "onnx")`` (:func:`sifa_hub.deploy.export_onnx`);
* ``.sifa_hub_export.json`` — the manifest: every file written, with its SHA-256.

Safety: the folder is built next to the target and moved into place by :func:`sifa_hub.utils.io.atomic_dir`. An
existing target is replaced only when it is empty or holds exactly the files of a previous export, unchanged (the
manifest says which); anything else (a user's notes, another model, an edited card) makes the export refuse and
leaves every file as it was. Temporaries of killed exports (``.NAME.tmp-*``) are deleted by the next export, and a
previous export interrupted between its two renames is restored first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..loading import load_model, read_json
from ..utils.io import atomic_dir, atomic_path, atomic_write_json, atomic_write_text, remove_stale_temporaries
from .card import (
    build_model_card,
    input_size,
    int_attr,
    load_metrics,
    model_architecture,
    model_complexity,
    validate_card,
)
from .push import check_repo_id
from .source import ExportSource, label_list, load_export_source

__all__ = [
    "EXPORT_FORMATS",
    "MANIFEST_NAME",
    "check_export_target",
    "export_model",
    "owned_export",
    "write_model_card",
]

MANIFEST_NAME = ".sifa_hub_export.json"
EXPORT_FORMATS = ("safetensors", "onnx")
_MANIFEST_FORMAT = 1

_HUBCONF = '''"""torch.hub entry point of an exported SIFA model: ``torch.hub.load(DIR, "model", source="local")``.

Works with or without sifa_hub installed: without it, the SIFA architectures come from this folder's own copy of
the model code (the remote-code files), so torch, timm and safetensors suffice.
"""

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys

dependencies = ["torch", "timm", "safetensors"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def _register_architectures():
    """Register the SIFA architectures with timm: sifa_hub's when installed, else this folder's bundled copy."""
    try:
        installed = importlib.util.find_spec("sifa_hub") is not None
    except (ImportError, ValueError):
        installed = False
    if installed:
        importlib.import_module("sifa_hub.models")
        return
    name = "sifa_export_" + hashlib.sha1(_HERE.encode()).hexdigest()[:12]
    if name not in sys.modules:  # this folder as a package, so the bundled files' relative imports resolve
        package = importlib.util.module_from_spec(importlib.machinery.ModuleSpec(name, None, is_package=True))
        package.__path__ = [_HERE]
        sys.modules[name] = package
    for family in ("sifa_resnet", "sifa_swin"):
        if os.path.isfile(os.path.join(_HERE, family + ".py")):
            importlib.import_module(name + "." + family)


def model(pretrained: bool = True, **kwargs):
    """The model stored in this directory ({variant}), with its weights unless ``pretrained=False``.

    Keyword arguments go to ``timm.create_model`` (e.g. ``num_classes`` re-initialises the classifier).
    """
    import timm

    _register_architectures()
    return timm.create_model("local-dir:" + _HERE, pretrained=pretrained, **kwargs)
'''


# ----------------------------------------------------------------------------------------------------------------
# Ownership: the manifest of what an export wrote


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_bytecode(rel: str) -> bool:
    """Python's own byte-code cache (``torch.hub.load`` of the folder imports ``hubconf.py``): regenerable."""
    parts = rel.split("/")
    return "__pycache__" in parts[:-1] and parts[-1].endswith(".pyc")


def _scan(folder: str) -> tuple[dict[str, str], list[str]]:
    """``({relative path: absolute path} of the regular files, [everything else: symlinks, other dirs])``.

    The manifest and byte-code caches are left out; directories holding a listed file are implied by it.
    """
    files: dict[str, str] = {}
    dirs, other = [], []
    for root, subdirs, names in os.walk(folder):
        rel_root = os.path.relpath(root, folder).replace(os.sep, "/")
        prefix = "" if rel_root == "." else rel_root + "/"
        for d in list(subdirs):
            if os.path.islink(os.path.join(root, d)):
                other.append(prefix + d)
                subdirs.remove(d)
            elif d != "__pycache__":
                dirs.append(prefix + d)
        for n in names:
            rel, full = prefix + n, os.path.join(root, n)
            if rel == MANIFEST_NAME or _is_bytecode(rel):
                continue
            if os.path.islink(full) or not os.path.isfile(full):
                other.append(rel)
            else:
                files[rel] = full
    other += [d for d in dirs if not any(f.startswith(d + "/") for f in files)]
    return files, other


def _write_manifest(folder: str) -> None:
    files, other = _scan(folder)
    if other:
        raise RuntimeError(f"export wrote entries that are not regular files: {other}")
    manifest = {
        "format": _MANIFEST_FORMAT,
        "sifa_hub_version": __version__,
        "files": {rel: _sha256(full) for rel, full in sorted(files.items())},
    }
    atomic_write_json(os.path.join(folder, MANIFEST_NAME), manifest, sort_keys=True)


def _manifest_files(folder: str) -> dict[str, str]:
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise ValueError(
            f"export target {folder!r} is a non-empty directory that is not a model export written by sifa_hub "
            f"(no {MANIFEST_NAME}); not replacing it: export into an empty or new folder"
        )
    manifest = read_json(path)
    files = manifest.get("files") if isinstance(manifest, Mapping) else None
    if not isinstance(files, Mapping) or not all(isinstance(v, str) for v in files.values()):
        raise ValueError(f"{path}: not a sifa_hub export manifest (no 'files' mapping); not replacing {folder!r}")
    return dict(files)


def owned_export(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` may be replaced by an export: it is empty, or holds only files a previous export wrote
    and has not changed since (byte-code caches aside). Raises ``ValueError`` naming the foreign or changed files.
    """
    folder = os.fspath(folder)
    files, other = _scan(folder)
    if not files and not other and not os.path.exists(os.path.join(folder, MANIFEST_NAME)):
        return True
    listed = _manifest_files(folder)
    foreign = sorted([rel for rel in files if rel not in listed] + other)
    changed = sorted(rel for rel, full in files.items() if rel in listed and _sha256(full) != listed[rel])
    if foreign or changed:
        what = [f"files it did not write: {', '.join(foreign)}"] if foreign else []
        what += [f"files changed since the export: {', '.join(changed)}"] if changed else []
        raise ValueError(
            f"export target {folder!r} is not a model export as sifa_hub left it ({'; '.join(what)}); not replacing "
            "it: move those files away or export into an empty or new folder"
        )
    return True


def check_export_target(out_dir: str | os.PathLike[str]) -> str:
    """Fail early (before any model is loaded) when ``out_dir`` could not be replaced; returns its absolute path."""
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise TypeError(f"out_dir must be a path, got {out_dir!r}")
    out = os.path.abspath(os.fspath(out_dir))
    if os.path.islink(out):
        raise ValueError(f"export target {out!r} is a symbolic link; export into a real (new or empty) folder")
    if os.path.lexists(out):
        if not os.path.isdir(out):
            raise ValueError(f"export target {out!r} exists and is not a directory")
        owned_export(out)
        return out
    parent = os.path.dirname(out)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"export target {out!r} cannot be created: {parent!r} is a file, not a directory")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Files


def _video_processor(config: Any, crop_pct: float) -> Any:
    from ..data.pipeline import scale_size
    from ..hf.video_processing_sifa import SifaVideoProcessor

    height, width = config.frame_size
    return SifaVideoProcessor(
        num_frames=config.num_frames,
        size={"shortest_edge": scale_size(min(height, width), crop_pct)},
        crop_size={"height": height, "width": width},
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
    )


def _write_weights(model: nn.Module, folder: str) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "variant": model_architecture(model), "sifa_hub_version": __version__}
    with atomic_path(os.path.join(folder, "model.safetensors")) as tmp:
        save_file(state, tmp, metadata=meta)


def _write_configs(model: nn.Module, folder: str, label_names: list[str] | None) -> None:
    """``config.json`` (timm + transformers), the video processor config and the remote-code files."""
    from ..hf.configuration_sifa import SifaConfig
    from ..hf.remote_code import write_remote_code

    labels = {"id2label": dict(enumerate(label_names))} if label_names is not None else {}
    config = SifaConfig.from_timm_model(model, **labels)
    config.architectures = ["SifaForVideoClassification"]
    config.save_pretrained(folder)
    crop_pct = float((getattr(model, "pretrained_cfg", None) or {}).get("crop_pct", 1.0))
    _video_processor(config, crop_pct).save_pretrained(folder)
    write_remote_code(folder)  # transformers code files + auto_map in config.json and the processor config
    atomic_write_text(os.path.join(folder, "hubconf.py"), _HUBCONF.format(variant=model_architecture(model)))


def _write_onnx(model: nn.Module, folder: str) -> None:
    from ..deploy import export_onnx

    was_training = model.training
    model.eval()
    try:
        export_onnx(
            model,
            os.path.join(folder, "model.onnx"),
            num_frames=int_attr(model, "num_frames"),
            img_size=input_size(model),
            dynamic_batch=True,
        )
    finally:
        model.train(was_training)


def _verify_export(model: nn.Module, folder: str) -> None:
    """Load ``folder`` back (``local-dir:``, as timm does) and compare logits with ``model`` on a random clip."""
    loaded = load_model(f"local-dir:{folder}").model
    gen = torch.Generator().manual_seed(0)
    size = input_size(loaded)
    shape = (1, int_attr(loaded, "in_chans"), int_attr(loaded, "num_frames"), size, size)  # (B, C, T, H, W)
    clip = torch.randn(shape, generator=gen)
    dtype = next(model.parameters()).dtype  # a float64 / float16 model is checked in its own precision
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected, got = model(clip.to(dtype)).float(), loaded(clip).float()
    finally:
        model.train(was_training)
    rtol, atol = (1e-4, 1e-5) if dtype in (torch.float32, torch.float64) else (2e-2, 2e-2)
    if not torch.allclose(expected, got, rtol=rtol, atol=atol):
        raise RuntimeError(
            f"export check failed: timm loads {folder} with logits differing by {(expected - got).abs().max():.3g}"
        )


# ----------------------------------------------------------------------------------------------------------------
# Public API


def _check_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    chosen = (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = [f for f in chosen if f not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {EXPORT_FORMATS}")
    if "safetensors" not in chosen:
        raise ValueError("formats must include 'safetensors': the folder's config, card and loaders are built on it")
    return chosen


def _check_channel_stats(model: nn.Module) -> None:
    """Refuse (with the fix) a model whose ``pretrained_cfg`` mean/std do not have one value per input channel."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    chans = getattr(model, "in_chans", None)
    for key in ("mean", "std"):
        value = cfg.get(key)
        if isinstance(chans, int) and isinstance(value, (list, tuple)) and len(value) != chans:
            raise ValueError(
                f"the model takes {chans}-channel clips but its pretrained_cfg {key!r} has {len(value)} values "
                f"{tuple(value)}: set model.pretrained_cfg[{key!r}] to {chans} value(s) (one per channel) first"
            )


def _prepare(
    model_or_source: nn.Module | str | os.PathLike[str],
    *,
    labels: Sequence[str] | Mapping[int, str] | None,
    metrics: Mapping[str, Any] | str | os.PathLike[str] | None,
    repo_id: str | None,
    **source_args: Any,
) -> tuple[ExportSource, list[str] | None]:
    """Check the arguments shared by :func:`export_model` and :func:`write_model_card`; load the model.

    Returns:
        ``(source, label_names_or_None)``.
    """
    if repo_id is not None:
        check_repo_id(repo_id)
    if metrics is not None:
        load_metrics(metrics)  # fail before any work
    names = label_list(labels)
    src = load_export_source(model_or_source, **source_args)
    _check_channel_stats(src.model)
    num_classes = int_attr(src.model, "num_classes")
    if names is None and src.labels is not None:
        names = src.labels
    elif names is None:  # the pretrained weights' class names name this model's classes only if they fit its head
        stored = label_list((getattr(src.model, "pretrained_cfg", None) or {}).get("label_names"))
        names = stored if stored is not None and len(stored) == num_classes else None
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} labels given for a model with {num_classes} classes")
    if names is not None and len(set(names)) != len(names):
        raise ValueError("labels must be unique")
    return src, names



def _write_export(
    folder: str,
    src: ExportSource,
    label_names: list[str] | None,
    *,
    formats: tuple[str, ...],
    verify: bool,
    card_args: dict[str, Any],
) -> None:
    """Write every file of an export into the empty ``folder``; check the card (and the reload); manifest last."""
    model = src.model
    _write_weights(model, folder)
    _write_configs(model, folder, label_names)
    if "onnx" in formats:
        _write_onnx(model, folder)
    complexity = model_complexity(model, int_attr(model, "num_frames"), input_size(model))
    card = build_model_card(
        model, label_names=label_names, weights_kind=src.kind, complexity=complexity, **card_args
    )
    card.save(os.path.join(folder, "README.md"))
    validate_card(os.path.join(folder, "README.md"))
    if verify:
        _verify_export(model, folder)
    _write_manifest(folder)


def export_model(
    model_or_source: nn.Module | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    num_frames: int | None = None,
    labels: Sequence[str] | Mapping[int, str] | None = None,
    label_names: Sequence[str] | None = None,
    metrics: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    official_checkpoint: str | os.PathLike[str] | None = None,
    imagenet_checkpoint: str | os.PathLike[str] | None = None,
    repo_id: str | None = None,
    license: str = "apache-2.0",
    datasets: Sequence[str] | None = None,
    weights_description: str | None = None,
    verify: bool = True,
    formats: Sequence[str] | str = ("safetensors",),
) -> str:
    """Write ``out_dir``: one directory that timm, transformers and torch.hub load (see the module docstring).

    The folder is built next to ``out_dir`` and moved into place only once complete (and, with ``verify``, loaded
    back with identical logits); on any error nothing is left behind and a previous export stays as it was. An
    existing ``out_dir`` is replaced only if it is empty or an unchanged previous export (``ValueError`` otherwise).

    Args:
        model_or_source: a timm-created SIFA model; a ``sifa-hub train`` output directory (its newest checkpoint)
            or checkpoint directory; an exported directory or Hub id; or an architecture name (e.g.
            ``"sifa_resnet50"``) together with ``official_checkpoint`` or ``imagenet_checkpoint``.
        out_dir: the directory to write.
        num_classes: classifier size for a name / directory source (default: the source's).
        num_frames: clip length ``T`` for a name / directory source (default: the variant's).
        labels: class names, index order (or ``{index: name}``); default: those stored with the source.
        label_names: alias of ``labels`` (timm's term).
        metrics: measured results for the card (dict or JSON file, see :func:`~sifa_hub.publish.load_metrics`).
        official_checkpoint: an official SIFA ``.pth`` (converted by the family's ``checkpoint_filter_fn``).
        imagenet_checkpoint: 2D ImageNet weights to inflate.
        repo_id: the Hub repo the card's usage snippets name (``ORG/NAME`` placeholder if ``None``).
        license: license id for the card.
        datasets: Hub dataset ids for the card's metadata.
        weights_description: one line on how the weights were obtained, for the card (default: names the source).
        verify: reload the export and compare logits before committing it.
        formats: ``("safetensors",)``, or ``("safetensors", "onnx")`` to add ``model.onnx`` (dynamic batch).

    Returns:
        The absolute path of ``out_dir``.
    """
    if labels is not None and label_names is not None:
        raise ValueError("give labels or label_names, not both")
    chosen = _check_formats(formats)
    out = check_export_target(out_dir)
    src, names = _prepare(
        model_or_source,
        labels=labels if labels is not None else label_names,
        metrics=metrics,
        repo_id=repo_id,
        num_classes=num_classes,
        num_frames=num_frames,
        official_checkpoint=official_checkpoint,
        imagenet_checkpoint=imagenet_checkpoint,
    )
    try:
        with atomic_dir(out, replace=owned_export) as tmp:
            _write_export(
                tmp,
                src,
                names,
                formats=chosen,
                verify=verify,
                card_args=dict(
                    repo_id=repo_id,
                    metrics=metrics,
                    license=license,
                    datasets=datasets,
                    weights_description=weights_description or src.description,
                ),
            )
    except BaseException:
        remove_stale_temporaries(out)  # a failure between the two renames: the previous export goes back
        raise
    return out


def write_model_card(
    model_or_source: nn.Module | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    repo_id: str,
    num_classes: int | None = None,
    num_frames: int | None = None,
    labels: Sequence[str] | Mapping[int, str] | None = None,
    metrics: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    official_checkpoint: str | os.PathLike[str] | None = None,
    imagenet_checkpoint: str | os.PathLike[str] | None = None,
    license: str = "apache-2.0",
    datasets: Sequence[str] | None = None,
    weights_description: str | None = None,
) -> str:
    """Write only the model card :func:`export_model` would write for the same arguments (``model_cards/``).

    The card is validated (:func:`~sifa_hub.publish.validate_card`) before it atomically replaces ``path``.
    Arguments as in :func:`export_model`; ``repo_id`` is required because the card's snippets load that repo.

    Returns:
        The absolute path of the card.
    """
    out = os.path.abspath(os.fspath(path))
    src, names = _prepare(
        model_or_source,
        labels=labels,
        metrics=metrics,
        repo_id=repo_id,
        num_classes=num_classes,
        num_frames=num_frames,
        official_checkpoint=official_checkpoint,
        imagenet_checkpoint=imagenet_checkpoint,
    )
    card = build_model_card(
        src.model,
        repo_id=repo_id,
        label_names=names,
        metrics=metrics,
        weights_kind=src.kind,
        weights_description=weights_description or src.description,
        license=license,
        datasets=datasets,
    )
    remove_stale_temporaries(out)
    with atomic_path(out) as tmp:
        card.save(tmp)
        validate_card(tmp)
    return out
