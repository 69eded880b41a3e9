"""Push: upload an exported folder to the Hugging Face Hub as one commit, after offline checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import __version__
from ..loading import read_json
from .card import REPO_ID_PLACEHOLDER, validate_card

__all__ = ["REQUIRED_FILES", "check_repo_id", "push_to_hub"]

REQUIRED_FILES = ("model.safetensors", "config.json", "README.md")


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but a valid ``ORG/NAME`` model repo id (``ValueError`` saying why)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"repo_id must look like 'ORG/NAME', got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ValueError(f"invalid repo_id {repo_id!r}: {e}") from e


def _card_for(root: Path, repo_id: str) -> str:
    """The card text to upload: validated, its snippets naming ``repo_id`` (the placeholder replaced)."""
    validate_card(root / "README.md")
    readme = (root / "README.md").read_text(encoding="utf-8")
    # a card exported without repo_id names the placeholder in its snippets: the uploaded copy names this repo
    readme = readme.replace(f'"hf-hub:{REPO_ID_PLACEHOLDER}"', f'"hf-hub:{repo_id}"')
    readme = readme.replace(f'"{REPO_ID_PLACEHOLDER}"', f'"{repo_id}"')
    if f'"{repo_id}"' not in readme and f'"hf-hub:{repo_id}"' not in readme:
        raise ValueError(
            f"push_to_hub: the card in {root} was exported for another repo; export with repo_id={repo_id!r}"
        )
    return readme


def _upload_files(root: Path) -> list[Path]:
    """Every file of the folder except hidden ones (the export manifest) and byte-code caches."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(root).parts)
    )


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
    :func:`~sifa_hub.publish.validate_card` and its snippets must name ``repo_id`` (a card exported without
    ``repo_id`` names the ``ORG/NAME`` placeholder, which the uploaded copy replaces with ``repo_id``), and a token
    must be found (``token``, else ``huggingface_hub.get_token()``: ``HF_TOKEN`` or the saved login). Then
    ``create_repo`` (``exist_ok``), ``create_branch`` when ``revision`` is a new branch, and one ``create_commit``
    with every file (hidden files and ``__pycache__`` excluded). ``create_commit`` rather than ``upload_folder``:
    with ``hf_xet`` installed, ``upload_folder`` streams large folders in several commits, and a model version is
    one commit.

    Args:
        folder: a directory written by :func:`~sifa_hub.publish.export_model`.
        repo_id: ``ORG/NAME``.
        private: create the repo private (an existing repo keeps its visibility).
        revision: branch to commit to (created from ``main`` if missing); ``None``: ``main``.
        commit_message: defaults to ``"Upload <architecture> (sifa_hub <version>)"``.
        token: Hub token; defaults to the usual places.
        endpoint: Hub URL; defaults to ``HF_ENDPOINT`` / huggingface.co.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    check_repo_id(repo_id)
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"push_to_hub: {root} is not a directory")
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise ValueError(
            f"push_to_hub: {root} lacks {', '.join(missing)}; write it with sifa_hub.publish.export_model"
        )
    readme = _card_for(root, repo_id)
    token = token or get_token()
    if not token:
        raise ValueError("push_to_hub: no Hugging Face token: pass token=..., set HF_TOKEN, or run `hf auth login`")
    config = read_json(root / "config.json")
    arch = config.get("architecture", "model") if isinstance(config, dict) else "model"
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [
        CommitOperationAdd(
            path_in_repo=p.relative_to(root).as_posix(),
            path_or_fileobj=readme.encode("utf-8") if p == root / "README.md" else str(p),
        )
        for p in _upload_files(root)
    ]
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message or f"Upload {arch} (sifa_hub {__version__})",
        revision=revision,
    )
