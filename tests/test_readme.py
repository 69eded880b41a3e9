"""The README's Python snippets run as written (each in a fresh temporary working directory)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _section(block: str) -> str:
    text = README.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text[: text.index(block)], flags=re.M)
    return headings[-1]


def test_readme_has_the_three_library_sections() -> None:
    sections = {_section(block) for block in _python_blocks()}
    assert {"Use with timm", "Use with torch.hub", "Use with transformers"} <= sections


@pytest.mark.parametrize("block", _python_blocks(), ids=_section)
def test_readme_snippet_runs(block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if 'torch.hub.load("."' in block:  # torch.hub snippets run from a clone's root: give them one
        shutil.copy(ROOT / "hubconf.py", tmp_path / "hubconf.py")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(block, f"README.md ({_section(block)})", "exec"), namespace)
    CHECKS[_section(block)](namespace)


def _check_timm(ns: dict) -> None:
    assert ns["log_probs"].shape == (2, 5)
    assert ns["loss"].ndim == 0 and bool(ns["loss"].isfinite())


def _check_hub(ns: dict) -> None:
    assert ns["model"].num_classes == 5


def _check_transformers(ns: dict) -> None:
    assert ns["probs"].shape == (1, 2)
    assert type(ns["model"]).__name__ == "SifaForVideoClassification"
    assert Path("sifa-pico/model.safetensors").is_file() and Path("clip.mp4").is_file()


CHECKS = {"Use with timm": _check_timm, "Use with torch.hub": _check_hub, "Use with transformers": _check_transformers}
