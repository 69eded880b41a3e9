"""Fused GPU backend in Triton: forward and backward kernels, registered as torch custom ops.

One program handles a block of ``BLOCK_P`` pixels of one step (query frame t, key frame t+1) and loops over
channel chunks of ``BLOCK_C``: a first pass accumulates the ``(BLOCK_P, K²)`` correlations, a second pass
recomputes the samples and aggregates them, so no K²-fold tensor exists. The key frames are read from a
channels-last copy (a bilinear corner is then one contiguous C-vector); queries, outputs and gradients stay in
``(B, C, T, H, W)``. The backward scatters sample gradients into the key frames with atomic adds (results may
differ in the last bits between runs on a GPU).

``triton`` is imported only when a kernel first runs, so importing :mod:`sifa_hub` never needs it. Setting
``TRITON_INTERPRET=1`` before triton is imported runs the kernels on CPU tensors with Triton's interpreter
(slow; this is how the tests check the kernels without a GPU).
"""

import functools
import importlib.util
import os
from types import SimpleNamespace

import torch
from torch import Tensor

from .custom_ops import register_fused_op

__all__ = ["interpreter_enabled", "sifa_attention_triton", "triton_status"]

_BLOCK_P = 32
_MAX_BLOCK_C = 64


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set (kernels then run on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_status(device: torch.device | str = "cuda") -> tuple[bool, str]:
    """Whether the Triton kernels can run on ``device``, and why (without importing triton)."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device"
        return True, "triton kernels on CUDA"
    if interpreter_enabled():
        return True, "triton interpreter (TRITON_INTERPRET=1) on CPU tensors"
    return False, f"triton kernels need CUDA tensors (got {device.type}; TRITON_INTERPRET=1 runs them on CPU)"


@functools.cache
def _kernels() -> SimpleNamespace:
    """The Triton kernels (imports triton on first call)."""
    import triton
    import triton.language as tl

    from . import triton_kernels

    return SimpleNamespace(
        triton=triton, tl=tl, forward=triton_kernels.sifa_forward_kernel, backward=triton_kernels.sifa_backward_kernel
    )


def _config(x: Tensor, kernel_size: int, dilation: int, groups: int) -> dict:
    kern = _kernels()
    c = x.shape[1]
    cg = c // groups
    return {
        "C": c,
        "H": x.shape[3],
        "W": x.shape[4],
        "T": x.shape[2],
        "CG": cg,
        "G": groups,
        "inv_c": 1.0 / c,
        "scale": c / cg**0.5,
        "K": kernel_size,
        "DIL": dilation,
        "PAD": (dilation * (kernel_size - 1) + 1) // 2,
        "BLOCK_P": _BLOCK_P,
        "BLOCK_C": min(_MAX_BLOCK_C, kern.triton.next_power_of_2(cg)),
        "KK": kern.triton.next_power_of_2(kernel_size * kernel_size),
        "ACC": kern.tl.float64 if x.dtype == torch.float64 else kern.tl.float32,
    }


def _grid(x: Tensor) -> tuple[int, int]:
    b, _, t, h, w = x.shape
    return (h * w + _BLOCK_P - 1) // _BLOCK_P, b * (t - 1)


def _keys(x: Tensor) -> Tensor:
    return x[:, :, 1:].permute(0, 2, 3, 4, 1).contiguous()  # (B, T-1, H, W, C) key frames, channels-last


def _forward(x: Tensor, offsets: Tensor | None, kernel_size: int, dilation: int, groups: int, softmax: bool) -> Tensor:
    x = x.contiguous()
    off = None if offsets is None else offsets.contiguous()
    y = x.new_empty(x.shape)  # contiguous whatever the input layout (the fake says so)
    y[:, :, -1].zero_()
    _kernels().forward[_grid(x)](
        x, _keys(x), x if off is None else off, y, HAS_OFF=off is not None, SOFTMAX=softmax,
        **_config(x, kernel_size, dilation, groups),
    )  # fmt: skip
    return y


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
    x = x.contiguous()
    grad_y = grad_y.to(x.dtype).contiguous()
    off = None if offsets is None else offsets.contiguous()
    keys = _keys(x)
    grad_x = x.new_empty(x.shape)
    grad_x[:, :, -1].zero_()
    grad_keys = torch.zeros_like(keys)
    need_offsets = need_offsets and off is not None
    grad_off = off.new_empty(off.shape) if off is not None and need_offsets else x.new_empty(0)
    _kernels().backward[_grid(x)](
        x, keys, x if off is None else off, grad_y, grad_x, grad_keys, grad_off if need_offsets else x,
        HAS_OFF=off is not None, NEED_OFF=need_offsets, SOFTMAX=softmax, **_config(x, kernel_size, dilation, groups),
    )  # fmt: skip
    grad_x[:, :, 1:] += grad_keys.permute(0, 4, 1, 2, 3)
    return grad_x, grad_off


_triton_op = register_fused_op("triton", _forward, _backward, None)


def sifa_attention_triton(
    x: Tensor, offsets: Tensor | None, kernel_size: int, dilation: int, groups: int, softmax: bool
) -> Tensor:
    """SIFA with the fused Triton kernels (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).

    Args:
        x: ``(B, C, T, H, W)``, float32 or float64, ``T >= 2``.
        offsets: ``(B, 2K², T-1, H, W)`` offsets of the key frames 1..T-1, or ``None`` for zero offsets.
        kernel_size: K.
        dilation: grid dilation.
        groups: correlation groups.
        softmax: softmax over the K² keys (the ``normalize="softmax"`` deviation).

    Returns:
        ``(B, C, T, H, W)``, last frame zero.
    """
    return _triton_op(x, offsets, kernel_size, dilation, groups, softmax)
