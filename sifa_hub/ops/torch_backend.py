"""Default SIFA backend: pure PyTorch, memory-lean, runs on any device.

The K² samples are never held at once: the forward loops over kernel positions with one ``F.grid_sample``
each and accumulates in place. A custom ``torch.autograd.Function`` saves only the inputs and recomputes
the samples in backward (``aten.grid_sampler_2d_backward`` per kernel position), so forward + backward
memory is a few feature maps whatever K is. Only the T-1 useful steps are computed (the self-correlation of
frame 0 is discarded by the temporal alignment anyway).

Queries, keys and values are the same map, so one bilinear sample serves correlation and aggregation, and
the sampling grid is shared across channels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["sifa_attention_torch"]


def _frames_to_batch(t: torch.Tensor) -> torch.Tensor:
    """``(B, C, S, H, W)`` → ``(B·S, C, H, W)`` (a copy)."""
    b, c, s, h, w = t.shape
    return t.transpose(1, 2).reshape(b * s, c, h, w)


def _batch_to_frames(t: torch.Tensor, b: int) -> torch.Tensor:
    """``(B·S, C, H, W)`` → ``(B, C, S, H, W)`` view."""
    n, c, h, w = t.shape
    return t.view(b, n // b, c, h, w).transpose(1, 2)


class _Sampler:
    """Per-kernel-position ``grid_sample`` grids for ``(N, C, H, W)`` key frames and ``(N, 2K², H, W)`` offsets.

    ``grid_sample(align_corners=True, padding_mode="zeros")`` with pixel coordinates normalised as
    ``2p/(size-1) - 1`` is exactly the spec's bilinear sampling with zero padding. A map of height or width 1
    is padded with one zero row/column so that the normalisation is defined (the padded corner reads 0, as
    an out-of-frame corner does).
    """

    def __init__(self, keys: torch.Tensor, offsets: torch.Tensor | None, kernel_size: int, dilation: int) -> None:
        n, _, h, w = keys.shape
        self.pad_h, self.pad_w = int(h == 1), int(w == 1)
        self.keys = F.pad(keys, (0, self.pad_w, 0, self.pad_h)) if self.pad_h or self.pad_w else keys
        self.shape = (n, h, w)
        self.offsets = offsets
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.pad = (dilation * (kernel_size - 1) + 1) // 2
        hp, wp = h + self.pad_h, w + self.pad_w
        self.scale_h, self.scale_w = 2.0 / (hp - 1), 2.0 / (wp - 1)  # pixel → normalised coordinate
        self.rows = torch.arange(h, dtype=keys.dtype, device=keys.device).view(1, h, 1)
        self.cols = torch.arange(w, dtype=keys.dtype, device=keys.device).view(1, 1, w)

    def grid(self, k: int) -> torch.Tensor:
        """``(N, H, W, 2)`` normalised ``(x, y)`` sampling grid of kernel position ``k``."""
        i, j = divmod(k, self.kernel_size)
        n, h, w = self.shape
        pos_h = self.rows - self.pad + i * self.dilation  # (1, H, 1)
        pos_w = self.cols - self.pad + j * self.dilation  # (1, 1, W)
        if self.offsets is not None:
            pos_h = pos_h + self.offsets[:, 2 * k]  # (N, H, W)
            pos_w = pos_w + self.offsets[:, 2 * k + 1]  # (N, H, W)
        gx = (pos_w * self.scale_w - 1).expand(n, h, w)
        gy = (pos_h * self.scale_h - 1).expand(n, h, w)
        return torch.stack((gx, gy), dim=-1)  # (N, H, W, 2)

    def sample(self, grid: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` bilinear samples of the key frames at ``grid``."""
        return F.grid_sample(self.keys, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def backward(
        self, grad_samples: torch.Tensor, grid: torch.Tensor, need_grid: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Gradients of ``sample`` to the (unpadded) key frames ``(N, C, H, W)`` and, if ``need_grid``, to the
        pixel offsets ``(N, 2, H, W)`` (row, column)."""
        gk, gg = torch.ops.aten.grid_sampler_2d_backward(grad_samples, self.keys, grid, 0, 0, True, [True, need_grid])
        if self.pad_h or self.pad_w:
            gk = gk[:, :, : self.shape[1], : self.shape[2]]
        goff = None
        if need_grid:
            goff = torch.stack((gg[..., 1] * self.scale_h, gg[..., 0] * self.scale_w), dim=1)  # (N, 2, H, W)
        return gk, goff


def _group_sum(t: torch.Tensor, groups: int) -> torch.Tensor:
    """``(N, C, H, W)`` → ``(N, G, H, W)``: sum over the channels of each group."""
    n, c, h, w = t.shape
    return t.view(n, groups, c // groups, h, w).sum(2)


def _expand_groups(t: torch.Tensor, channels: int) -> torch.Tensor:
    """``(N, G, H, W)`` → ``(N, C, H, W)`` broadcastable view (each group's value on its channels)."""
    n, g, h, w = t.shape
    return t.unsqueeze(2).expand(n, g, channels // g, h, w).reshape(n, channels, h, w)


def _softmax_scale(channels: int, groups: int) -> float:
    """Temperature of the ``softmax`` mode applied to the ``1/C``-scaled correlation: ``C / sqrt(C/G)``."""
    return channels / (channels / groups) ** 0.5


def _correlations(q: torch.Tensor, sampler: _Sampler, k2: int, groups: int) -> torch.Tensor:
    """``(N, K², G, H, W)`` correlations ``(1/C) Σ_c q · sample_k``, one sample alive at a time."""
    c = q.shape[1]
    return torch.stack([_group_sum(q * sampler.sample(sampler.grid(k)), groups) / c for k in range(k2)], 1)


def _forward(q: torch.Tensor, sampler: _Sampler, k2: int, groups: int, softmax: bool) -> torch.Tensor:
    """``(N, C, H, W)`` aggregation of the key frames for the queries ``q``."""
    n, c, h, w = q.shape
    out = torch.zeros_like(q)
    if softmax:
        weights = torch.softmax(_correlations(q, sampler, k2, groups) * _softmax_scale(c, groups), dim=1)
        for k in range(k2):
            out.addcmul_(_expand_groups(weights[:, k], c), sampler.sample(sampler.grid(k)))
        return out
    for k in range(k2):
        s = sampler.sample(sampler.grid(k))  # (N, C, H, W)
        corr = _group_sum(q * s, groups) / c  # (N, G, H, W)
        out.addcmul_(_expand_groups(corr, c), s)
    return out


class _SifaFunction(torch.autograd.Function):
    """Autograd function over the T-1 steps: saves inputs only, recomputes samples in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        offsets: torch.Tensor | None,
        kernel_size: int,
        dilation: int,
        groups: int,
        softmax: bool,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, offsets)
        ctx.config = (kernel_size, dilation, groups, softmax)
        if x.numel() == 0:  # batch 0 or an empty map (grid_sample refuses empty maps)
            return x.new_zeros(x.shape)
        b = x.shape[0]
        q = _frames_to_batch(x[:, :, :-1])  # (N, C, H, W), N = B·(T-1) query frames 0..T-2
        sampler = _Sampler(
            _frames_to_batch(x[:, :, 1:]),
            None if offsets is None else _frames_to_batch(offsets),
            kernel_size,
            dilation,
        )
        agg = _forward(q, sampler, kernel_size * kernel_size, groups, softmax)  # (N, C, H, W)
        y = x.new_zeros(x.shape)  # (B, C, T, H, W), y[T-1] = 0
        y[:, :, :-1] = _batch_to_frames(agg, b)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, offsets = ctx.saved_tensors
        kernel_size, dilation, groups, softmax = ctx.config
        need_off = offsets is not None and ctx.needs_input_grad[1]
        if x.numel() == 0:
            return x.new_zeros(x.shape), offsets.new_zeros(offsets.shape) if need_off else None, None, None, None, None
        b, c = x.shape[:2]
        k2 = kernel_size * kernel_size
        q = _frames_to_batch(x[:, :, :-1])  # (N, C, H, W)
        g = _frames_to_batch(grad_y[:, :, :-1])  # (N, C, H, W)
        sampler = _Sampler(
            _frames_to_batch(x[:, :, 1:]),
            None if offsets is None else _frames_to_batch(offsets),
            kernel_size,
            dilation,
        )
        # Weights of the samples and gradients to the correlations, both (N, K², G, H, W).
        if softmax:
            corr = _correlations(q, sampler, k2, groups)
            grad_w = torch.stack([_group_sum(g * sampler.sample(sampler.grid(k)), groups) for k in range(k2)], 1)
            scale = _softmax_scale(c, groups)
            weights = torch.softmax(corr * scale, dim=1)
            grad_corr = scale * weights * (grad_w - (weights * grad_w).sum(1, keepdim=True))
        grad_q = torch.zeros_like(q)
        grad_keys = torch.zeros_like(q)
        grad_off = q.new_zeros(q.shape[0], 2 * k2, *q.shape[2:]) if need_off else q.new_empty(0)
        for k in range(k2):
            grid = sampler.grid(k)
            s = sampler.sample(grid)  # (N, C, H, W)
            if softmax:
                w_k, gc_k = weights[:, k], grad_corr[:, k]  # (N, G, H, W)
            else:
                w_k = _group_sum(q * s, groups) / c  # correlation is the weight
                gc_k = _group_sum(g * s, groups)
            gc_k = _expand_groups(gc_k / c, c)  # (N, C, H, W): d loss / d(q·s) per channel
            grad_s = _expand_groups(w_k, c) * g + gc_k * q  # (N, C, H, W)
            grad_q.addcmul_(gc_k, s)
            gk, go = sampler.backward(grad_s, grid, need_off)
            grad_keys += gk
            if go is not None:
                grad_off[:, 2 * k : 2 * k + 2] = go
        grad_x = torch.zeros_like(x)
        grad_x[:, :, :-1] = _batch_to_frames(grad_q, b)
        grad_x[:, :, 1:] += _batch_to_frames(grad_keys, b)
        return grad_x, _batch_to_frames(grad_off, b) if need_off else None, None, None, None, None


def sifa_attention_torch(
    x: torch.Tensor,
    offsets: torch.Tensor | None,
    kernel_size: int,
    dilation: int,
    groups: int,
    softmax: bool,
) -> torch.Tensor:
    """SIFA in pure PyTorch (see :func:`sifa_hub.ops.sifa_attention`).

    Args:
        x: ``(B, C, T, H, W)``, ``T >= 2``.
        offsets: ``(B, 2K², T-1, H, W)`` offsets of the key frames 1..T-1, or ``None`` for zero offsets.
        kernel_size: K.
        dilation: grid dilation.
        groups: correlation groups.
        softmax: softmax over the K² keys (the ``normalize="softmax"`` deviation).

    Returns:
        ``(B, C, T, H, W)``, last frame zero.
    """
    return _SifaFunction.apply(x, offsets, kernel_size, dilation, groups, softmax)
