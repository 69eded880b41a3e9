"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from hub_server import HubServer, patch_hub_client

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per xdist worker: no oversubscription of the CI's cores
    torch.set_num_threads(1)


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
