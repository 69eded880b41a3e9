"""Deployment outside eager PyTorch: ``torch.export`` programs and ONNX files of sifa_hub models.

Both exports trace the model in eval mode on a ``(B, C, T, H, W)`` example clip. The fused SIFA kernels are
torch custom ops that no ONNX translation exists for, so the exports run with every SIFA module switched to
the exportable pure-PyTorch backend (:func:`sifa_hub.layers.use_sifa_backend`: one ``grid_sample`` per kernel
position, the same results) and switch back afterwards. The exported graphs hold only standard ops.

ONNX goes through ``torch.onnx.export(..., dynamo=True)`` (the exporter built on ``torch.export``) and is checked
with onnxruntime when it is installed. The TorchScript exporter (``dynamo=False``) and ``torch.jit.trace`` are
refused: they write a SIFA model whose outputs are wrong by ~3e-3 without any error.

Usage::

    from sifa_hub.deploy import export_onnx, export_program
    program = export_program(model, num_frames=8, img_size=224)          # torch.export.ExportedProgram
    export_onnx(model, "model.onnx", num_frames=8, img_size=224)         # dynamic batch, verified
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .layers import use_sifa_backend
from .utils.io import atomic_path

__all__ = ["DEFAULT_OPSET", "EXPORT_BACKEND", "OnnxExport", "example_clip", "export_onnx", "export_program"]

DEFAULT_OPSET = 18
EXPORT_BACKEND = "torch"  # the exportable SIFA backend
VERIFY_TOL = 1e-4
_EXAMPLE_BATCH = 2  # batch of the example clip: 0 and 1 would specialise a dynamic batch dimension


@dataclasses.dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Args:
        path: the ``.onnx`` file.
        opset: ONNX opset.
        dynamic_batch: whether the batch dimension is symbolic.
        max_abs_error: largest ``|onnxruntime - eager|`` of the verification, ``None`` when not verified.
    """

    path: str
    opset: int
    dynamic_batch: bool
    max_abs_error: float | None


def _in_chans(model: nn.Module) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    return int(getattr(model, "in_chans", size[0] if size else 3))


def example_clip(model: nn.Module, num_frames: int, img_size: int | tuple[int, int], batch: int = 1) -> torch.Tensor:
    """A random ``(B, C, T, H, W)`` clip for ``model`` on its parameters' device and dtype."""
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if not all(isinstance(v, int) and v > 0 for v in (h, w)):
        raise ValueError(f"img_size must be a positive int or (H, W), got {img_size!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, _in_chans(model), num_frames, h, w, generator=gen).to(device, dtype)


@contextmanager
def _exportable(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and the exportable SIFA backend for the duration; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with use_sifa_backend(model, EXPORT_BACKEND):
            yield model
    finally:
        model.train(was_training)


def _check_eager(model: nn.Module, x: torch.Tensor) -> None:
    """Run ``model`` once in eager mode: a clip it refuses (its own message) or an output that is not one tensor
    (a ``features_only`` model) fails here, not deep inside ``torch.export``."""
    out = model(x)
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"export: {type(model).__name__} returns a {type(out).__name__}, not one (B, N) tensor; export a "
            "classification or pooled-feature model (num_classes=0), not a features_only one"
        )


def _dynamic_shapes(dynamic_batch: bool) -> tuple[dict[int, torch.export.Dim], ...] | None:
    return ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None


def export_program(
    model: nn.Module,
    *,
    num_frames: int,
    img_size: int | tuple[int, int],
    dynamic_batch: bool = True,
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``model`` (eval mode, pure-PyTorch SIFA backend).

    Args:
        model: a sifa_hub model (or any module taking one ``(B, C, T, H, W)`` clip).
        num_frames: T of the clips the program takes.
        img_size: H = W, or ``(H, W)``.
        dynamic_batch: make the batch dimension symbolic (1 to 4096), else fixed to 1.

    Returns:
        The exported program; its graph holds standard ATen ops only.
    """
    x = example_clip(model, num_frames, img_size, _EXAMPLE_BATCH if dynamic_batch else 1)
    with _exportable(model), torch.no_grad():
        _check_eager(model, x)
        return torch.export.export(model, (x,), dynamic_shapes=_dynamic_shapes(dynamic_batch))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    num_frames: int,
    img_size: int | tuple[int, int],
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = True,
    verify: bool = True,
) -> OnnxExport:
    """Write ``model`` as an ONNX file (``torch.onnx.export(dynamo=True)``), atomically, and check it.

    Args:
        model: a sifa_hub model.
        path: the ``.onnx`` file to write (replaced atomically; a failed export leaves no file).
        num_frames: T of the input clip (fixed in the graph).
        img_size: H = W, or ``(H, W)`` (fixed in the graph).
        dynamic_batch: symbolic batch dimension named ``batch``.
        opset: ONNX opset (GridSample needs >= 16).
        dynamo: must be True; the TorchScript exporter is refused (silently wrong for SIFA).
        verify: run the file with onnxruntime, when installed, at the example batch (1 when fixed; 2 and 3 when
            dynamic) and require ``|onnx - eager| <= 1e-4``.

    Returns:
        :class:`OnnxExport` describing the file and the verification.

    Raises:
        ValueError: ``dynamo=False``, ``opset < 16``, ``path`` a directory, or a clip the model refuses.
        TypeError: the model does not return one tensor (a ``features_only`` model).
        RuntimeError: the onnxruntime outputs differ from eager by more than 1e-4.
    """
    if not dynamo:
        raise ValueError(
            "export_onnx: dynamo=False (the TorchScript ONNX exporter) is refused: its SIFA graph is silently "
            "wrong by ~3e-3; use dynamo=True (the default)"
        )
    if opset < 16:
        raise ValueError(f"export_onnx: opset must be >= 16 (ONNX GridSample), got {opset}")
    if os.path.isdir(path):
        raise ValueError(f"export_onnx: {os.fspath(path)!r} is a directory; pass the .onnx file to write")
    x = example_clip(model, num_frames, img_size, _EXAMPLE_BATCH if dynamic_batch else 1)
    with _exportable(model), torch.no_grad():
        _check_eager(model, x)
        program = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            opset_version=opset,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes=_dynamic_shapes(dynamic_batch),
            external_data=False,
        )
        assert program is not None  # dynamo=True always returns the program
        with atomic_path(path) as tmp:
            program.save(tmp, external_data=False)
            error = _verify(model, tmp, x, dynamic_batch) if verify else None
    return OnnxExport(os.path.abspath(os.fspath(path)), opset, dynamic_batch, error)


def _verify(model: nn.Module, onnx_path: str, x: torch.Tensor, dynamic_batch: bool) -> float | None:
    """Largest ``|onnxruntime - eager|`` over the checked batches; ``None`` without onnxruntime."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    batches = [x] if not dynamic_batch else [x, torch.cat([x, x[:1].flip(2)])]  # the example, and one more clip
    worst = 0.0
    for clip in batches:
        want = model(clip).float().cpu().numpy()
        (got,) = session.run(None, {"pixel_values": clip.float().cpu().numpy()})
        if got.shape != want.shape:
            raise RuntimeError(f"export_onnx: ONNX output shape {got.shape} differs from eager {want.shape}")
        worst = max(worst, float(abs(got - want).max()))
    if worst > VERIFY_TOL:
        raise RuntimeError(f"export_onnx: onnxruntime output differs from eager by {worst:.2e} (> {VERIFY_TOL})")
    return worst
