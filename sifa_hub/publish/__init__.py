"""Publishing SIFA checkpoints: one folder for timm, transformers and torch.hub, its model card, and the push.

- :mod:`~sifa_hub.publish.source`: what an export starts from (a model, or a source resolved by
  :mod:`sifa_hub.loading`, or a variant with official / ImageNet weights);
- :mod:`~sifa_hub.publish.card`: measured metrics, model statistics, the card and its offline validation;
- :mod:`~sifa_hub.publish.export`: :func:`export_model` (atomic, refuses folders it does not own) and
  :func:`write_model_card`;
- :mod:`~sifa_hub.publish.push`: :func:`push_to_hub` (one commit).

The command line (``sifa-hub export`` / ``sifa-hub push``) lives in :mod:`sifa_hub.cli` and calls these functions.
"""

from __future__ import annotations

from .card import (
    CARD_TAGS,
    LIBRARY_NAME,
    PAPER_RESULT,
    PAPER_URL,
    REPO_ID_PLACEHOLDER,
    WEIGHT_KINDS,
    build_model_card,
    load_metrics,
    model_complexity,
    validate_card,
)
from .export import EXPORT_FORMATS, MANIFEST_NAME, check_export_target, export_model, owned_export, write_model_card
from .push import REQUIRED_FILES, check_repo_id, push_to_hub
from .source import ExportSource, load_export_source, read_labels_file

__all__ = [
    "CARD_TAGS",
    "EXPORT_FORMATS",
    "LIBRARY_NAME",
    "MANIFEST_NAME",
    "PAPER_RESULT",
    "PAPER_URL",
    "REPO_ID_PLACEHOLDER",
    "REQUIRED_FILES",
    "WEIGHT_KINDS",
    "ExportSource",
    "build_model_card",
    "check_export_target",
    "check_repo_id",
    "export_model",
    "load_export_source",
    "load_metrics",
    "model_complexity",
    "owned_export",
    "push_to_hub",
    "read_labels_file",
    "validate_card",
    "write_model_card",
]
