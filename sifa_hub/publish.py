"""Publishing SIFA checkpoints: one directory for timm, transformers and torch.hub, its model card, and the push.

:func:`export_model` writes, atomically, a directory that all three libraries load:

* ``model.safetensors`` — the timm state dict (timm parameter names); metadata ``format="pt"``, ``variant``,
  ``sifa_hub_version``;
* ``config.json`` — timm's ``architecture`` / ``num_classes`` / ``num_features`` / ``label_names`` /
  ``pretrained_cfg`` (only :class:`timm.models.PretrainedCfg` fields: timm rejects unknown keys there) /
  ``model_args`` (``num_frames`` and the other constructor arguments, which is where the video fields live),
  merged with the transformers config (``model_type: "sifa"``, ``auto_map``) written by :mod:`sifa_hub.hf`;
* the video processor config and the remote-code files (transformers);
* ``hubconf.py`` (torch.hub: ``torch.hub.load(DIR, "model", source="local")``);
* ``README.md`` — the model card rendered from ``sifa_hub/templates/modelcard_template.md`` through
  :meth:`huggingface_hub.ModelCard.from_template`.

:func:`validate_card` checks a card offline; :func:`push_to_hub` checks a directory and uploads it as one commit.
:func:`add_export_parser` / :func:`add_push_parser` register ``sifa-hub export`` / ``sifa-hub push``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__

__all__ = [
    "CARD_TAGS",
    "PAPER_RESULT",
    "REQUIRED_FILES",
    "add_export_parser",
    "add_push_parser",
    "build_model_card",
    "export_model",
    "load_metrics",
    "model_complexity",
    "push_to_hub",
    "validate_card",
    "write_model_card",
]

REQUIRED_FILES = ("model.safetensors", "config.json", "README.md")
CARD_TAGS = ("timm", "transformers", "sifa_hub", "video-classification")
REPO_ID_PLACEHOLDER = "ORG/NAME"
PAPER_URL = "https://arxiv.org/abs/2206.06931"
# The one paper number this project cites (the abstract of Long et al., CVPR 2022). It is never reported as
# measured; it enters a card's model-index only for the official SIFA-Transformer Swin-B weights, with its source.
PAPER_RESULT: dict[str, Any] = {
    "architecture": "sifa_swin_base_patch4_window7_224",
    "task_type": "video-classification",
    "dataset_name": "Kinetics-400",
    "dataset_type": "kinetics-400",
    "metric_type": "accuracy",
    "metric_name": "top-1 accuracy (%)",
    "metric_value": 83.1,
    "source_name": "Long et al., CVPR 2022 (abstract), reported by the authors",
    "source_url": PAPER_URL,
}
_WEIGHT_KINDS = ("instance", "training-checkpoint", "export", "official", "imagenet-inflated")

_HUBCONF = '''"""torch.hub entry point of an exported SIFA model: ``torch.hub.load(DIR, "model", source="local")``."""

import os

dependencies = ["torch", "timm", "sifa_hub"]


def model(pretrained: bool = True, **kwargs):
    """The model stored in this directory ({variant}), with its weights unless ``pretrained=False``.

    Keyword arguments go to ``timm.create_model`` (e.g. ``num_classes`` re-initialises the classifier).
    """
    import timm

    import sifa_hub  # noqa: F401  (registers the SIFA architectures with timm)

    here = os.path.dirname(os.path.abspath(__file__))
    return timm.create_model("local-dir:" + here, pretrained=pretrained, **kwargs)
'''


# ----------------------------------------------------------------------------------------------------------------
# Model sources


def _create(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` for an architecture name or a ``local-dir:`` / ``hf-hub:`` source (``None`` dropped)."""
    import timm

    from . import models  # noqa: F401  (registers the SIFA architectures)

    if not name.startswith(("local-dir:", "hf-hub:")) and not timm.is_model(name):
        sifa = ", ".join(n for n in timm.list_models() if n.startswith(("sifa_", "c2d_")))
        raise ValueError(f"unknown model architecture {name!r}; SIFA architectures: {sifa}")
    return timm.create_model(name, **{k: v for k, v in kwargs.items() if v is not None})


def _load_source(
    model_or_source: nn.Module | str | os.PathLike[str],
    *,
    num_classes: int | None,
    num_frames: int | None,
    official_checkpoint: str | os.PathLike[str] | None,
    imagenet_checkpoint: str | os.PathLike[str] | None,
) -> tuple[nn.Module, str, str, list[str] | None]:
    """Build the model to export.

    Returns:
        ``(model, weights_kind, weights_description, label_names_or_None)``; ``weights_kind`` is one of
        ``"instance"``, ``"training-checkpoint"``, ``"export"``, ``"official"``, ``"imagenet-inflated"``.
    """
    if official_checkpoint is not None and imagenet_checkpoint is not None:
        raise ValueError("give official_checkpoint or imagenet_checkpoint, not both")
    weights_file = official_checkpoint if official_checkpoint is not None else imagenet_checkpoint
    if isinstance(model_or_source, nn.Module):
        if weights_file is not None:
            raise ValueError("official_checkpoint / imagenet_checkpoint need an architecture name, not a model")
        if num_classes is not None or num_frames is not None:
            raise ValueError("num_classes / num_frames cannot change a model instance; build it with them instead")
        model = model_or_source
        if any(t.device.type != "cpu" for t in model.state_dict().values()):
            model = copy.deepcopy(model).to("cpu")  # exports, statistics and checks run on the CPU
        return model, "instance", "the weights of the model passed to `export_model`", None
    if not isinstance(model_or_source, (str, os.PathLike)):
        raise TypeError(
            f"model_or_source must be an nn.Module, a directory or an architecture name, got {type(model_or_source)}"
        )
    source = os.fspath(model_or_source)

    if weights_file is not None:
        # `source` is the architecture; the family's checkpoint_filter_fn converts the file (loaded weights_only).
        path = os.fspath(weights_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        overlay: dict[str, Any] = {"file": os.path.abspath(path)}
        if official_checkpoint is not None and num_classes is not None:
            overlay["num_classes"] = num_classes  # the family's filter keeps or drops the head, timm must not strip it
        model = _create(
            source,
            pretrained=True,
            pretrained_cfg_overlay=overlay,
            num_classes=num_classes,
            num_frames=num_frames,
        )
        if official_checkpoint is not None:
            return model, "official", f"official SIFA release weights, converted from `{os.path.basename(path)}`", None
        return (
            model,
            "imagenet-inflated",
            f"ImageNet 2D weights from `{os.path.basename(path)}` inflated to 3D: an initialisation, not trained on "
            "video",
            None,
        )

    if os.path.isdir(source):
        latest = os.path.join(source, "checkpoints", "latest.json")
        if os.path.isfile(latest) and not os.path.isfile(os.path.join(source, "config.json")):
            # a `sifa-hub train` output folder: its newest checkpoint
            with open(latest, encoding="utf-8") as f:
                source = os.path.join(source, "checkpoints", json.load(f)["checkpoint"])
        if os.path.isfile(os.path.join(source, "trainer_state.json")):
            return _from_training_checkpoint(source, num_classes=num_classes, num_frames=num_frames)
        if os.path.isfile(os.path.join(source, "config.json")):
            model = _create(
                f"local-dir:{os.path.abspath(source)}", pretrained=True, num_classes=num_classes, num_frames=num_frames
            )
            labels = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
            name = os.path.basename(os.path.abspath(source))
            return model, "export", f"the weights of the exported model `{name}`", _label_list(labels)
        raise ValueError(
            f"{source!r} is neither a training checkpoint (trainer_state.json) nor an exported model (config.json)"
        )
    if os.path.exists(source):
        raise ValueError(
            f"{source!r} is a file: pass an architecture name with official_checkpoint=/imagenet_checkpoint="
        )
    raise ValueError(
        f"{source!r} gives no weights: pass a model instance, a training checkpoint or exported directory, or an "
        "architecture name with official_checkpoint= (official SIFA .pth) or imagenet_checkpoint= (2D weights)"
    )


def _from_training_checkpoint(
    path: str, *, num_classes: int | None, num_frames: int | None
) -> tuple[nn.Module, str, str, list[str] | None]:
    """Rebuild the model of a :func:`sifa_hub.train.save_checkpoint` directory and load its weights."""
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
    name = cfg["model"]  # what the run started from: a timm name, an exported directory or a Hub id
    if os.path.isdir(name):
        name = f"local-dir:{os.path.abspath(name)}"
    elif not name.startswith(("local-dir:", "hf-hub:")) and name.count("/") == 1:
        name = f"hf-hub:{name}"
    kwargs: dict[str, Any] = {"num_classes": len(classes), "num_frames": cfg.get("num_frames")}
    if cfg.get("img_size") is not None:
        kwargs["img_size"] = cfg["img_size"]
    model = _create(name, pretrained=False, **kwargs)  # the architecture only; the weights are the checkpoint's
    model.load_state_dict(load_file(weights))
    description = "trained with `sifa-hub train`" + (f" on `{cfg['data']}`" if cfg.get("data") else "")
    details = [f"checkpoint at optimizer step {state['global_step']}" if "global_step" in state else None]
    details.append(f"seed {cfg['seed']}" if "seed" in cfg else None)
    if any(details):
        description += " (" + ", ".join(d for d in details if d) + ")"
    return model, "training-checkpoint", description, classes


def _label_list(labels: Any) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, Mapping):
        return [str(labels[k]) for k in sorted(labels, key=int)]
    if isinstance(labels, (list, tuple)):
        return [str(x) for x in labels]
    raise TypeError(f"labels must be a list of class names or an {{index: name}} mapping, got {type(labels)}")


# ----------------------------------------------------------------------------------------------------------------
# Configuration, statistics, metrics


def _int_attr(model: nn.Module, name: str) -> int:
    """An integer attribute every SIFA model has (``num_frames``, ``num_classes``, ``num_features``)."""
    value = getattr(model, name, None)
    if not isinstance(value, int):
        raise ValueError(f"{type(model).__name__} has no integer {name!r}: is it a SIFA model created with timm?")
    return value


def _architecture(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    if not isinstance(arch, str):
        raise ValueError(f"{type(model).__name__} has no pretrained_cfg['architecture']: create it with timm")
    return arch


def model_complexity(model: nn.Module, num_frames: int, img_size: int) -> tuple[int, float | None]:
    """Parameter count and GMACs of one forward on a ``(1, 3, num_frames, img_size, img_size)`` clip.

    MACs are half the FLOPs of :func:`sifa_hub.bench.count_flops`: ``FlopCounterMode`` for convolutions and
    matmuls plus the SIFA operator counted analytically. GMACs are ``None`` (with a warning) if the counted forward
    fails.
    """
    from .bench import count_flops

    params = sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    try:
        gmacs: float | None = count_flops(model, torch.zeros(1, 3, num_frames, img_size, img_size))[0] / 2e9
    except Exception as e:  # an op without a FLOP formula must not block an export
        warnings.warn(f"could not count MACs of {type(model).__name__}: {e}", stacklevel=2)
        gmacs = None
    finally:
        model.train(was_training)
    return params, gmacs


def load_metrics(metrics: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """Normalise measured metrics: a dict or a JSON file in one of these forms.

    * ``sifa_hub.train.evaluate`` output: ``{"top1": 97.5, "top5": 100.0, "num_samples": 400, ...}`` (percent);
    * ``sifa-hub train``'s ``metrics.json``: ``{"final": {...as above}, "config": {"data": ...}, ...}``;
    * either, with ``"dataset": {"name": ..., "type": ..., "split": ...}`` describing the evaluation set.

    Returns:
        ``{"top1", "top5" (or None), "num_samples" (or None), "dataset" (dict or None)}``.
    """
    if isinstance(metrics, (str, os.PathLike)):
        with open(metrics, encoding="utf-8") as f:
            metrics = json.load(f)
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping or a JSON file holding one, got {type(metrics).__name__}")
    dataset = metrics.get("dataset")
    final = metrics.get("final", metrics)
    if not isinstance(final, Mapping) or not isinstance(final.get("top1"), (int, float)):
        raise ValueError("metrics need a numeric 'top1' (percent), at the top level or under 'final'")
    config = metrics.get("config")
    if dataset is None and isinstance(config, Mapping) and config.get("data") == "motion":
        dataset = {"name": "sifa_hub synthetic motion clips", "type": "sifa_hub-motion", "split": "validation"}
    if dataset is not None and not (
        isinstance(dataset, Mapping) and isinstance(dataset.get("name"), str) and isinstance(dataset.get("type"), str)
    ):
        raise ValueError(f"metrics 'dataset' needs string 'name' and 'type', got {dataset!r}")
    top1, top5 = float(final["top1"]), final.get("top5")
    for name, value in (("top1", top1), ("top5", top5)):
        if value is not None and not 0.0 <= float(value) <= 100.0:
            raise ValueError(f"metrics {name}={value} is not a percentage in [0, 100]")
    return {
        "top1": top1,
        "top5": None if top5 is None else float(top5),
        "num_samples": final.get("num_samples"),
        "dataset": None if dataset is None else dict(dataset),
    }


# ----------------------------------------------------------------------------------------------------------------
# Model card


def _family(arch: str) -> str:
    if "swin" in arch:
        base = (
            "SIFA-Transformer: Swin Transformer with SIFA blocks" if arch.startswith("sifa_") else "C2D Swin baseline"
        )
    else:
        base = "SIFA-Net: C2D ResNet with SIFA bottlenecks" if arch.startswith("sifa_") else "C2D ResNet baseline"
    return base + " (Long et al., CVPR 2022)"


def build_model_card(
    model: nn.Module,
    *,
    repo_id: str | None = None,
    label_names: Sequence[str] | None = None,
    metrics: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    weights_kind: str = "instance",
    weights_description: str = "",
    license: str = "apache-2.0",
    datasets: Sequence[str] | None = None,
    complexity: tuple[int, float | None] | None = None,
) -> Any:
    """Render the model card (a :class:`huggingface_hub.ModelCard`) of ``model``.

    Args:
        model: the timm-created SIFA model.
        repo_id: Hub repo the usage snippets load (``ORG/NAME`` placeholder when ``None``).
        label_names: class names (a preview goes into the input table).
        metrics: measured results, see :func:`load_metrics`; they become the card's ``model-index`` when their
            evaluation set is described, and a table in the body.
        weights_kind: where the weights come from (one of ``instance``, ``training-checkpoint``, ``export``,
            ``official``, ``imagenet-inflated``); the paper's number enters the model-index only for ``official``
            Swin-B weights.
        weights_description: one line on the weights' origin.
        license: SPDX-style license id.
        datasets: Hub dataset ids the model was trained on (metadata ``datasets``).
        complexity: ``(params, gmacs)`` if already computed (see :func:`model_complexity`).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    if weights_kind not in _WEIGHT_KINDS:
        raise ValueError(f"weights_kind must be one of {_WEIGHT_KINDS}, got {weights_kind!r}")
    arch = _architecture(model)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    num_frames, early_stride = _int_attr(model, "num_frames"), int(getattr(model, "early_stride", 1))
    img_size = int(cfg.get("input_size", (3, 224, 224))[-1])
    params, gmacs = complexity if complexity is not None else model_complexity(model, num_frames, img_size)
    measured = load_metrics(metrics) if metrics is not None else None
    model_name = (repo_id or arch).split("/")[-1]

    eval_results, rows = [], []
    if measured is not None:
        ds = measured["dataset"] or {}
        split = ds.get("split", "validation")
        samples = measured["num_samples"] if measured["num_samples"] is not None else "—"
        for key, label in (("top1", "top-1 accuracy (%)"), ("top5", "top-5 accuracy (%)")):
            if measured[key] is None:
                continue
            value = round(measured[key], 2)
            rows.append(
                {
                    "dataset": ds.get("name", "evaluation set not described"),
                    "split": split,
                    "metric": label,
                    "value": f"{value:.2f}",
                    "samples": samples,
                }
            )
            if ds:
                eval_results.append(
                    EvalResult(
                        task_type="video-classification",
                        task_name="Video Classification",
                        dataset_type=ds["type"],
                        dataset_name=ds["name"],
                        dataset_split=split,
                        metric_type="accuracy" if key == "top1" else "top-5-accuracy",
                        metric_name=label,
                        metric_value=value,
                    )
                )
    paper_applies = arch == PAPER_RESULT["architecture"] and weights_kind == "official"
    if paper_applies and not any(r.dataset_type == PAPER_RESULT["dataset_type"] for r in eval_results):
        eval_results.append(
            EvalResult(
                task_type=PAPER_RESULT["task_type"],
                dataset_type=PAPER_RESULT["dataset_type"],
                dataset_name=PAPER_RESULT["dataset_name"],
                metric_type=PAPER_RESULT["metric_type"],
                metric_name=PAPER_RESULT["metric_name"],
                metric_value=PAPER_RESULT["metric_value"],
                source_name=PAPER_RESULT["source_name"],
                source_url=PAPER_RESULT["source_url"],
            )
        )
    if paper_applies:
        paper_relation = (
            "these weights are the authors' release, so it is listed (with its source) in this card's "
            "metadata, but it was not re-measured here."
        )
    else:
        paper_relation = "it does not describe this checkpoint, which is a different model or training run."

    card_data = ModelCardData(
        library_name="timm",
        license=license,
        tags=list(CARD_TAGS) + ["sifa", "video", "action-recognition", "arxiv:2206.06931"],
        pipeline_tag="video-classification",
        datasets=list(datasets) if datasets else None,
        metrics=["accuracy"] if eval_results else None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )
    labels = list(label_names) if label_names is not None else None
    preview = None
    if labels:
        preview = ", ".join(f"`{x}`" for x in labels[:12]) + (
            f", … ({len(labels)} in all)" if len(labels) > 12 else ""
        )
    limitations_weights = {
        "training-checkpoint": "Trained by `sifa-hub train` on the data named under Weights; accuracy on other "
        "data is unknown.",
        "instance": "See Weights above for how the weights were obtained; accuracy beyond the results listed here "
        "is unknown.",
        "export": "See Weights above for how the weights were obtained; accuracy beyond the results listed here is "
        "unknown.",
        "official": "Converted from the official release; numerical equivalence with the original code is tested by "
        "sifa_hub on small inputs, not re-measured on Kinetics-400 here.",
        "imagenet-inflated": "An ImageNet-initialised starting point for fine-tuning, not a video classifier: its "
        "classifier is untrained for video classes.",
    }[weights_kind]
    if arch.startswith("sifa_"):
        architecture_limitation = (
            "SIFA relates each step only to the next one (frame `t` attends to `t + 1` after the early stride); the "
            "last step gets no inter-frame term, by design."
        )
    else:
        architecture_limitation = (
            "A C2D baseline processes frames independently and pools over time: it is blind to frame order (a clip "
            "and its time reversal get identical logits)."
        )
    return ModelCard.from_template(
        card_data,
        template_str=resources.files("sifa_hub").joinpath("templates/modelcard_template.md").read_text("utf-8"),
        title=f"{model_name} — {'SIFA-Transformer' if 'swin' in arch else 'SIFA-Net'} video classifier"
        if arch.startswith("sifa_")
        else f"{model_name} — C2D video classifier (SIFA baseline)",
        summary=f"`{arch}` video classification model ({_family(arch)}), exported with sifa_hub.",
        architecture=arch,
        family=_family(arch),
        num_classes=_int_attr(model, "num_classes"),
        weights_description=weights_description,
        params_m=f"{params / 1e6:.2f}",
        gmacs_text=f"{gmacs:.3f} (one {num_frames}×{img_size}×{img_size} clip)"
        if gmacs is not None
        else "not counted",
        num_frames=num_frames,
        early_stride=early_stride,
        img_size=img_size,
        crop_pct=cfg.get("crop_pct", 1.0),
        mean=", ".join(f"{v:.4f}" for v in cfg.get("mean", ())),
        std=", ".join(f"{v:.4f}" for v in cfg.get("std", ())),
        label_preview=preview,
        measured=rows,
        measured_note=""
        if measured is None or measured["dataset"]
        else "The evaluation set of these numbers was not described, so they are not in the card's metadata.",
        paper_relation=paper_relation,
        repo_id=repo_id or REPO_ID_PLACEHOLDER,
        limitations_weights=limitations_weights,
        architecture_limitation=architecture_limitation,
        sifa_hub_version=__version__,
    )


def validate_card(path: str | os.PathLike[str]) -> Any:
    """Check a model card offline; returns the loaded :class:`huggingface_hub.ModelCard`.

    Checks: the YAML metadata parses (``ModelCard.load``, metadata errors not ignored); ``license``,
    ``library_name: timm`` and ``pipeline_tag: video-classification``; the tags :data:`CARD_TAGS`; a ``model-index``
    whose every result has task/dataset/metrics and survives the ``model_index_to_eval_results`` →
    ``eval_results_to_model_index`` round trip unchanged; the paper's number only with its source; the usage and
    citation sections in the body.

    Raises:
        ValueError: listing every problem found.
    """
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model card not found: {path}")
    try:
        card = ModelCard.load(path, ignore_metadata_errors=False)
    except Exception as e:
        raise ValueError(f"{path}: metadata does not parse: {e}") from e
    meta = card.data.to_dict()
    problems = []
    if not meta.get("license"):
        problems.append("missing 'license'")
    if meta.get("library_name") != "timm":
        problems.append(f"library_name must be 'timm', got {meta.get('library_name')!r}")
    if meta.get("pipeline_tag") != "video-classification":
        problems.append(f"pipeline_tag must be 'video-classification', got {meta.get('pipeline_tag')!r}")
    missing_tags = [t for t in CARD_TAGS if t not in (meta.get("tags") or [])]
    if missing_tags:
        problems.append(f"missing tags {missing_tags}")
    index = meta.get("model-index")
    if index is not None:
        try:
            name, results = model_index_to_eval_results(index)
            if eval_results_to_model_index(name, results) != index:
                problems.append("model-index changes in a parse/serialise round trip (unknown or misplaced fields)")
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"model-index does not parse: {e!r}")
        else:
            for r in results:
                if r.task_type != "video-classification":
                    problems.append(f"model-index task type {r.task_type!r} is not video-classification")
                if not isinstance(r.metric_value, (int, float)):
                    problems.append(f"metric {r.metric_type!r} on {r.dataset_name!r} has a non-numeric value")
                if (
                    r.metric_value == PAPER_RESULT["metric_value"]
                    and r.dataset_type == PAPER_RESULT["dataset_type"]
                    and (r.source_url != PAPER_URL)
                ):
                    problems.append("the paper's Kinetics-400 number appears without its source")
    for needle in (
        'timm.create_model("hf-hub:',
        "AutoModelForVideoClassification",
        "torch.hub.load",
        "@inproceedings",
    ):
        if needle not in card.text:
            problems.append(f"card body lacks {needle!r}")
    if problems:
        raise ValueError(f"{path}: invalid model card:\n  " + "\n  ".join(problems))
    return card


# ----------------------------------------------------------------------------------------------------------------
# Export


def _check_target(out_dir: str) -> None:
    """An existing ``out_dir`` may only be replaced when it is empty or a previous export."""
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise ValueError(f"export target {out_dir!r} exists and is not a directory")
    entries = os.listdir(out_dir)
    if entries and not all(os.path.isfile(os.path.join(out_dir, f)) for f in ("config.json", "model.safetensors")):
        raise ValueError(
            f"export target {out_dir!r} is a non-empty directory that is not a model export; not replacing it"
        )


def _replace_dir(tmp: str, out_dir: str) -> None:
    """Move the finished ``tmp`` to ``out_dir``; a previous export there is swapped out, then deleted."""
    if not os.path.exists(out_dir):
        os.replace(tmp, out_dir)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=os.path.dirname(out_dir))
    os.rmdir(old)
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _video_processor(config: Any, crop_pct: float) -> Any:
    from .hf.video_processing_sifa import SifaVideoProcessor

    height, width = config.frame_size
    return SifaVideoProcessor(
        num_frames=config.num_frames,
        size={"shortest_edge": int(round(min(height, width) / crop_pct))},
        crop_size={"height": height, "width": width},
        image_mean=list(config.image_mean),
        image_std=list(config.image_std),
    )


def _write_files(
    model: nn.Module,
    tmp: str,
    *,
    label_names: list[str] | None,
    card: Callable[[tuple[int, float | None]], Any],
) -> None:
    """Write every file of an export into the (empty) folder ``tmp``."""
    from safetensors.torch import save_file

    from .hf.configuration_sifa import SifaConfig
    from .hf.remote_code import write_remote_code

    arch = _architecture(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(
        state,
        os.path.join(tmp, "model.safetensors"),
        metadata={"format": "pt", "variant": arch, "sifa_hub_version": __version__},
    )
    labels = {"id2label": dict(enumerate(label_names))} if label_names is not None else {}
    config = SifaConfig.from_timm_model(model, **labels)
    config.architectures = ["SifaForVideoClassification"]
    config.save_pretrained(tmp)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    _video_processor(config, float(cfg.get("crop_pct", 1.0))).save_pretrained(tmp)
    write_remote_code(tmp)  # transformers code files + auto_map in config.json and the processor config
    with open(os.path.join(tmp, "hubconf.py"), "w", encoding="utf-8") as f:
        f.write(_HUBCONF.format(variant=arch))
    img_size = int(config.frame_size[0])
    card(model_complexity(model, _int_attr(model, "num_frames"), img_size)).save(os.path.join(tmp, "README.md"))


def _verify_export(model: nn.Module, folder: str) -> None:
    """Load ``folder`` back with timm (``local-dir:``) and compare logits with ``model`` on a random clip."""
    loaded = _create(f"local-dir:{folder}", pretrained=True).eval()
    size = dict(getattr(loaded, "pretrained_cfg", None) or {})["input_size"][1:]
    gen = torch.Generator().manual_seed(0)
    clip = torch.randn(1, 3, _int_attr(loaded, "num_frames"), *size, generator=gen)  # (B, C, T, H, W)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected, got = model(clip), loaded(clip)
    finally:
        model.train(was_training)
    if not torch.allclose(expected, got, rtol=1e-4, atol=1e-5):
        raise RuntimeError(
            f"export check failed: timm loads {folder} with logits differing by {(expected - got).abs().max():.3g}"
        )


def _prepare(
    model_or_source: nn.Module | str | os.PathLike[str],
    *,
    num_classes: int | None,
    num_frames: int | None,
    labels: Sequence[str] | Mapping[int, str] | None,
    metrics: Mapping[str, Any] | str | os.PathLike[str] | None,
    official_checkpoint: str | os.PathLike[str] | None,
    imagenet_checkpoint: str | os.PathLike[str] | None,
    repo_id: str | None,
) -> tuple[nn.Module, str, str, list[str] | None]:
    """Check the arguments shared by :func:`export_model` and :func:`write_model_card`; load the model.

    Returns:
        ``(model, weights_kind, weights_description, label_names_or_None)``.
    """
    if repo_id is not None:
        _check_repo_id(repo_id)
    if metrics is not None:
        load_metrics(metrics)  # fail before any work
    model, kind, description, source_labels = _load_source(
        model_or_source,
        num_classes=num_classes,
        num_frames=num_frames,
        official_checkpoint=official_checkpoint,
        imagenet_checkpoint=imagenet_checkpoint,
    )
    names = _label_list(labels)
    if names is None:
        names = (
            source_labels
            if source_labels is not None
            else _label_list((getattr(model, "pretrained_cfg", None) or {}).get("label_names"))
        )
    if names is not None and len(names) != model.num_classes:
        raise ValueError(f"{len(names)} labels given for a model with {model.num_classes} classes")
    if names is not None and len(set(names)) != len(names):
        raise ValueError("labels must be unique")
    return model, kind, description, names


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
) -> str:
    """Write ``out_dir``: one directory that timm, transformers and torch.hub load (see the module docstring).

    The directory is built in a temporary folder next to ``out_dir`` and moved into place with ``os.replace``
    only once complete (and, with ``verify``, loaded back by timm with identical logits); on any error nothing is
    left behind. An existing ``out_dir`` is replaced only if it is empty or a previous export.

    Args:
        model_or_source: a timm-created SIFA model; a ``sifa-hub train`` output directory (its newest checkpoint)
            or checkpoint directory (``trainer_state.json`` + ``model.safetensors``); an exported directory; or an
            architecture name (e.g.
            ``"sifa_resnet50"``) together with ``official_checkpoint`` or ``imagenet_checkpoint``.
        out_dir: the directory to write.
        num_classes: classifier size for a name / directory source (default: the source's).
        num_frames: clip length ``T`` for a name / directory source (default: the variant's).
        labels: class names, index order (or ``{index: name}``); default: those stored with the source.
        label_names: alias of ``labels`` (timm's term).
        metrics: measured results for the card (dict or JSON file, see :func:`load_metrics`). Never invent them.
        official_checkpoint: an official SIFA ``.pth`` (converted by the family's ``checkpoint_filter_fn``,
            loaded with ``weights_only=True``).
        imagenet_checkpoint: 2D ImageNet weights to inflate (timm's ``pretrained_cfg_overlay=dict(file=...)``).
        repo_id: the Hub repo the card's usage snippets name (``ORG/NAME`` placeholder if ``None``).
        license: license id for the card.
        datasets: Hub dataset ids for the card's metadata.
        weights_description: one line on how the weights were obtained (training data, recipe) for the card;
            default: a line naming the source.
        verify: reload the export with timm and compare logits before committing it.

    Returns:
        The absolute path of ``out_dir``.
    """
    if labels is not None and label_names is not None:
        raise ValueError("give labels or label_names, not both")
    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise TypeError(f"out_dir must be a path, got {out_dir!r}")
    out = os.path.abspath(os.fspath(out_dir))
    _check_target(out)
    model, kind, description, names = _prepare(
        model_or_source,
        num_classes=num_classes,
        num_frames=num_frames,
        labels=labels if labels is not None else label_names,
        metrics=metrics,
        official_checkpoint=official_checkpoint,
        imagenet_checkpoint=imagenet_checkpoint,
        repo_id=repo_id,
    )

    def card(complexity: tuple[int, float | None]) -> Any:
        return build_model_card(
            model,
            repo_id=repo_id,
            label_names=names,
            metrics=metrics,
            weights_kind=kind,
            weights_description=weights_description or description,
            license=license,
            datasets=datasets,
            complexity=complexity,
        )

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        _write_files(model, tmp, label_names=names, card=card)
        validate_card(os.path.join(tmp, "README.md"))
        if verify:
            _verify_export(model, tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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

    The card is validated (:func:`validate_card`) before it atomically replaces ``path``. Arguments as in
    :func:`export_model`; ``repo_id`` is required because the card's snippets load that repo.

    Returns:
        The absolute path of the card.
    """
    out = os.path.abspath(os.fspath(path))
    model, kind, description, names = _prepare(
        model_or_source,
        num_classes=num_classes,
        num_frames=num_frames,
        labels=labels,
        metrics=metrics,
        official_checkpoint=official_checkpoint,
        imagenet_checkpoint=imagenet_checkpoint,
        repo_id=repo_id,
    )
    card = build_model_card(
        model,
        repo_id=repo_id,
        label_names=names,
        metrics=metrics,
        weights_kind=kind,
        weights_description=weights_description or description,
        license=license,
        datasets=datasets,
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=os.path.dirname(out))
    os.close(fd)
    try:
        card.save(tmp)
        validate_card(tmp)
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return out


# ----------------------------------------------------------------------------------------------------------------
# Push


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'ORG/NAME', got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"invalid repo_id {repo_id!r}: {e}") from e


def push_to_hub(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Any:
    """Upload an exported directory to the Hub as one commit; returns the :class:`huggingface_hub.CommitInfo`.

    Before any network call: the directory must hold :data:`REQUIRED_FILES`, its card must pass
    :func:`validate_card` and its snippets must name ``repo_id`` (a card exported without ``repo_id`` names the
    ``ORG/NAME`` placeholder, which the uploaded copy replaces with ``repo_id``), and a token must be found
    (``token``, else ``huggingface_hub.get_token()``: ``HF_TOKEN`` or the saved login). Then ``create_repo``
    (``exist_ok``), ``create_branch`` when ``revision`` is a new branch, and one ``create_commit`` with every file
    (hidden files and ``__pycache__`` excluded). ``create_commit`` rather than ``upload_folder``: with ``hf_xet``
    installed, ``upload_folder`` streams large folders in several commits, and a model version is one commit.

    Args:
        folder: a directory written by :func:`export_model`.
        repo_id: ``ORG/NAME``.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to (created from ``main`` if missing); ``None``: ``main``.
        commit_message: defaults to ``"Upload <architecture> (sifa_hub <version>)"``.
        token: Hub token; defaults to the usual places.
        endpoint: Hub URL; defaults to ``HF_ENDPOINT`` / huggingface.co.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    _check_repo_id(repo_id)
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"push_to_hub: {root} is not a directory")
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise ValueError(
            f"push_to_hub: {root} lacks {', '.join(missing)}; write it with sifa_hub.publish.export_model"
        )
    validate_card(root / "README.md")
    readme = (root / "README.md").read_text(encoding="utf-8")
    # a card exported without repo_id names the placeholder in its snippets: the uploaded copy names this repo
    readme = readme.replace(f'"hf-hub:{REPO_ID_PLACEHOLDER}"', f'"hf-hub:{repo_id}"')
    readme = readme.replace(f'"{REPO_ID_PLACEHOLDER}"', f'"{repo_id}"')
    if f'"{repo_id}"' not in readme and f'"hf-hub:{repo_id}"' not in readme:
        raise ValueError(
            f"push_to_hub: the card in {root} was exported for another repo; export with repo_id={repo_id!r}"
        )
    token = token or get_token()
    if not token:
        raise ValueError("push_to_hub: no Hugging Face token: pass token=..., set HF_TOKEN, or run `hf auth login`")
    with open(root / "config.json", encoding="utf-8") as f:
        arch = json.load(f).get("architecture", "model")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(root).parts)
    )
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [
        CommitOperationAdd(
            path_in_repo=p.relative_to(root).as_posix(),
            path_or_fileobj=readme.encode("utf-8") if p == root / "README.md" else str(p),
        )
        for p in files
    ]
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or f"Upload {arch} (sifa_hub {__version__})",
        revision=revision,
    )


# ----------------------------------------------------------------------------------------------------------------
# CLI hooks (registered by sifa_hub.cli)


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export`` to an ``argparse`` sub-parser set; the handler is stored as ``func`` (returns an exit code)."""
    p = subparsers.add_parser(
        "export",
        help="write one directory that timm, transformers and torch.hub load (weights, config, card)",
        description=export_model.__doc__.split("\n\n")[0] if export_model.__doc__ else None,
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_CKPT",
        help="`sifa-hub train` output dir (its newest checkpoint) or checkpoint dir, exported dir, or an "
        "architecture name with --from-official/--from-imagenet",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="DIR", help="directory to write (replaces a previous export)")
    target.add_argument(
        "--card-only", metavar="MD", help="write only the model card to this file (e.g. model_cards/NAME.md)"
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--from-official", metavar="PTH", help="official SIFA checkpoint to convert")
    weights.add_argument("--from-imagenet", metavar="FILE", help="2D ImageNet weights to inflate")
    p.add_argument("--num-classes", type=int, help="classifier size (name / directory sources)")
    p.add_argument("--num-frames", type=int, help="clip length T (name / directory sources)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line, in index order")
    p.add_argument("--metrics", metavar="JSON", help="measured results (sifa-hub train metrics.json or eval JSON)")
    p.add_argument("--repo-id", metavar="ORG/NAME", help="Hub repo the card's usage snippets load")
    p.add_argument("--license", default="apache-2.0", help="license id for the card (default: apache-2.0)")
    p.add_argument(
        "--dataset",
        action="append",
        dest="datasets",
        metavar="HUB_ID",
        help="Hub dataset id the model was trained on (repeatable)",
    )
    p.add_argument(
        "--weights-description", metavar="TEXT", help="how the weights were obtained, one line for the card"
    )
    p.add_argument("--no-verify", action="store_true", help="skip reloading the export with timm")
    p.set_defaults(func=_run_export)
    return p


def _run_export(args: argparse.Namespace) -> int:
    labels = None
    if args.labels:
        with open(args.labels, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
    common: dict[str, Any] = dict(
        num_classes=args.num_classes,
        num_frames=args.num_frames,
        labels=labels,
        metrics=args.metrics,
        official_checkpoint=args.from_official,
        imagenet_checkpoint=args.from_imagenet,
        license=args.license,
        datasets=args.datasets,
        weights_description=args.weights_description,
    )
    if args.card_only:
        if not args.repo_id:
            raise ValueError("--card-only needs --repo-id (the card's usage snippets load that repo)")
        print(write_model_card(args.model, args.card_only, repo_id=args.repo_id, **common))
    else:
        print(export_model(args.model, args.out, repo_id=args.repo_id, verify=not args.no_verify, **common))
    return 0


def add_push_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``push`` to an ``argparse`` sub-parser set; the handler is stored as ``func`` (returns an exit code)."""
    p = subparsers.add_parser("push", help="upload an exported directory to the Hugging Face Hub (one commit)")
    p.add_argument("dir", metavar="DIR", help="directory written by `sifa-hub export`")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="target model repo")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created if missing)")
    p.add_argument("--commit-message", metavar="M", help="commit message")
    p.set_defaults(func=_run_push)
    return p


def _run_push(args: argparse.Namespace) -> int:
    info = push_to_hub(
        args.dir, args.repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message
    )
    print(info.commit_url)
    return 0
