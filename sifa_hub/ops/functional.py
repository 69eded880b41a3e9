"""Functional SIFA API: validates inputs and dispatches to a backend.

Backends (``backend=``):
    ``"reference"``  the spec step by step (test oracle, slow, materialises all K² samples).
    ``"torch"``      pure PyTorch, one ``grid_sample`` per kernel position, samples recomputed in backward
                     (:mod:`sifa_hub.ops.torch_backend`); runs on any device.
    ``"cpu"``        fused C++ kernel built on first use (:mod:`sifa_hub.ops.cpu`), CPU tensors.
    ``"triton"``     fused Triton kernels (:mod:`sifa_hub.ops.triton_backend`), CUDA tensors (or CPU tensors
                     under ``TRITON_INTERPRET=1``).
    ``"auto"``       CUDA: ``triton`` if importable, else ``torch``; CPU: ``cpu`` if the C++ kernel builds, else
                     ``torch``. :func:`selected_backend` says which one runs and why; the choice is logged once
                     per device type. Under ``torch.compile`` (no build while tracing) CPU inputs use the C++
                     kernel if it is already loaded: run the model once eagerly or call
                     ``selected_backend("cpu")`` before compiling.

Every backend supports ``normalize="softmax"``.

Half-precision inputs (``float16``/``bfloat16``, e.g. under autocast) are computed in ``float32`` and the
result is cast back to the input dtype.
"""

from __future__ import annotations

import logging
import math

import torch

from .cpu import cpu_loaded, cpu_status, sifa_attention_cpu
from .reference import sifa_attention_reference
from .torch_backend import sifa_attention_torch
from .triton_backend import sifa_attention_triton, triton_status

__all__ = [
    "BACKENDS",
    "NORMALIZE_MODES",
    "available_backends",
    "build_kernels",
    "selected_backend",
    "sifa_attention",
    "sifa_attention_channels_last",
    "validate_sifa_inputs",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "reference", "torch", "cpu", "triton")
NORMALIZE_MODES = (None, "softmax")


def validate_sifa_inputs(
    x: torch.Tensor,
    offsets: torch.Tensor | None,
    kernel_size: int,
    dilation: int,
    groups: int,
    normalize: str | None,
) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first problem with the operator's inputs."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"sifa_attention: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(f"sifa_attention: x must be (B, C, T, H, W) (5-D), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"sifa_attention: x must be a floating point tensor, got dtype {x.dtype}")
    if not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"sifa_attention: kernel_size must be a positive int, got {kernel_size!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"sifa_attention: dilation must be a positive int, got {dilation!r}")
    b, c, t, h, w = x.shape
    if not isinstance(groups, int) or groups < 1 or c % groups:
        raise ValueError(f"sifa_attention: channels ({c}) must be divisible by groups ({groups!r})")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"sifa_attention: normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if offsets is None:
        return
    if not isinstance(offsets, torch.Tensor):
        raise TypeError(f"sifa_attention: offsets must be a torch.Tensor or None, got {type(offsets).__name__}")
    k2 = 2 * kernel_size * kernel_size
    if offsets.dim() != 5 or offsets.shape[:2] != (b, k2) or offsets.shape[3:] != (h, w):
        raise ValueError(
            f"sifa_attention: offsets must be (B, 2K², T, H, W) = ({b}, {k2}, {t}, {h}, {w}) for x of shape "
            f"{tuple(x.shape)} and kernel_size={kernel_size}, got {tuple(offsets.shape)}"
        )
    if offsets.shape[2] not in (t, max(t - 1, 1)):
        raise ValueError(
            f"sifa_attention: offsets must cover T={t} frames (or T-1={t - 1} key frames), got {offsets.shape[2]}"
        )
    if offsets.dtype != x.dtype:
        raise TypeError(f"sifa_attention: offsets dtype {offsets.dtype} does not match x dtype {x.dtype}")
    if offsets.device != x.device:
        raise ValueError(f"sifa_attention: offsets are on {offsets.device} but x is on {x.device}")
    # One reduction: a sum is finite exactly when no element is NaN/Inf (barring overflow, then checked exactly).
    if (
        not torch.compiler.is_compiling()
        and not math.isfinite(offsets.sum().item())
        and not bool(torch.isfinite(offsets).all())
    ):
        raise ValueError(
            "sifa_attention: the sampling offsets contain NaN or Inf (offsets predicted from features come out "
            "non-finite when the input clip or the offset predictor's weights contain NaN/Inf)"
        )


def available_backends(device: torch.device | str = "cpu", build: bool = True) -> dict[str, tuple[bool, str]]:
    """Which backends can run on ``device``, each with the reason.

    Args:
        device: device of the inputs.
        build: build the C++ extension now if that was not tried yet (otherwise its entry may say
            "not built yet", reported as available).

    Returns:
        ``{name: (usable, reason)}`` for every backend except ``"auto"``.
    """
    device = torch.device(device)
    status = {
        "reference": (True, "pure PyTorch reference (slow)"),
        "torch": (True, "pure PyTorch, per-kernel-position grid_sample"),
    }
    if device.type == "cpu":
        ok, why = cpu_status(build=build)
        status["cpu"] = (ok is not False, why)
    else:
        status["cpu"] = (False, f"the C++ kernel runs on CPU tensors, not {device.type}")
    status["triton"] = triton_status(device)
    return status


def build_kernels() -> dict[str, str]:
    """Build every compiled kernel this machine can build now (what ``sifa-hub build-kernels`` runs).

    Returns:
        ``{backend: status}``: ``"cpu"`` gives the loaded library's path or why it is unavailable; ``"triton"``
        says whether the Triton kernels can run (they are compiled per shape by Triton at first use on a GPU).
    """
    ok, why = cpu_status(build=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    triton_ok, triton_why = triton_status(device)
    return {
        "cpu": why if ok else f"unavailable: {why}",
        "triton": triton_why if triton_ok else f"unavailable: {triton_why}",
    }


_LOGGED: set[str] = set()


def selected_backend(device: torch.device | str = "cpu") -> tuple[str, str]:
    """The backend ``backend="auto"`` runs for inputs on ``device``, and why (builds the C++ kernel if needed)."""
    device = torch.device(device)
    if device.type == "cuda":
        ok, why = triton_status(device)
        return ("triton", why) if ok else ("torch", f"fallback: {why}")
    if device.type == "cpu":
        loaded, why = cpu_status(build=True)
        return ("cpu", why) if loaded else ("torch", f"fallback: fused CPU kernel unavailable ({why})")
    return "torch", f"no fused kernel for {device.type} tensors"


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend == "auto":
        if torch.compiler.is_compiling():  # no file system look-ups while tracing: use what is already loaded
            if device.type == "cuda":
                return "triton"
            return "cpu" if device.type == "cpu" and cpu_loaded() else "torch"
        name, why = selected_backend(device)
        if device.type not in _LOGGED:
            _LOGGED.add(device.type)
            logger.info("sifa_attention on %s: backend %r (%s)", device.type, name, why)
        return name
    if torch.compiler.is_compiling():  # a forced backend is checked by its first eager call, not while tracing
        return backend
    if backend in ("cpu", "triton"):
        ok, why = available_backends(device, build=False)[backend]
        if not ok:
            raise ValueError(f"sifa_attention: backend {backend!r} cannot run on {device.type} tensors: {why}")
    return backend


def _empty_output(x: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
    """The output ``(B, C, T, H, W)`` for an input without elements, differentiable (zero gradients)."""
    y = x * 0
    return y if offsets is None else y + offsets.sum().to(y.dtype) * 0


_IMPLS = {"torch": sifa_attention_torch, "cpu": sifa_attention_cpu, "triton": sifa_attention_triton}


def sifa_attention(
    x: torch.Tensor,
    offsets: torch.Tensor | None = None,
    kernel_size: int = 3,
    dilation: int = 1,
    groups: int = 1,
    normalize: str | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Stand-alone inter-frame attention (SIFA), temporally aligned.

    For every position ``p`` of frame ``t`` (the query), K×K keys of frame ``t+1`` are sampled bilinearly at
    ``p + grid + offsets``; ``corr_k = (1/C) Σ_c q_c · key_kc`` weights the same samples as values.

    Args:
        x: ``(B, C, T, H, W)`` features; queries, keys and values are all ``x``.
        offsets: ``(B, 2K², T, H, W)`` deformable offsets of the key frames (frame 0's are unused), or
            ``(B, 2K², T-1, H, W)`` for frames 1..T-1, or ``None`` for fixed zero offsets.
        kernel_size: K, the side of the sampled neighbourhood.
        dilation: spacing of the K×K grid.
        groups: correlation groups; channel ``c`` is weighted by its group's correlation.
        normalize: ``None`` = reference mode (official kernel: no softmax); ``"softmax"`` = softmax over the
            K² keys with temperature ``1/sqrt(C/G)`` (paper-style, a deviation from the released code).
        backend: one of :data:`BACKENDS` (see the module docstring).

    Returns:
        ``(B, C, T, H, W)``: frame ``t`` holds the aggregation of frame ``t+1``; the last frame is zero.
    """
    validate_sifa_inputs(x, offsets, kernel_size, dilation, groups, normalize)
    if backend not in BACKENDS:
        raise ValueError(f"sifa_attention: backend must be one of {BACKENDS}, got {backend!r}")
    b, _, t, h, w = x.shape
    if x.numel() == 0:  # batch 0, an empty map or no channels: nothing to attend to, in every backend
        return _empty_output(x, offsets)
    if backend == "reference":
        if offsets is None:
            offsets = x.new_zeros(b, 2 * kernel_size * kernel_size, max(t - 1, 1), h, w)
        return sifa_attention_reference(x, offsets, kernel_size, dilation, groups, normalize)
    if t == 1:
        return torch.zeros_like(x)
    if offsets is not None and offsets.shape[2] == t:
        offsets = offsets[:, :, 1:]  # frame 0's offsets are unused
    impl = _IMPLS[_resolve_backend(backend, x.device)]
    in_dtype = x.dtype
    if in_dtype not in (torch.float32, torch.float64):  # half precision (autocast): compute in float32
        x = x.float()
        offsets = None if offsets is None else offsets.float()
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            y = impl(x, offsets, kernel_size, dilation, groups, normalize == "softmax")
    else:
        y = impl(x, offsets, kernel_size, dilation, groups, normalize == "softmax")
    return y.to(in_dtype)


def sifa_attention_channels_last(
    x: torch.Tensor,
    offsets: torch.Tensor | None = None,
    kernel_size: int = 3,
    dilation: int = 1,
    groups: int = 1,
    normalize: str | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """:func:`sifa_attention` on channels-last tokens: ``(B, T, H, W, C)`` in, ``(B, T, H, W, C)`` out.

    The entry for models whose features are channels-last (Swin tokens). It hands the operator the
    ``(B, C, T, H, W)`` view of ``x`` (``channels_last_3d`` strides); the fused CPU kernel works on that layout in
    place and returns the same layout, so a contiguous ``x`` costs no copy in or out.

    Args:
        x: ``(B, T, H, W, C)`` features.
        offsets: ``(B, T, H, W, 2K²)`` or ``(B, T-1, H, W, 2K²)`` offsets of the key frames (channel ``2k`` rows,
            ``2k + 1`` columns, as in :func:`sifa_attention`), or ``None`` for zero offsets.
        kernel_size, dilation, groups, normalize, backend: as in :func:`sifa_attention`.

    Returns:
        ``(B, T, H, W, C)``: frame ``t`` holds the aggregation of frame ``t+1``; the last frame is zero.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"sifa_attention_channels_last: x must be (B, T, H, W, C) (5-D), got {shape}")
    if offsets is not None and isinstance(offsets, torch.Tensor) and offsets.dim() == 5:
        offsets = offsets.permute(0, 4, 1, 2, 3)
    y = sifa_attention(x.permute(0, 4, 1, 2, 3), offsets, kernel_size, dilation, groups, normalize, backend)
    return y.permute(0, 2, 3, 4, 1)
