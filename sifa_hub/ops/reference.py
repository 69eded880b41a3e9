"""Reference SIFA operator: the spec (``docs/SPEC.md``) step by step, no shortcuts.

This is the test oracle for every other backend. It materialises all K² samples and is slow and
memory hungry on purpose: each line maps to one line of the spec.
"""

from __future__ import annotations

import torch

__all__ = ["bilinear_sample_zeros", "sifa_attention_reference"]


def bilinear_sample_zeros(img: torch.Tensor, pos_h: torch.Tensor, pos_w: torch.Tensor) -> torch.Tensor:
    """Bilinear sample with zero padding, corner by corner.

    A corner outside ``[0, H) x [0, W)`` contributes 0, so a point outside ``(-1, H) x (-1, W)`` samples 0.

    Args:
        img: ``(N, C, H, W)`` images.
        pos_h: ``(N, ...)`` row coordinates in pixels.
        pos_w: ``(N, ...)`` column coordinates in pixels, same shape as ``pos_h``.

    Returns:
        ``(N, C, ...)`` samples.
    """
    n, c, h, w = img.shape
    flat = img.reshape(n, c, h * w)
    h0, w0 = pos_h.floor(), pos_w.floor()
    lh, lw = pos_h - h0, pos_w - w0  # fractional parts in [0, 1)
    out = img.new_zeros((n, c) + pos_h.shape[1:])
    for dh, wh in ((0, 1 - lh), (1, lh)):
        for dw, ww in ((0, 1 - lw), (1, lw)):
            ch, cw = h0 + dh, w0 + dw
            weight = wh * ww  # (N, ...)
            inside = (ch >= 0) & (ch <= h - 1) & (cw >= 0) & (cw <= w - 1)
            index = (ch.clamp(0, h - 1) * w + cw.clamp(0, w - 1)).long().reshape(n, 1, -1).expand(n, c, -1)
            value = flat.gather(2, index).reshape(out.shape)
            out = out + value * (weight * inside).unsqueeze(1)
    return out


def sifa_attention_reference(
    x: torch.Tensor,
    offsets: torch.Tensor,
    kernel_size: int = 3,
    dilation: int = 1,
    groups: int = 1,
    normalize: str | None = None,
) -> torch.Tensor:
    """SIFA inter-frame attention, reference implementation.

    Args:
        x: ``(B, C, T, H, W)`` features.
        offsets: ``(B, 2K², T, H, W)`` offsets of the key frames (channel ``2k`` row, ``2k+1`` column of kernel
            position ``k``); frame 0's offsets are unused. ``(B, 2K², T-1, H, W)`` (frames 1..T-1) is accepted too.
        kernel_size: K.
        dilation: kernel dilation d.
        groups: correlation groups G (channel c uses the correlation of its group).
        normalize: ``None`` (reference mode, as the official kernel) or ``"softmax"`` (softmax over the K²
            keys of ``corr·C/sqrt(C/G)``; a documented deviation).

    Returns:
        ``(B, C, T, H, W)``: ``y[t]`` = frame t's queries attending to frame t+1; ``y[T-1] = 0``.
    """
    b, c, t, h, w = x.shape
    k2 = kernel_size * kernel_size
    y = torch.zeros_like(x)
    if t <= 1 or y.numel() == 0:
        return y
    pad = (dilation * (kernel_size - 1) + 1) // 2
    off = offsets[:, :, offsets.shape[2] - (t - 1) :]  # (B, 2K², T-1, H, W): offsets of key frames 1..T-1
    for step in range(t - 1):
        query = x[:, :, step]  # (B, C, H, W), frame t at the integer position p
        keys = x[:, :, step + 1]  # (B, C, H, W), frame t+1, sampled at deformed positions
        rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
        cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
        samples, corrs = [], []
        for k in range(k2):
            i, j = divmod(k, kernel_size)
            pos_h = rows - pad + i * dilation + off[:, 2 * k, step]  # (B, H, W)
            pos_w = cols - pad + j * dilation + off[:, 2 * k + 1, step]  # (B, H, W)
            s = bilinear_sample_zeros(keys, pos_h, pos_w)  # (B, C, H, W)
            prod = (query * s).reshape(b, groups, c // groups, h, w)
            corrs.append(prod.sum(2) / c)  # (B, G, H, W), fixed 1/C scale
            samples.append(s)
        corr = torch.stack(corrs, 1)  # (B, K², G, H, W)
        if normalize == "softmax":
            corr = torch.softmax(corr * c / (c / groups) ** 0.5, dim=1)
        agg = torch.zeros_like(query).reshape(b, groups, c // groups, h, w)
        for k in range(k2):
            agg = agg + corr[:, k].unsqueeze(2) * samples[k].reshape(b, groups, c // groups, h, w)
        y[:, :, step] = agg.reshape(b, c, h, w)
    return y
