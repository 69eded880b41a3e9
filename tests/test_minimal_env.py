"""A torch + timm environment: ``import sifa_hub`` and torch.hub work where transformers and PyAV cannot be imported.

Each test runs a fresh interpreter whose import system refuses ``transformers`` and ``av`` (``None`` in
``sys.modules`` set before anything else), as on a machine where only torch, torchvision, timm, safetensors and
huggingface_hub are installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])

# ``None`` in sys.modules is Python's own import block: ``import av`` raises ModuleNotFoundError and
# ``importlib.util.find_spec("av")`` returns None, exactly as when the package is not installed
BLOCKER = textwrap.dedent(
    """
    import sys

    for name in {blocked!r}:
        sys.modules[name] = None
    """
)


def run_child(body: str, tmp_path: Path, blocked: tuple[str, ...] = ("transformers", "av")) -> dict:
    """Run ``body`` after the import blocker in a fresh interpreter; return the JSON it prints last."""
    script = BLOCKER.format(blocked=set(blocked)) + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_hub_load_and_forward_without_transformers_and_av(tmp_path: Path) -> None:
    out = run_child(
        f"""
        import json, warnings
        for name in ("transformers", "av"):
            try:
                __import__(name)
                raise SystemExit(f"{{name}} is importable: the blocker does not work")
            except ModuleNotFoundError:
                pass
        import torch
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning about the missing integration either
            resnet = torch.hub.load(
                {REPO!r}, "sifa_resnet_pico", source="local", num_classes=5, sifa_backend="torch"
            ).eval()
            swin = torch.hub.load(
                {REPO!r}, "sifa_swin_pico", source="local", num_classes=3, sifa_backend="torch"
            ).eval()
        with torch.no_grad():
            logits = resnet(torch.randn(2, 3, 8, 32, 32))
            swin_logits = swin(torch.randn(1, 3, 8, 32, 32))
        import sifa_hub
        try:
            import sifa_hub.hf
            hf_error = None
        except ModuleNotFoundError as e:
            hf_error = str(e)
        print(json.dumps({{
            "shape": list(logits.shape), "finite": bool(torch.isfinite(logits).all()),
            "swin_shape": list(swin_logits.shape), "version": sifa_hub.__version__, "hf_error": hf_error,
            "loaded": sorted(
                m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in ("transformers", "av")
            ),
        }}))
        """,
        tmp_path,
    )
    assert out["shape"] == [2, 5] and out["finite"] and out["swin_shape"] == [1, 3]
    assert out["version"] and out["loaded"] == []
    assert out["hf_error"] and "transformers" in out["hf_error"]


def test_import_without_transformers_registers_timm_models(tmp_path: Path) -> None:
    out = run_child(
        """
        import json, timm
        import sifa_hub
        names = timm.list_models("sifa_*") + timm.list_models("c2d_*")
        model = timm.create_model("c2d_resnet_pico", num_classes=2)
        print(json.dumps({"names": names, "classes": model.num_classes, "hf": hasattr(sifa_hub, "hf")}))
        """,
        tmp_path,
    )
    assert {"sifa_resnet50", "sifa_resnet_pico", "sifa_swin_pico", "c2d_swin_tiny_patch4_window7_224"} <= set(
        out["names"]
    )
    assert out["classes"] == 2 and out["hf"] is False


def test_import_registers_transformers_when_available_and_never_imports_av(tmp_path: Path) -> None:
    """With transformers importable, ``import sifa_hub`` registers the Auto* classes; PyAV stays unimported."""
    out = run_child(
        """
        import json, sys
        import sifa_hub
        from transformers import AutoConfig
        config = AutoConfig.for_model("sifa", architecture="sifa_resnet_pico", num_frames=8, image_size=32)
        print(json.dumps({"config": type(config).__name__, "av": sys.modules.get("av") is not None}))
        """,
        tmp_path,
        blocked=("av",),
    )
    assert out == {"config": "SifaConfig", "av": False}
