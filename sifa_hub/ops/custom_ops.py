"""Registration of fused SIFA kernels as torch custom ops (``torch.library``).

Every fused backend provides two plain functions on ``(B, C, T, H, W)`` tensors with ``T >= 2``:

* ``forward(x, offsets, kernel_size, dilation, groups, softmax) -> y`` with ``y[:, :, T-1] = 0``;
* ``backward(grad_y, x, offsets, kernel_size, dilation, groups, softmax, need_offsets) -> (grad_x, grad_offsets)``
  where ``grad_offsets`` is an empty ``(0,)`` tensor when ``offsets`` is ``None`` or ``need_offsets`` is False.

``offsets`` is ``(B, 2K², T-1, H, W)`` (key frames 1..T-1) or ``None``. Inputs may have any layout (permuted,
channels-last, strided views). Outputs are contiguous, or, for a backend registered with
``keep_channels_last=True``, in ``channels_last_3d`` memory format where the input they belong to is
(:func:`keeps_channels_last`: ``y`` and ``grad_x`` follow ``x``, ``grad_offsets`` follows ``offsets``); the fake
kernels report exactly those strides.
:func:`register_fused_op` wraps them as ``sifa_hub::<name>_forward`` / ``sifa_hub::<name>_backward`` with fake
(meta) implementations and autograd, so ``torch.compile`` and ``torch.export`` trace through them as single nodes.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["keeps_channels_last", "register_fused_op"]

ForwardFn = Callable[[Tensor, Tensor | None, int, int, int, bool], Tensor]
BackwardFn = Callable[[Tensor, Tensor, Tensor | None, int, int, int, bool, bool], tuple[Tensor, Tensor]]


def keeps_channels_last(t: Tensor) -> bool:
    """Whether a 5-D tensor is in ``channels_last_3d`` memory format and not also contiguous (a layout-keeping
    backend returns its results for ``t`` in that format; for every other layout they are contiguous)."""
    return t.dim() == 5 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last_3d)


def _empty(t: Tensor, keep_channels_last: bool) -> Tensor:
    channels_last = keep_channels_last and keeps_channels_last(t)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    return torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=memory_format)


def register_fused_op(
    name: str,
    forward: ForwardFn,
    backward: BackwardFn,
    device_types: str | Sequence[str] | None,
    keep_channels_last: bool = False,
) -> Callable[..., Tensor]:
    """Register ``forward``/``backward`` as differentiable custom ops; returns the forward op.

    Args:
        name: op name prefix in the ``sifa_hub`` namespace.
        forward: the backend's forward function (see module docstring).
        backward: the backend's backward function.
        device_types: devices the kernels accept (``None`` = any).
        keep_channels_last: the kernels return ``channels_last_3d`` results for such inputs (see module docstring).

    Returns:
        ``op(x, offsets, kernel_size, dilation, groups, softmax) -> y``, differentiable in ``x`` and ``offsets``.
    """

    @torch.library.custom_op(f"sifa_hub::{name}_forward", mutates_args=(), device_types=device_types)
    def forward_op(
        x: Tensor, offsets: Tensor | None, kernel_size: int, dilation: int, groups: int, softmax: bool
    ) -> Tensor:
        if x.numel() == 0:  # batch 0 or an empty map: the kernels never see it
            return _empty(x, keep_channels_last).zero_()
        return forward(x, offsets, kernel_size, dilation, groups, softmax)

    @forward_op.register_fake
    def _(x: Tensor, offsets: Tensor | None, kernel_size: int, dilation: int, groups: int, softmax: bool) -> Tensor:
        return _empty(x, keep_channels_last)

    @torch.library.custom_op(f"sifa_hub::{name}_backward", mutates_args=(), device_types=device_types)
    def backward_op(
        grad_y: Tensor,
        x: Tensor,
        offsets: Tensor | None,
        kernel_size: int,
        dilation: int,
        groups: int,
        softmax: bool,
        need_offsets: bool,
    ) -> tuple[Tensor, Tensor]:
        if x.numel() == 0:
            grad_off = x.new_empty(0)
            if offsets is not None and need_offsets:
                grad_off = _empty(offsets, keep_channels_last).zero_()
            return _empty(x, keep_channels_last).zero_(), grad_off
        return backward(grad_y, x, offsets, kernel_size, dilation, groups, softmax, need_offsets)

    @backward_op.register_fake
    def _(
        grad_y: Tensor,
        x: Tensor,
        offsets: Tensor | None,
        kernel_size: int,
        dilation: int,
        groups: int,
        softmax: bool,
        need_offsets: bool,
    ) -> tuple[Tensor, Tensor]:
        grad_off = _empty(offsets, keep_channels_last) if offsets is not None and need_offsets else x.new_empty(0)
        return _empty(x, keep_channels_last), grad_off

    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, offsets, kernel_size, dilation, groups, softmax = inputs
        ctx.save_for_backward(x, offsets)
        ctx.config = (kernel_size, dilation, groups, softmax)

    def backward_rule(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, ...]:
        x, offsets = ctx.saved_tensors
        need_offsets = offsets is not None and ctx.needs_input_grad[1]
        grad_x, grad_off = backward_op(grad_y, x, offsets, *ctx.config, need_offsets)
        return grad_x, grad_off if need_offsets else None, None, None, None, None

    forward_op.register_autograd(backward_rule, setup_context=setup_context)
    return forward_op
