"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hub_server import HubServer, patch_hub_client

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per xdist worker: no oversubscription of the CI's cores
    torch.set_num_threads(1)


FIXTURES_ENV = "SIFA_HUB_FIXTURES"


def find_fixtures_dir() -> Path | None:
    """The official code's golden outputs: ``$SIFA_HUB_FIXTURES``, else ``<checkout>/../shared/fixtures``."""
    env = os.environ.get(FIXTURES_ENV)
    candidate = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Folder of the official golden fixtures; tests that need it skip, saying where to put it, when absent."""
    found = find_fixtures_dir()
    if found is None:
        pytest.skip(
            "official golden fixtures not found: put them in ../shared/fixtures beside the checkout or set "
            f"{FIXTURES_ENV}=/path/to/fixtures (official_sifa_net_small.safetensors, ...)"
        )
    return found


@pytest.fixture
def hub_server(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """An offline Hub on a free local port; this process's huggingface_hub, timm and transformers point at it.

    ``HF_TOKEN`` holds the server's write token (user ``sifa-tester``, member of org ``sifa-org``); the download
    cache is a fresh temporary folder. ``hub_server.env(cache_dir)`` gives the variables for a subprocess.
    """
    root = tmp_path_factory.mktemp("hub")
    with HubServer(root / "server") as server:
        patch_hub_client(monkeypatch, server.url, root / "cache")
        monkeypatch.setenv("HF_TOKEN", server.write_token)
        yield server
