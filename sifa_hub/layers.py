"""The SIFA module (offset prediction + the SIFA operator, for ``(B, C, T, H, W)`` features) and
:class:`FrameConv3d`, the ``(1, k, k)`` convolution both SIFA-Net and the SIFA offset convs run frame by frame.

Both model families (SIFA-Net and SIFA-Transformer) use this module; it returns the aligned aggregation
``y`` and leaves the residual (``x + y`` or ``x + LN(y)``) to the caller, as in the official blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .ops import BACKENDS, sifa_attention

__all__ = ["SIFA", "FrameConv3d", "offset_input", "use_sifa_backend"]

_TRACE_REFUSED = (
    "SIFA: torch.jit.trace (and the TorchScript ONNX exporter, torch.onnx.export(dynamo=False)) is not supported: "
    "it records a graph that is silently wrong by ~3e-3; use torch.export.export or torch.onnx.export(dynamo=True) "
    "(sifa_hub.deploy.export_program / export_onnx)"
)


class FrameConv3d(nn.Conv3d):
    """``nn.Conv3d`` with a ``(1, k, k)`` kernel, computed as ``F.conv2d`` on the frames where that is faster.

    Parameters, state-dict keys and results are those of ``nn.Conv3d`` (it is one: ``isinstance`` checks and
    checkpoints are unaffected). PyTorch's CPU backend runs most batch-1 ``Conv3d`` as im2col + GEMM
    (``slow_conv3d``); the 2D conv of the ``B·T`` frames runs with oneDNN, 1.3-3x faster for the 3x3 kernels on
    large maps. On a ``channels_last_3d`` input, physically ``(B, T, H, W, C)``, the frames ``(B·T, C, H, W)``
    are a channels-last view (oneDNN's native layout) and the output is ``channels_last_3d`` again: no copy in
    or out (a channels-first input costs one copy).

    oneDNN re-lays out the weight on every call, which small maps do not amortise (a 512-channel 3x3 conv on
    ``2·2`` pixels per frame takes 3x longer than ``slow_conv3d``): below :attr:`min_frame_pixels` output pixels
    per clip (``T·H'·W'``, the batch is left out so that a traced batch dimension stays symbolic) and for a
    kernel, stride, dilation or padding along time the module runs as ``nn.Conv3d`` (channels-first output).
    """

    #: output pixels per clip (``T·H'·W'``) from which the conv runs frame-wise; measured on a 2-core CPU, the
    #: crossover of the R50 and pico convs lies between 64 and 256 (sifa_resnet50 at 224: layer4 has 4·7·7)
    min_frame_pixels: int = 256

    def _frame_wise(self, x: torch.Tensor) -> bool:
        """Whether ``x`` ``(B, C, T, H, W)`` is convolved frame by frame (see the class docstring)."""
        padding = self.padding
        if x.dim() != 5 or self.padding_mode != "zeros" or isinstance(padding, str):
            return False
        (kt, kh, kw), (st, sh, sw), (dt, dh, dw) = self.kernel_size, self.stride, self.dilation
        if kt != 1 or st != 1 or dt != 1 or padding[0] != 0:
            return False
        h_out = (x.shape[3] + 2 * padding[1] - dh * (kh - 1) - 1) // sh + 1
        w_out = (x.shape[4] + 2 * padding[2] - dw * (kw - 1) - 1) // sw + 1
        return x.shape[2] * h_out * w_out >= self.min_frame_pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, out_channels, T', H', W')``."""
        if not self._frame_wise(x):
            return super().forward(x)
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # a view for a channels_last_3d x
        out = F.conv2d(
            frames,
            self.weight.squeeze(2),
            self.bias,
            self.stride[1:],
            self.padding[1:],
            self.dilation[1:],
            self.groups,
        )  # (B·T, C', H', W')
        return out.view(b, t, out.shape[1], out.shape[2], out.shape[3]).transpose(1, 2)  # (B, C', T, H', W')


def offset_input(x: torch.Tensor) -> torch.Tensor:
    """Difference-rescaled input of the offset conv for the key frames 1..T-1.

    ``z[t] = sigmoid(x[t] - x[t-1]) · x[t] + x[t]``.

    Args:
        x: ``(B, C, T, H, W)`` with ``T >= 2``.

    Returns:
        ``(B, C, T-1, H, W)``.
    """
    cur, prev = x[:, :, 1:], x[:, :, :-1]
    return torch.addcmul(cur, torch.sigmoid(cur - prev), cur)  # three passes over the maps instead of four


class SIFA(nn.Module):
    """Stand-alone inter-frame attention with deformable offsets.

    Args:
        channels: C of the input.
        kernel_size: K (3 in every released config).
        dilation: dilation of the K×K sampling grid.
        groups: correlation groups (1 in every released config).
        learn_offsets: predict offsets with a zero-initialised ``(1, 3, 3)`` conv (SIFA-Net, the paper); when
            False, offsets are fixed to zero (SIFA-Transformer as released).
        normalize: ``None`` (reference mode) or ``"softmax"`` (see :func:`sifa_hub.ops.sifa_attention`).
        backend: operator backend, ``"auto"`` picks the fastest available.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        dilation: int = 1,
        groups: int = 1,
        learn_offsets: bool = True,
        normalize: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"SIFA: channels ({channels}) must be divisible by groups ({groups})")
        self.channels = channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.groups = groups
        self.normalize = normalize
        self.backend = backend
        self.conv_offset: FrameConv3d | None = None
        if learn_offsets:
            self.conv_offset = FrameConv3d(
                channels, 2 * kernel_size * kernel_size, (1, 3, 3), padding=(0, 1, 1), bias=False
            )
            # Its weight is small (2K² outputs), so oneDNN's per-call weight re-layout never outweighs the 2D
            # conv's gain: frame-wise on every map (C512@7², T 4: 0.6 ms against 1.4 ms as Conv3d, one thread).
            self.conv_offset.min_frame_pixels = 0
            nn.init.zeros_(self.conv_offset.weight)

    @property
    def learn_offsets(self) -> bool:
        return self.conv_offset is not None

    def compute_offsets(self, x: torch.Tensor) -> torch.Tensor | None:
        """Offsets ``(B, 2K², T-1, H, W)`` of the key frames 1..T-1, or ``None`` when fixed to zero (or ``x`` is
        empty: batch 0 or an empty map, where a conv cannot run and there is nothing to sample)."""
        if self.conv_offset is None or x.shape[2] < 2 or x.numel() == 0:
            return None
        return self.conv_offset(offset_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, C, T, H, W)``: frame t attends to frame t+1; the last frame is zero."""
        if torch.jit.is_tracing():
            raise RuntimeError(_TRACE_REFUSED)
        if x.dim() != 5 or x.shape[1] != self.channels:
            raise ValueError(f"SIFA expects (B, C={self.channels}, T, H, W) features, got shape {tuple(x.shape)}")
        # Inference shortcut: an all-zero offset conv (fresh init) predicts zero offsets, so skip it and let the
        # op take its integer-position path. Only without autograd (the conv weight's gradient is not zero).
        zero_offsets = (
            self.conv_offset is not None
            and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and not bool(self.conv_offset.weight.any())
        )
        offsets = None if zero_offsets else self.compute_offsets(x)
        if offsets is not None:
            offsets = offsets.to(x.dtype)  # under autocast the conv may return a lower precision
        return sifa_attention(
            x,
            offsets,
            kernel_size=self.kernel_size,
            dilation=self.dilation,
            groups=self.groups,
            normalize=self.normalize,
            backend=self.backend,
        )

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, H, W, C)`` → ``(B, T, H, W, C)`` (channels-last tokens, e.g. Swin's), same result as
        :meth:`forward`. The operator gets the ``(B, C, T, H, W)`` view and keeps its layout: no copies."""
        if x.dim() != 5 or x.shape[-1] != self.channels:
            raise ValueError(f"SIFA expects (B, T, H, W, C={self.channels}) tokens, got shape {tuple(x.shape)}")
        return self(x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, dilation={self.dilation}, groups={self.groups}, "
            f"learn_offsets={self.learn_offsets}, normalize={self.normalize}"
        )


@contextlib.contextmanager
def use_sifa_backend(model: nn.Module, backend: str) -> Iterator[nn.Module]:
    """Run every :class:`SIFA` module of ``model`` with the operator ``backend`` for the duration.

    The fused kernels are torch custom ops that exporters cannot translate (ONNX) or that tie a program to
    ``sifa_hub`` and one device (``torch.export``); ``use_sifa_backend(model, "torch")`` selects the exportable
    pure-PyTorch path (standard ``grid_sample`` ops, same results), like transformers' ``disable_custom_kernels``.
    The previous backends are restored on exit, also after an error.

    Args:
        model: any module; its SIFA modules are switched (a C2D model has none: nothing changes).
        backend: one of :data:`sifa_hub.ops.BACKENDS`.

    Yields:
        ``model`` itself.
    """
    if backend not in BACKENDS:
        raise ValueError(f"use_sifa_backend: backend must be one of {BACKENDS}, got {backend!r}")
    modules = [m for m in model.modules() if isinstance(m, SIFA)]
    saved = [m.backend for m in modules]
    for m in modules:
        m.backend = backend
    try:
        yield model
    finally:
        for m, previous in zip(modules, saved):
            m.backend = previous
