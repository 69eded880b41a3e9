"""Deployment exports (sifa_hub.deploy): torch.export programs and ONNX files checked with onnxruntime.

Exporting a pico model takes 40-250 s on two busy cores, so the four-model matrix runs in the slow job; the
default run exports a single SIFA block (same operator path, seconds) and checks refusals and atomicity.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

import sifa_hub  # noqa: F401  (registers the models with timm)
from sifa_hub import deploy
from sifa_hub.deploy import export_onnx, export_program
from sifa_hub.layers import SIFA

MODELS = ["sifa_resnet_pico", "c2d_resnet_pico", "sifa_swin_pico", "c2d_swin_pico"]
TOL = 1e-4


class SifaBlock(nn.Module):
    """A residual SIFA block with learned, non-zero offsets on the fused CPU kernel: the smallest exportable case."""

    in_chans = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.sifa = SIFA(4, backend="cpu")
        nn.init.normal_(self.sifa.conv_offset.weight, std=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sifa(x)  # (B, C, T, H, W)


def make_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name)
    for module in model.modules():
        if isinstance(module, SIFA) and module.conv_offset is not None:
            nn.init.normal_(module.conv_offset.weight, std=0.05)
    return model.eval()


def custom_ops(program: torch.export.ExportedProgram) -> list[str]:
    return [str(n.target) for n in program.graph.nodes if n.op == "call_function" and "sifa_hub" in str(n.target)]


def run_onnx(path: str, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"pixel_values": x.numpy()})
    return torch.from_numpy(out)


def test_block_program_is_portable_and_dynamic_in_batch() -> None:
    block = SifaBlock()
    program = export_program(block, num_frames=3, img_size=(5, 6), dynamic_batch=True)
    assert custom_ops(program) == []  # standard ops only: no sifa_hub kernel in the graph
    assert block.sifa.backend == "cpu" and block.training  # backend and mode restored after the export
    block.eval()
    for batch in (1, 3):
        x = torch.randn(batch, 4, 3, 5, 6)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), block(x), rtol=TOL, atol=TOL)


def test_block_onnx_matches_eager_in_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    block = SifaBlock()
    result = export_onnx(block, tmp_path / "block.onnx", num_frames=3, img_size=5)
    assert result.path == str(tmp_path / "block.onnx") and result.dynamic_batch
    assert result.opset == deploy.DEFAULT_OPSET
    assert result.max_abs_error is not None and result.max_abs_error <= TOL
    assert oct(os.stat(result.path).st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block.onnx"]  # no temporary left
    x = torch.randn(4, 4, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(run_onnx(result.path, x), block(x), rtol=TOL, atol=TOL)
    assert block.sifa.backend == "cpu"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_torchscript_exporter_and_trace_are_refused(tmp_path: Path) -> None:
    block = SifaBlock()
    with pytest.raises(ValueError, match=r"dynamo=False .* silently wrong"):
        export_onnx(block, tmp_path / "a.onnx", num_frames=3, img_size=5, dynamo=False)
    with pytest.raises(ValueError, match="opset must be >= 16"):
        export_onnx(block, tmp_path / "a.onnx", num_frames=3, img_size=5, opset=13)
    with pytest.raises(RuntimeError, match=r"torch\.jit\.trace .* not supported"):
        torch.jit.trace(block, torch.randn(1, 4, 3, 5, 5))
    assert list(tmp_path.iterdir()) == []


def test_failed_verification_leaves_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "block.onnx"
    target.write_bytes(b"previous export")
    written: list[str] = []

    class Program:  # stands in for torch.onnx's ONNXProgram: this test is about the file handling
        def save(self, path: str, external_data: bool) -> None:
            written.append(path)
            Path(path).write_bytes(b"new export")

    def wrong(*args: object) -> float:
        raise RuntimeError("export_onnx: onnxruntime output differs from eager by 1.00e+00 (> 0.0001)")

    monkeypatch.setattr(deploy.torch.onnx, "export", lambda *args, **kwargs: Program())
    monkeypatch.setattr(deploy, "_verify", wrong)
    with pytest.raises(RuntimeError, match="differs from eager"):
        export_onnx(SifaBlock(), target, num_frames=2, img_size=4)
    assert written and Path(written[0]).parent == tmp_path and written[0] != str(target)  # a temporary sibling
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block.onnx"] and target.read_bytes() == b"previous export"
    monkeypatch.setattr(deploy, "_verify", lambda *args: 0.0)
    assert export_onnx(SifaBlock(), target, num_frames=2, img_size=4).max_abs_error == 0.0
    assert target.read_bytes() == b"new export"


def test_example_clip_validates_sizes() -> None:
    block = SifaBlock()
    assert deploy.example_clip(block, 3, (5, 6), batch=2).shape == (2, 4, 3, 5, 6)
    with pytest.raises(ValueError, match="num_frames"):
        deploy.example_clip(block, 0, 5)
    with pytest.raises(ValueError, match="img_size"):
        deploy.example_clip(block, 3, (5, 0))


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_torch_export_of_pico_models(name: str) -> None:
    model = make_model(name)
    program = export_program(model, num_frames=8, img_size=32, dynamic_batch=True)
    assert custom_ops(program) == []
    x = torch.randn(3, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=TOL, atol=TOL)


@pytest.mark.slow
@pytest.mark.parametrize("dynamic_batch", [True, False], ids=["dynamic", "fixed"])
@pytest.mark.parametrize("name", MODELS)
def test_onnx_of_pico_models_matches_eager(name: str, dynamic_batch: bool, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = make_model(name)
    result = export_onnx(model, tmp_path / f"{name}.onnx", num_frames=8, img_size=32, dynamic_batch=dynamic_batch)
    assert result.max_abs_error is not None and result.max_abs_error <= TOL
    x = torch.randn(4 if dynamic_batch else 1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(run_onnx(result.path, x), model(x), rtol=TOL, atol=TOL)
