"""torch.hub entrypoints (hubconf.py): local loading, listing, docs, and loading without a pip install."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import timm
import torch

REPO = str(Path(__file__).resolve().parents[1])


def _hubconf() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sifa_hubconf", os.path.join(REPO, "hubconf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_entrypoints_and_docs() -> None:
    """What ``torch.hub.list`` would show (public callables of hubconf), each a documented timm model."""
    hubconf = _hubconf()
    names = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    swin = {f"{p}_swin_{s}_patch4_window7_224" for p in ("sifa", "c2d") for s in ("tiny", "small", "base", "large")}
    resnet = {f"{p}_resnet{s}" for p in ("sifa", "c2d") for s in ("50", "101", "_pico")}
    assert names == resnet | swin | {"sifa_swin_pico", "c2d_swin_pico"} == set(hubconf.__all__)
    assert names <= set(timm.list_models())
    assert {"torch", "timm"} <= set(hubconf.dependencies)
    fn = hubconf.sifa_resnet_pico
    assert fn.__name__ == "sifa_resnet_pico"
    assert "Tiny SIFA-Net" in fn.__doc__ and 'timm.create_model("sifa_resnet_pico"' in fn.__doc__
    assert "Weight tags: motion4" in fn.__doc__


def test_hub_load_resnet_and_swin() -> None:
    resnet = torch.hub.load(REPO, "sifa_resnet_pico", source="local", num_classes=5).eval()
    assert resnet.pretrained_cfg["architecture"] == "sifa_resnet_pico" and resnet.num_frames == 8
    swin = torch.hub.load(REPO, "sifa_swin_pico", source="local", num_classes=4, num_frames=4).eval()
    assert swin.num_frames == 4
    with torch.no_grad():
        assert resnet(torch.randn(1, 3, 8, 32, 32)).shape == (1, 5)
        assert swin(torch.randn(1, 3, 4, 32, 32)).shape == (1, 4)


def test_hub_load_without_installed_package(tmp_path: Path) -> None:
    """hubconf puts its own directory on sys.path: works when sifa_hub is not importable beforehand."""
    script = f"""
import importlib.util, sys
sys.path[:] = [p for p in sys.path if p not in ("", {REPO!r})]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                    and "editable" not in getattr(f, "__name__", "").lower()]
assert importlib.util.find_spec("sifa_hub") is None, "sifa_hub still importable"
import torch
model = torch.hub.load({REPO!r}, "c2d_resnet_pico", source="local", num_classes=3)
print(type(model).__name__, model.num_classes)
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SifaResNet", "3"]
