"""Registration of fused SIFA kernels as torch custom ops (``torch.library``).

Every fused backend provides two plain functions on ``(B, C, T, H, W)`` tensors with ``T >= 2``:

* ``forward(x, offsets, kernel_size, dilation, groups, softmax) -> y`` with ``y[:, :, T-1] = 0``;
* ``backward(grad_y, x, offsets, kernel_size, dilation, groups, softmax, need_offsets) -> (grad_x, grad_offsets)``
  where ``grad_offsets`` is an empty ``(0,)`` tensor when ``offsets`` is ``None`` or ``need_offsets`` is False.

``offsets`` is ``(B, 2K², T-1, H, W)`` (key frames 1..T-1) or ``None``. Inputs may have any layout (permuted,
channels-last, strided views); every output is contiguous, and the fake kernels report exactly that.
:func:`register_fused_op` wraps them as ``sifa_hub::<name>_forward`` / ``sifa_hub::<name>_backward`` with fake
(meta) implementations and autograd, so ``torch.compile`` and ``torch.export`` trace through them as single nodes.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["register_fused_op"]

ForwardFn = Callable[[Tensor, Tensor | None, int, int, int, bool], Tensor]
BackwardFn = Callable[[Tensor, Tensor, Tensor | None, int, int, int, bool, bool], tuple[Tensor, Tensor]]


def register_fused_op(
    name: str, forward: ForwardFn, backward: BackwardFn, device_types: str | Sequence[str] | None
) -> Callable[..., Tensor]:
    """Register ``forward``/``backward`` as differentiable custom ops; returns the forward op.

    Args:
        name: op name prefix in the ``sifa_hub`` namespace.
        forward: the backend's forward function (see module docstring).
        backward: the backend's backward function.
        device_types: devices the kernels accept (``None`` = any).

    Returns:
        ``op(x, offsets, kernel_size, dilation, groups, softmax) -> y``, differentiable in ``x`` and ``offsets``.
    """

    @torch.library.custom_op(f"sifa_hub::{name}_forward", mutates_args=(), device_types=device_types)
    def forward_op(
        x: Tensor, offsets: Tensor | None, kernel_size: int, dilation: int, groups: int, softmax: bool
    ) -> Tensor:
        if x.numel() == 0:  # batch 0 or an empty map: the kernels never see it
            return x.new_zeros(x.shape)
        return forward(x, offsets, kernel_size, dilation, groups, softmax)

    @forward_op.register_fake
    def _(x: Tensor, offsets: Tensor | None, kernel_size: int, dilation: int, groups: int, softmax: bool) -> Tensor:
        return x.new_empty(x.shape)  # contiguous for any input layout, as the kernels' outputs

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
            grad_off = offsets.new_zeros(offsets.shape) if offsets is not None and need_offsets else x.new_empty(0)
            return x.new_zeros(x.shape), grad_off
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
        grad_off = offsets.new_empty(offsets.shape) if offsets is not None and need_offsets else x.new_empty(0)
        return x.new_empty(x.shape), grad_off

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
