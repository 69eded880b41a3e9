"""Fused CPU backend: a C++ kernel (``csrc/sifa_cpu.cpp``) built on first use.

The extension is compiled with ``-O3 -fopenmp``, plus AVX-512 or AVX2/FMA when this CPU has them, by
:mod:`sifa_hub.ops.build`: the build folder is keyed by source, flags, compiler, torch/Python versions and
instruction set (a cache shared between environments or machines never serves a build to one that would compile
something else), one process per machine builds while the others wait, and a build that fails or exceeds
``SIFA_HUB_BUILD_TIMEOUT`` seconds leaves the pure-PyTorch backend in charge, with one warning line. Nothing is
built at import time; ``sifa-hub build-kernels`` (:func:`sifa_hub.ops.build_kernels`) builds ahead of time. The
build needs a C++ compiler and ``ninja``; ninja is looked up on ``PATH`` and next to the running Python (a
virtual environment's ``bin/``, even when it is not activated).

The kernel works on channels-last tensors (``(B, T, H, W, C)``): a ``(B, C, T, H, W)`` input in
``torch.channels_last_3d`` memory format (the layout of SIFA-Net's trunk, and the view
:func:`sifa_hub.ops.sifa_attention_channels_last` hands over for Swin's tokens) costs no copy, and the output
keeps that layout. Other layouts are copied once into it (a tiled transpose), and the output comes back
contiguous (the forward writes it so directly; the backward transposes its results).

Kernels are registered as the custom ops ``sifa_hub::cpu_forward`` / ``sifa_hub::cpu_backward``.
"""

import functools
import logging
import os
import shutil
import sys
import threading
from types import ModuleType

from torch import Tensor

from .build import ExtensionSpec, KernelBuildError, build_extension, import_extension, is_built
from .custom_ops import keeps_channels_last, register_fused_op

__all__ = ["cpu_extension_spec", "cpu_loaded", "cpu_status", "load_extension", "sifa_attention_cpu"]

logger = logging.getLogger(__name__)

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "sifa_cpu.cpp")
_LOCK = threading.Lock()


class _BuildState:
    """The loaded extension and its path, or why it could not be built (all ``None`` before the first try)."""

    module: ModuleType | None = None
    path: str | None = None
    error: str | None = None


_STATE = _BuildState()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def cpu_extension_spec() -> ExtensionSpec:
    """What is compiled for this CPU: sources, flags and the instruction set they target."""
    cflags = ["-O3", "-fopenmp"]
    isa = "generic"
    flags = _cpu_flags()
    if {"avx512f", "avx512vl", "avx2", "fma"} <= flags:
        cflags += ["-mavx512f", "-mavx512vl", "-mavx2", "-mfma", "-mprefer-vector-width=512"]
        isa = "avx512"
    elif {"avx2", "fma"} <= flags:
        cflags += ["-mavx2", "-mfma"]
        isa = "avx2"
    return ExtensionSpec("sifa_cpu", (_SOURCE,), tuple(cflags), ("-fopenmp",), isa)


def _find_build_tools() -> str | None:
    """Put the interpreter's ``bin/`` on ``PATH`` for ninja; return why a build cannot run, or ``None``."""
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = bindir + (os.pathsep + path if path else "")
    if shutil.which("ninja") is None:
        return "ninja not found (pip install ninja)"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx!r} not found)"
    return None


def load_extension() -> ModuleType | None:
    """Build (first call) or load the C++ extension; ``None`` if it cannot be built (see :func:`cpu_status`)."""
    with _LOCK:
        if _STATE.module is not None or _STATE.error is not None:
            return _STATE.module
        spec = cpu_extension_spec()
        try:
            problem = None if is_built(spec) else _find_build_tools()
            if problem is not None:
                raise KernelBuildError(problem)
            path = build_extension(spec)
            _STATE.module, _STATE.path = import_extension(spec.name, path), path
        except (KernelBuildError, ImportError, OSError) as e:
            _STATE.error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            logger.warning(
                "sifa_hub: fused SIFA CPU kernel unavailable (%s); using the pure-PyTorch backend", _STATE.error
            )
        return _STATE.module


def cpu_loaded() -> bool:
    """Whether the C++ extension is loaded (no build attempt, no file system access: safe while tracing)."""
    return _STATE.module is not None


def cpu_status(build: bool = False) -> tuple[bool | None, str]:
    """Whether the fused CPU kernel is usable, and why.

    Args:
        build: build/load the extension now if that was not tried yet.

    Returns:
        ``(True, ...)`` loaded, ``(False, reason)`` unavailable, ``(None, ...)`` not tried yet (and ``build`` False).
    """
    if build:
        load_extension()
    if _STATE.module is not None:
        return True, f"C++ extension loaded from {_STATE.path}"
    if _STATE.error is not None:
        return False, str(_STATE.error)
    spec = cpu_extension_spec()
    if is_built(spec):
        return None, f"C++ extension built in {spec.directory()} (loaded on first use)"
    problem = _find_build_tools()
    if problem is not None:
        return False, problem
    return None, "C++ extension not built yet (built on first use)"


def _extension() -> ModuleType:
    module = load_extension()
    if module is None:
        raise RuntimeError(f"sifa_attention: the fused CPU kernel is unavailable: {_STATE.error}")
    return module


def _channels_last(t: Tensor) -> Tensor:
    """``(B, C, T, H, W)`` → contiguous ``(B, T, H, W, C)``: a view of a channels_last_3d tensor, else one copy."""
    cl = t.permute(0, 2, 3, 4, 1)
    if cl.is_contiguous():
        return cl
    return _extension().transpose_channels(t, True)


def _like(y_cl: Tensor, t: Tensor) -> Tensor:
    """``(B, T, H, W, C)`` result → ``(B, C, T, H, W)`` in ``t``'s layout (:func:`keeps_channels_last`)."""
    if keeps_channels_last(t):
        return y_cl.permute(0, 4, 1, 2, 3)
    return _extension().transpose_channels(y_cl, False)


def _forward(x: Tensor, offsets: Tensor | None, kernel_size: int, dilation: int, groups: int, softmax: bool) -> Tensor:
    off = None if offsets is None else offsets.permute(0, 2, 3, 4, 1)  # a view: the kernel reads any strides
    channels_last = keeps_channels_last(x)
    y = _extension().forward(_channels_last(x), off, kernel_size, dilation, groups, softmax, not channels_last)
    return y.permute(0, 4, 1, 2, 3) if channels_last else y


def _backward(
    grad_y: Tensor,
    x: Tensor,
    offsets: Tensor | None,
    kernel_size: int,
    dilation: int,
    groups: int,
    softmax: bool,
    need_offsets: bool,
) -> tuple[Tensor, Tensor]:
    off = None if offsets is None else offsets.permute(0, 2, 3, 4, 1)  # a view: the kernel reads any strides
    grad_off_cl = offsets is not None and keeps_channels_last(offsets)
    x_cl, grad_y_cl = _channels_last(x), _channels_last(grad_y)
    grad_x, grad_off = _extension().backward(
        grad_y_cl, x_cl, off, kernel_size, dilation, groups, softmax, need_offsets, grad_off_cl
    )
    if grad_off.dim() == 5:  # (B, T-1, H, W, 2K²) view of the layout asked for
        grad_off = grad_off.permute(0, 4, 1, 2, 3)
    return _like(grad_x, x), grad_off


_cpu_op = register_fused_op("cpu", _forward, _backward, "cpu", keep_channels_last=True)


def sifa_attention_cpu(
    x: Tensor, offsets: Tensor | None, kernel_size: int, dilation: int, groups: int, softmax: bool
) -> Tensor:
    """SIFA with the fused C++ kernel (float32/float64 CPU tensors, ``T >= 2``).

    Args:
        x: ``(B, C, T, H, W)``.
        offsets: ``(B, 2K², T-1, H, W)`` offsets of the key frames 1..T-1, or ``None`` for zero offsets.
        kernel_size: K.
        dilation: grid dilation.
        groups: correlation groups.
        softmax: softmax over the K² keys (the ``normalize="softmax"`` deviation).

    Returns:
        ``(B, C, T, H, W)``, last frame zero; ``channels_last_3d`` when ``x`` is (see :func:`keeps_channels_last`),
        contiguous otherwise.
    """
    return _cpu_op(x, offsets, kernel_size, dilation, groups, softmax)
