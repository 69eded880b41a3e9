"""Fused CPU backend: a C++ kernel (``csrc/sifa_cpu.cpp``) built on first use.

The extension is compiled with ``torch.utils.cpp_extension.load`` (``-O3 -fopenmp``, plus AVX-512 or AVX2/FMA
when this CPU has them; the instruction set is part of the extension's name, so a cache shared between
machines never serves a build to a CPU that cannot run it) and cached under ``TORCH_EXTENSIONS_DIR``. Nothing
is built at import time. The build needs a C++ compiler and ``ninja``; ninja is looked up on ``PATH`` and
next to the running Python (a virtual environment's ``bin/``, even when it is not activated).

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

from .custom_ops import register_fused_op

__all__ = ["cpu_loaded", "cpu_status", "load_extension", "sifa_attention_cpu"]

logger = logging.getLogger(__name__)

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "sifa_cpu.cpp")
_LOCK = threading.Lock()


class _BuildState:
    """The loaded extension, or why it could not be built (``None``, ``None`` before the first try)."""

    module: ModuleType | None = None
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
def _build_config() -> tuple[str, list[str]]:
    """Extension name and compiler flags for this CPU."""
    cflags = ["-O3", "-fopenmp"]
    name = "sifa_hub_cpu_v1"
    flags = _cpu_flags()
    if {"avx512f", "avx512vl", "avx2", "fma"} <= flags:
        cflags += ["-mavx512f", "-mavx512vl", "-mavx2", "-mfma", "-mprefer-vector-width=512"]
        name += "_avx512"
    elif {"avx2", "fma"} <= flags:
        cflags += ["-mavx2", "-mfma"]
        name += "_avx2"
    return name, cflags


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
        problem = _find_build_tools()
        if problem is not None:
            _STATE.error = problem
            return None
        from torch.utils.cpp_extension import load

        name, cflags = _build_config()
        try:
            _STATE.module = load(
                name=name, sources=[_SOURCE], extra_cflags=cflags, extra_ldflags=["-fopenmp"], verbose=False
            )
        except Exception as e:  # compiler errors, missing headers, ...: fall back, remember why
            lines = str(e).strip().splitlines() or [""]
            first_error = next((line for line in lines if "error" in line), lines[-1])
            _STATE.error = f"build failed: {type(e).__name__}: {first_error.strip()[:300]}"
            logger.warning("sifa_hub: fused CPU kernel unavailable (%s)", _STATE.error)
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
        return True, f"C++ extension {_build_config()[0]} loaded"
    if _STATE.error is not None:
        return False, str(_STATE.error)
    problem = _find_build_tools()
    if problem is not None:
        return False, problem
    return None, "C++ extension not built yet (built on first use)"


def _extension() -> ModuleType:
    module = load_extension()
    if module is None:
        raise RuntimeError(f"sifa_attention: the fused CPU kernel is unavailable: {_STATE.error}")
    return module


def _forward(x: Tensor, offsets: Tensor | None, kernel_size: int, dilation: int, groups: int, softmax: bool) -> Tensor:
    return _extension().forward(x, offsets, kernel_size, dilation, groups, softmax)


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
    grad_x, grad_off = _extension().backward(grad_y, x, offsets, kernel_size, dilation, groups, softmax, need_offsets)
    return grad_x, grad_off


_cpu_op = register_fused_op("cpu", _forward, _backward, "cpu")


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
        ``(B, C, T, H, W)``, last frame zero.
    """
    return _cpu_op(x, offsets, kernel_size, dilation, groups, softmax)
