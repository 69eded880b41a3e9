"""FLOP counting for SIFA models: ``torch.utils.flop_counter`` plus analytic formulas for the SIFA operator.

Used by the benchmarks and by model cards (GMACs). 2 FLOPs per multiply-add.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["count_flops", "flop_counter", "instrument_sifa", "sifa_op_flops"]


def sifa_op_flops(shape: Sequence[int], kernel_size: int) -> int:
    """Analytic FLOPs (2 per multiply-add) of one SIFA operator call on features of ``shape``.

    Each of the ``B·(T-1)·H·W`` query positions (the last frame has no next frame; its output is zero) meets
    ``K²`` keys; per key: bilinear sampling 4 corners × C MACs, correlation C MACs, aggregation C MACs.

    Args:
        shape: ``(B, C, T, H, W)`` of the operator's input.
        kernel_size: K.
    """
    b, c, t, h, w = shape
    return 2 * b * max(t - 1, 0) * h * w * kernel_size * kernel_size * 6 * c


@contextlib.contextmanager
def instrument_sifa(on_call: Callable[[Callable[..., torch.Tensor], tuple, dict], torch.Tensor]) -> Iterator[None]:
    """Route every call of ``sifa_hub.ops.sifa_attention`` made by ``sifa_hub`` modules through ``on_call``.

    The public function is looked up by name in every loaded ``sifa_hub`` module (models call it through
    :class:`sifa_hub.layers.SIFA` or directly) and restored on exit; nothing is changed on disk.
    """
    import sifa_hub.ops

    original = sifa_hub.ops.sifa_attention

    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        return on_call(original, args, kwargs)

    patched = [
        m
        for name, m in list(sys.modules.items())
        if (name == "sifa_hub" or name.startswith("sifa_hub.")) and getattr(m, "sifa_attention", None) is original
    ]
    for m in patched:
        setattr(m, "sifa_attention", wrapper)  # noqa: B010  (module attribute patched for counting)
    try:
        yield
    finally:
        for m in patched:
            setattr(m, "sifa_attention", original)  # noqa: B010


def _sifa_custom_op_flops(
    x_shape: Sequence[int], offsets_shape: Any, kernel_size: int, *args: Any, **kwargs: Any
) -> int:
    """``FlopCounterMode`` formula of the fused ``sifa_hub::*_forward`` custom ops (tensor args arrive as shapes)."""
    return sifa_op_flops(x_shape, kernel_size)


def _sdpa_flops(
    query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    """FLOPs of an SDPA call that ``FlopCounterMode`` has no formula for (its CPU kernels)."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> torch.utils.flop_counter.FlopCounterMode:
    """A ``FlopCounterMode`` that also counts the SIFA custom ops and scaled-dot-product attention on CPU.

    Added formulas (torch 2.14 has none for these): the fused SIFA forward ops registered with ``torch.library``
    (``sifa_hub::<backend>_forward``) get :func:`sifa_op_flops`; ``aten._scaled_dot_product_flash_attention_for_cpu``
    (what SDPA runs on CPU) and ``aten.scaled_dot_product_attention`` (what an inference-mode call dispatches as
    a whole) get torch's own SDPA formula. ``custom_mapping`` is keyed by op packet, as the counter looks ops up.
    """
    from torch.utils.flop_counter import FlopCounterMode

    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("sifa_hub::") and n.endswith("_forward")]
    mapping: dict[Any, Callable[..., int]] = {
        getattr(torch.ops.sifa_hub, n.split("::", 1)[1]): _sifa_custom_op_flops for n in names
    }
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "scaled_dot_product_attention"):
        if hasattr(torch.ops.aten, name):
            mapping[getattr(torch.ops.aten, name)] = _sdpa_flops
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """FLOPs of one forward of ``model`` on ``x``: ``(total, of which the SIFA operator)``.

    ``FlopCounterMode`` counts the aten ops that have a formula (convolutions, matmuls, attention). The fused
    SIFA backends are ``torch.library`` custom ops and get :func:`sifa_op_flops` through the counter's
    ``custom_mapping``; the pure-PyTorch backends run aten ops without formulas (``grid_sample``, elementwise).
    To count every backend alike, whatever the counter saw inside each :func:`sifa_hub.ops.sifa_attention` call is
    replaced by :func:`sifa_op_flops` of its input. SDPA on CPU is counted too (see :func:`flop_counter`).
    """
    counter = flop_counter()
    sifa = {"analytic": 0, "counted": 0}
    signature: inspect.Signature | None = None

    def on_call(op: Callable[..., torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
        nonlocal signature
        signature = signature or inspect.signature(op)
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        before = counter.get_total_flops()
        y = op(*args, **kwargs)
        sifa["counted"] += counter.get_total_flops() - before
        sifa["analytic"] += sifa_op_flops(bound.arguments["x"].shape, bound.arguments["kernel_size"])
        return y

    with instrument_sifa(on_call), counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() - sifa["counted"] + sifa["analytic"], sifa["analytic"]
