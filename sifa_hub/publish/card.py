"""Model cards of exported SIFA models: measured metrics, model statistics, rendering and offline validation.

A card is rendered from ``sifa_hub/templates/modelcard_template.md`` through
:meth:`huggingface_hub.ModelCard.from_template`. Its metadata declares ``library_name: transformers``: the Hub's
"Use this model" snippet for transformers (``AutoModelForVideoClassification`` / ``pipeline`` with
``trust_remote_code=True``) works for users without ``sifa_hub``, because every export carries its remote code.
The card's ``model-index`` holds only results measured on a described evaluation set; the one paper number the
project cites appears there only for the authors' own weights, with its source, and is otherwise cited in the body,
apart from measured results.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..loading import data_config, read_json
from ..utils.flops import count_flops

__all__ = [
    "CARD_TAGS",
    "LIBRARY_NAME",
    "PAPER_RESULT",
    "PAPER_URL",
    "REPO_ID_PLACEHOLDER",
    "WEIGHT_KINDS",
    "build_model_card",
    "input_size",
    "int_attr",
    "load_metrics",
    "model_architecture",
    "model_complexity",
    "validate_card",
]

LIBRARY_NAME = "transformers"  # the Hub snippet of this library works without sifa_hub (remote code)
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
WEIGHT_KINDS = ("instance", "training-checkpoint", "export", "official", "imagenet-inflated")
_SNIPPET_NEEDLES = (
    'timm.create_model("hf-hub:',
    "AutoModelForVideoClassification",
    "torch.hub.load",
    "@inproceedings",
)
_LIMITATIONS_WEIGHTS = {
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
}


# ----------------------------------------------------------------------------------------------------------------
# Model facts


def int_attr(model: nn.Module, name: str) -> int:
    """An integer attribute every SIFA model has (``num_frames``, ``num_classes``, ``num_features``)."""
    value = getattr(model, name, None)
    if not isinstance(value, int):
        raise ValueError(f"{type(model).__name__} has no integer {name!r}: is it a SIFA model created with timm?")
    return value


def model_architecture(model: nn.Module) -> str:
    """The registered variant name of a timm-created model (``pretrained_cfg['architecture']``)."""
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if not isinstance(arch, str):
        raise ValueError(f"{type(model).__name__} has no pretrained_cfg['architecture']: create it with timm")
    return arch


def input_size(model: nn.Module) -> int:
    """The crop side ``H = W`` the model was configured for (``pretrained_cfg['input_size']``)."""
    return int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])


def model_complexity(model: nn.Module, num_frames: int, img_size: int) -> tuple[int, float | None]:
    """Parameter count and GMACs of one forward on a ``(1, 3, num_frames, img_size, img_size)`` clip.

    MACs are half the FLOPs of :func:`sifa_hub.utils.flops.count_flops`: ``FlopCounterMode`` for convolutions and
    matmuls plus the SIFA operator counted analytically. GMACs are ``None`` (with a warning) if the counted forward
    fails.
    """
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


# ----------------------------------------------------------------------------------------------------------------
# Measured metrics


def _metrics_dataset(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """The evaluation set a metrics mapping describes (``"dataset"``, or the motion set a train run names)."""
    dataset = metrics.get("dataset")
    config = metrics.get("config")
    if dataset is None and isinstance(config, Mapping) and config.get("data") == "motion":
        dataset = {"name": "sifa_hub synthetic motion clips", "type": "sifa_hub-motion", "split": "validation"}
    if dataset is not None and not (
        isinstance(dataset, Mapping) and isinstance(dataset.get("name"), str) and isinstance(dataset.get("type"), str)
    ):
        raise ValueError(f"metrics 'dataset' needs string 'name' and 'type', got {dataset!r}")
    return None if dataset is None else dict(dataset)


def load_metrics(metrics: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """Normalise measured metrics: a dict or a JSON file in one of these forms.

    * ``sifa_hub.evaluation`` output: ``{"top1": 97.5, "top5": 100.0, "num_samples": 400, ...}`` (percent);
    * ``sifa-hub train``'s ``metrics.json``: ``{"final": {...as above}, "config": {"data": ...}, ...}``;
    * either, with ``"dataset": {"name": ..., "type": ..., "split": ...}`` describing the evaluation set.

    Returns:
        ``{"top1", "top5" (or None), "num_samples" (or None), "dataset" (dict or None)}``.
    """
    source = ""
    if isinstance(metrics, (str, os.PathLike)):
        source = f"{os.fspath(metrics)}: "
        metrics = read_json(metrics)
    if not isinstance(metrics, Mapping):
        raise TypeError(f"{source}metrics must be a mapping or a JSON file holding one, got {type(metrics).__name__}")
    final = metrics.get("final", metrics)
    if not isinstance(final, Mapping) or not isinstance(final.get("top1"), (int, float)):
        raise ValueError(f"{source}metrics need a numeric 'top1' (percent), at the top level or under 'final'")
    top1, top5 = float(final["top1"]), final.get("top5")
    for name, value in (("top1", top1), ("top5", top5)):
        if value is not None and not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 100.0):
            raise ValueError(f"{source}metrics {name}={value} is not a percentage in [0, 100]")
    return {
        "top1": top1,
        "top5": None if top5 is None else float(top5),
        "num_samples": final.get("num_samples"),
        "dataset": _metrics_dataset(metrics),
    }


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def _family(arch: str) -> str:
    if "swin" in arch:
        base = (
            "SIFA-Transformer: Swin Transformer with SIFA blocks" if arch.startswith("sifa_") else "C2D Swin baseline"
        )
    else:
        base = "SIFA-Net: C2D ResNet with SIFA bottlenecks" if arch.startswith("sifa_") else "C2D ResNet baseline"
    return base + " (Long et al., CVPR 2022)"


def _title(model_name: str, arch: str) -> str:
    if arch.startswith("sifa_"):
        return f"{model_name} — {'SIFA-Transformer' if 'swin' in arch else 'SIFA-Net'} video classifier"
    return f"{model_name} — C2D video classifier (SIFA baseline)"


def _measured_results(measured: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[Any]]:
    """Body table rows and ``EvalResult``s (only when the evaluation set is described) of measured metrics."""
    from huggingface_hub import EvalResult

    if measured is None:
        return [], []
    ds = measured["dataset"] or {}
    split = ds.get("split", "validation")
    samples = measured["num_samples"] if measured["num_samples"] is not None else "—"
    rows, results = [], []
    for key, label in (("top1", "top-1 accuracy (%)"), ("top5", "top-5 accuracy (%)")):
        if measured[key] is None:
            continue
        value = round(measured[key], 2)
        dataset = ds.get("name", "evaluation set not described")
        rows.append({"dataset": dataset, "split": split, "metric": label, "value": f"{value:.2f}", "samples": samples})
        if ds:
            results.append(
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
    return rows, results


def _paper_results(arch: str, weights_kind: str, measured: list[Any]) -> tuple[list[Any], str]:
    """The paper's result for the authors' own Swin-B weights (with its source), and how the card relates to it."""
    from huggingface_hub import EvalResult

    if not (arch == PAPER_RESULT["architecture"] and weights_kind == "official"):
        return [], "it does not describe this checkpoint, which is a different model or training run."
    relation = (
        "these weights are the authors' release, so it is listed (with its source) in this card's "
        "metadata, but it was not re-measured here."
    )
    if any(r.dataset_type == PAPER_RESULT["dataset_type"] for r in measured):
        return [], relation  # a measured Kinetics-400 result takes its place
    keys = ("task_type", "dataset_type", "dataset_name", "metric_type", "metric_name", "metric_value")
    cited = EvalResult(**{k: PAPER_RESULT[k] for k in (*keys, "source_name", "source_url")})
    return [cited], relation


def _card_data(
    *, license: str, datasets: Sequence[str] | None, model_name: str, eval_results: list[Any]
) -> Any:
    from huggingface_hub import ModelCardData

    return ModelCardData(
        library_name=LIBRARY_NAME,
        license=license,
        tags=list(CARD_TAGS) + ["sifa", "video", "action-recognition", "arxiv:2206.06931"],
        pipeline_tag="video-classification",
        datasets=list(datasets) if datasets else None,
        metrics=["accuracy"] if eval_results else None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )


def _label_preview(label_names: Sequence[str] | None) -> str | None:
    if not label_names:
        return None
    labels = list(label_names)
    more = f", … ({len(labels)} in all)" if len(labels) > 12 else ""
    return ", ".join(f"`{x}`" for x in labels[:12]) + more


def _architecture_limitation(arch: str) -> str:
    if arch.startswith("sifa_"):
        return (
            "SIFA relates each step only to the next one (frame `t` attends to `t + 1` after the early stride); the "
            "last step gets no inter-frame term, by design."
        )
    return (
        "A C2D baseline processes frames independently and pools over time: it is blind to frame order (a clip "
        "and its time reversal get identical logits)."
    )


def _input_fields(model: nn.Module, complexity: tuple[int, float | None] | None) -> dict[str, Any]:
    """The template fields describing the model's size and input."""
    cfg = data_config(model)
    num_frames, img_size = int_attr(model, "num_frames"), input_size(model)
    params, gmacs = complexity if complexity is not None else model_complexity(model, num_frames, img_size)
    return {
        "num_classes": int_attr(model, "num_classes"),
        "params_m": f"{params / 1e6:.2f}",
        "gmacs_text": "not counted" if gmacs is None else f"{gmacs:.3f} (one {num_frames}×{img_size}×{img_size} clip)",
        "num_frames": num_frames,
        "early_stride": int(getattr(model, "early_stride", 1)),
        "img_size": img_size,
        "crop_pct": cfg["crop_pct"],
        "mean": ", ".join(f"{v:.4f}" for v in cfg["mean"]),
        "std": ", ".join(f"{v:.4f}" for v in cfg["std"]),
    }


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
        weights_kind: where the weights come from (one of :data:`WEIGHT_KINDS`); the paper's number enters the
            model-index only for ``official`` Swin-B weights.
        weights_description: one line on the weights' origin.
        license: SPDX-style license id.
        datasets: Hub dataset ids the model was trained on (metadata ``datasets``).
        complexity: ``(params, gmacs)`` if already computed (see :func:`model_complexity`).
    """
    from huggingface_hub import ModelCard

    if weights_kind not in WEIGHT_KINDS:
        raise ValueError(f"weights_kind must be one of {WEIGHT_KINDS}, got {weights_kind!r}")
    arch = model_architecture(model)
    model_name = (repo_id or arch).split("/")[-1]
    measured = load_metrics(metrics) if metrics is not None else None
    rows, results = _measured_results(measured)
    cited, paper_relation = _paper_results(arch, weights_kind, results)
    no_dataset_note = "The evaluation set of these numbers was not described, so they are not in the card's metadata."
    return ModelCard.from_template(
        _card_data(license=license, datasets=datasets, model_name=model_name, eval_results=results + cited),
        template_str=resources.files("sifa_hub").joinpath("templates/modelcard_template.md").read_text("utf-8"),
        title=_title(model_name, arch),
        summary=f"`{arch}` video classification model ({_family(arch)}), exported with sifa_hub.",
        architecture=arch,
        family=_family(arch),
        weights_description=weights_description,
        label_preview=_label_preview(label_names),
        measured=rows,
        measured_note="" if measured is None or measured["dataset"] else no_dataset_note,
        paper_relation=paper_relation,
        repo_id=repo_id or REPO_ID_PLACEHOLDER,
        limitations_weights=_LIMITATIONS_WEIGHTS[weights_kind],
        architecture_limitation=_architecture_limitation(arch),
        sifa_hub_version=__version__,
        **_input_fields(model, complexity),
    )


# ----------------------------------------------------------------------------------------------------------------
# Validation


def _metadata_problems(meta: Mapping[str, Any]) -> list[str]:
    problems = []
    if not meta.get("license"):
        problems.append("missing 'license'")
    if meta.get("library_name") != LIBRARY_NAME:
        problems.append(
            f"library_name must be {LIBRARY_NAME!r} (its Hub snippet works without sifa_hub), "
            f"got {meta.get('library_name')!r}"
        )
    if meta.get("pipeline_tag") != "video-classification":
        problems.append(f"pipeline_tag must be 'video-classification', got {meta.get('pipeline_tag')!r}")
    missing_tags = [t for t in CARD_TAGS if t not in (meta.get("tags") or [])]
    if missing_tags:
        problems.append(f"missing tags {missing_tags}")
    return problems


def _result_problems(r: Any) -> list[str]:
    """One model-index result: measured (no source) or the paper's number with its source, nothing else."""
    problems = []
    if r.task_type != "video-classification":
        problems.append(f"model-index task type {r.task_type!r} is not video-classification")
    if not isinstance(r.metric_value, (int, float)):
        problems.append(f"metric {r.metric_type!r} on {r.dataset_name!r} has a non-numeric value")
    is_paper = r.metric_value == PAPER_RESULT["metric_value"] and r.dataset_type == PAPER_RESULT["dataset_type"]
    if is_paper and r.source_url != PAPER_URL:
        problems.append("the paper's Kinetics-400 number appears without its source")
    if r.source_url is not None and not is_paper:
        problems.append(
            f"model-index result {r.metric_name!r} on {r.dataset_name!r} cites {r.source_url}: only measured results "
            "and the paper's own number (with its source) belong there"
        )
    return problems


def _model_index_problems(index: Any) -> list[str]:
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    if index is None:
        return []
    try:
        name, results = model_index_to_eval_results(index)
        if eval_results_to_model_index(name, results) != index:
            return ["model-index changes in a parse/serialise round trip (unknown or misplaced fields)"]
    except (KeyError, TypeError, ValueError) as e:
        return [f"model-index does not parse: {e!r}"]
    return [p for r in results for p in _result_problems(r)]


def _body_problems(text: str) -> list[str]:
    problems = [f"card body lacks {needle!r}" for needle in _SNIPPET_NEEDLES if needle not in text]
    if "trust_remote_code=True" not in text:
        problems.append("card body lacks the transformers remote-code snippet (trust_remote_code=True)")
    if "not measured by us" not in text:
        problems.append("card body lacks the section citing the paper's numbers apart ('not measured by us')")
    return problems


def validate_card(path: str | os.PathLike[str]) -> Any:
    """Check a model card offline; returns the loaded :class:`huggingface_hub.ModelCard`.

    Checks: the YAML metadata parses (``ModelCard.load``, metadata errors not ignored); ``license``,
    ``library_name: transformers`` and ``pipeline_tag: video-classification``; the tags :data:`CARD_TAGS`; a
    ``model-index`` whose every result has task/dataset/metrics, survives the ``model_index_to_eval_results`` →
    ``eval_results_to_model_index`` round trip unchanged and is measured (no source) or the paper's number with its
    source; the usage snippets (timm, transformers remote code, torch.hub), the section citing the paper's numbers
    apart and the citation in the body.

    Raises:
        ValueError: naming the card and listing every problem found.
    """
    from huggingface_hub import ModelCard

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model card not found: {path}")
    try:
        card = ModelCard.load(path, ignore_metadata_errors=False)
    except Exception as e:
        raise ValueError(f"{path}: metadata does not parse: {e}") from e
    meta = card.data.to_dict()
    problems = _metadata_problems(meta) + _model_index_problems(meta.get("model-index")) + _body_problems(card.text)
    if problems:
        raise ValueError(f"{path}: invalid model card:\n  " + "\n  ".join(problems))
    return card
