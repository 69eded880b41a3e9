"""Export safety (issue 14): never delete files the export did not write, recover from killed or crashed exports,
normal permissions; export formats."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
import torch

from sifa_hub import publish
from sifa_hub.utils import io

ARCH = "sifa_resnet_pico"
LABELS = ["left", "right", "up", "down"]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    # the pure-PyTorch operator: these tests are about files, and need no C++ kernel build
    return timm.create_model(ARCH, num_classes=len(LABELS), sifa_backend="torch").eval()


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _export(model: torch.nn.Module, target: Path, labels: list[str] = LABELS) -> Path:
    return Path(publish.export_model(model, target, labels=labels, verify=False))


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every entry under ``folder`` (hidden ones too), files with their bytes, folders and links marked."""
    out: dict[str, bytes] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = b"<link>" if p.is_symlink() else b"<dir>" if p.is_dir() else p.read_bytes()
    return out


def _labels(folder: Path) -> list[str]:
    return json.loads((folder / "config.json").read_text())["label_names"]


def test_foreign_folder_is_refused_and_left_intact(model: torch.nn.Module, tmp_path: Path) -> None:
    """The issue's case: a folder with config.json + model.safetensors and a user's files, no export manifest."""
    target = tmp_path / "mine"
    target.mkdir()
    (target / "config.json").write_text('{"architecture": "resnet50"}')
    (target / "model.safetensors").write_bytes(b"another model")
    (target / "results.csv").write_text("epoch,acc\n1,0.5\n")
    (target / "notes").mkdir()
    (target / "notes" / "todo.md").write_text("keep me")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"not a model export written by sifa_hub \(no \.sifa_hub_export\.json\)"):
        _export(model, target)
    assert _snapshot(tmp_path) == before  # every file intact, no temporary left


def test_own_export_with_foreign_or_changed_files_is_refused(model: torch.nn.Module, tmp_path: Path) -> None:
    target = _export(model, tmp_path / "pico")
    card = target / "README.md"
    original_card = card.read_bytes()
    (target / "notes.txt").write_text("the user's notes")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="files it did not write: notes.txt"):
        _export(model, target, labels=["a", "b", "c", "d"])
    assert _snapshot(tmp_path) == before
    (target / "notes.txt").unlink()

    card.write_text(card.read_text() + "\nA paragraph the user added.\n")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="files changed since the export: README.md"):
        _export(model, target, labels=["a", "b", "c", "d"])
    assert _snapshot(tmp_path) == before

    # an empty folder or a link the user put there is theirs too
    for extra in ("empty_dir", "link"):
        card.write_bytes(original_card)
        shadow = target / extra
        shadow.mkdir() if extra == "empty_dir" else shadow.symlink_to(tmp_path)
        with pytest.raises(ValueError, match=f"files it did not write: {extra}"):
            _export(model, target)
        assert shadow.exists()
        shadow.rmdir() if extra == "empty_dir" else shadow.unlink()


def test_broken_manifest_is_refused(model: torch.nn.Module, tmp_path: Path) -> None:
    target = _export(model, tmp_path / "pico")
    (target / publish.MANIFEST_NAME).write_text("[1, 2")
    with pytest.raises(ValueError, match=r"\.sifa_hub_export\.json: not valid JSON"):
        _export(model, target)
    (target / publish.MANIFEST_NAME).write_text('{"files": ["model.safetensors"]}')
    with pytest.raises(ValueError, match="not a sifa_hub export manifest"):
        _export(model, target)
    (target / publish.MANIFEST_NAME).write_text('{"files": {}}')
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match="files it did not write: README.md, config.json"):
        _export(model, target)
    assert _snapshot(tmp_path) == before


def test_replaces_only_empty_or_own_unchanged_export(model: torch.nn.Module, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _labels(_export(model, empty)) == LABELS

    target = _export(model, tmp_path / "pico")
    manifest = json.loads((target / publish.MANIFEST_NAME).read_text())
    files = {p.name for p in target.iterdir() if p.name != publish.MANIFEST_NAME}
    assert set(manifest["files"]) == files >= {"model.safetensors", "config.json", "README.md", "hubconf.py"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((target / name).read_bytes()).hexdigest() == digest

    torch.hub.load(str(target), "model", source="local")  # may leave __pycache__/hubconf.*.pyc: regenerable
    (target / "__pycache__").mkdir(exist_ok=True)
    (target / "__pycache__" / "hubconf.cpython-312.pyc").write_bytes(b"\x00")
    (target / "model.safetensors").unlink()  # one of our own files removed: nothing foreign, so replaceable
    assert _labels(_export(model, target, labels=["a", "b", "c", "d"])) == ["a", "b", "c", "d"]
    assert not (target / "__pycache__").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "pico"]

    file_target = tmp_path / "a_file"
    file_target.write_text("not a folder")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        _export(model, file_target)
    assert file_target.read_text() == "not a folder"


def test_next_export_removes_temporaries_of_killed_exports(model: torch.nn.Module, tmp_path: Path) -> None:
    target = _export(model, tmp_path / "pico")
    stale_dir = tmp_path / ".pico.tmp-k1ll3d"  # a folder being written when the process was killed
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".pico.tmp-0dd").write_bytes(b"")
    (tmp_path / ".other.tmp-keep").mkdir()  # another path's temporary is not ours to remove
    _export(model, target, labels=["a", "b", "c", "d"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-keep", "pico"]

    # killed between the renames (what the slow test below does for real): the old export aside, the new one
    # complete but not moved in, nothing at the path
    (target / "notes.txt").write_text("written by the user into the old export")
    before = _snapshot(target)
    os.replace(target, tmp_path / ".pico.old-k1ll3d")
    (tmp_path / ".pico.tmp-n3w").mkdir()
    with pytest.raises(ValueError, match="files it did not write: notes.txt"):
        _export(model, target)  # the old export is put back first, so its foreign file still protects it
    assert _snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-keep", "pico"]
    (target / "notes.txt").unlink()
    _export(model, target, labels=["w", "x", "y", "z"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-keep", "pico"]
    assert _labels(target) == ["w", "x", "y", "z"] and _snapshot(target) != before


def test_crash_between_the_renames_keeps_the_previous_export(
    model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _export(model, tmp_path / "pico")
    before = _snapshot(target)
    real_replace = os.replace

    def crash_on_second_rename(src: str, dst: str) -> None:
        if os.fspath(dst) == str(target) and os.path.basename(os.fspath(src)).startswith(".pico.tmp-"):
            raise OSError("injected crash between the renames")
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", crash_on_second_rename)
    with pytest.raises(OSError, match="injected"):
        _export(model, target, labels=["a", "b", "c", "d"])
    assert _snapshot(target) == before  # the previous export is back at the path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pico"]


@pytest.mark.slow  # a fresh interpreter importing torch, timm, transformers: 15-40 s on 2 busy cores
def test_kill_between_the_renames_is_recovered_by_the_next_export(model: torch.nn.Module, tmp_path: Path) -> None:
    """A process killed (``os._exit``) after moving the old export aside and before moving the new one in."""
    target = _export(model, tmp_path / "pico")
    before = _snapshot(target)
    script = """
import os, sys
import timm, torch
from sifa_hub import publish
target = sys.argv[1]
real_replace = os.replace
def replace(src, dst):
    if os.fspath(dst) == target and os.path.basename(os.fspath(src)).startswith(".pico.tmp-"):
        os._exit(9)  # killed: no exception handler, no cleanup
    real_replace(src, dst)
os.replace = replace
torch.manual_seed(1)
model = timm.create_model("sifa_resnet_pico", num_classes=4, sifa_backend="torch")
publish.export_model(model, target, labels=["w", "x", "y", "z"], verify=False)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    done = subprocess.run([sys.executable, "-c", script, str(target)], env=env, capture_output=True, timeout=300)
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "pico" not in left and any(n.startswith(".pico.old-") for n in left), left
    assert any(n.startswith(".pico.tmp-") for n in left), left
    old = next(p for p in tmp_path.iterdir() if p.name.startswith(".pico.old-"))
    assert _snapshot(old) == before  # the previous export survives the kill, aside

    _export(model, target, labels=["a", "b", "c", "d"])  # restores, checks ownership, replaces, cleans
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pico"]
    assert _labels(target) == ["a", "b", "c", "d"]


def test_outputs_have_normal_permissions(model: torch.nn.Module, tmp_path: Path) -> None:
    target = _export(model, tmp_path / "shared" / "pico")
    card = Path(publish.write_model_card(model, tmp_path / "cards" / "pico.md", repo_id="sifa-org/pico"))
    entries = [target, *target.rglob("*"), card]
    for p in entries:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), f"{p}: {oct(mode)}"
    assert stat.S_IMODE(card.parent.stat().st_mode) == 0o755


def test_formats(model: torch.nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown export format\(s\) \['tflite'\]"):
        publish.export_model(model, tmp_path / "a", formats=("safetensors", "tflite"))
    with pytest.raises(ValueError, match="must include 'safetensors'"):
        publish.export_model(model, tmp_path / "a", formats=("onnx",))
    assert list(tmp_path.iterdir()) == []
    out = Path(publish.export_model(model, tmp_path / "b", formats="safetensors", verify=False))
    assert not (out / "model.onnx").exists()


def test_onnx_export_lands_in_the_same_folder(model: torch.nn.Module, tmp_path: Path) -> None:
    pytest.importorskip("sifa_hub.deploy", reason="sifa_hub.deploy (ONNX export) is not on this branch")
    ort = pytest.importorskip("onnxruntime")
    out = Path(publish.export_model(model, tmp_path / "pico", formats=("safetensors", "onnx"), verify=False))
    manifest = json.loads((out / publish.MANIFEST_NAME).read_text())
    assert "model.onnx" in manifest["files"] and "model.safetensors" in manifest["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pico"]
    session = ort.InferenceSession(str(out / "model.onnx"))
    clip = torch.randn(3, 3, model.num_frames, 32, 32)  # (B, C, T, H, W); batch 3: the batch axis is dynamic
    (logits,) = session.run(None, {session.get_inputs()[0].name: clip.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(clip), rtol=1e-4, atol=1e-4)
