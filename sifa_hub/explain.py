"""Where does SIFA look? Draw a query point in frame t and its K×K deformed keys in frame t+1.

For a chosen :class:`sifa_hub.layers.SIFA` module a forward pre-hook captures its input features ``x`` of shape
``(B, C, T', h, w)``. From them, exactly as the operator does (``docs/SPEC.md``):

* offsets ``Δ = SIFA.compute_offsets(x)`` of the key frames 1..T'-1 (zero when the module has no offset conv);
* key positions of the query at cell ``p`` of frame ``t``: ``p − P + (i·d, j·d) + Δ[k, t, p]`` in frame ``t+1``;
* attention weights ``a_k = (1/C) Σ_c x[c, t, p] · sample_k(x[c, t+1])`` (softmax over k in ``"softmax"`` mode).

Feature cells map to input pixels through the map's stride (cell ``r`` ↦ pixel ``(r + 0.5)·s − 0.5``), feature
steps to input frames through the early temporal stride. The figure has one column per consecutive pair: top, frame
t with the query; bottom, frame t+1 with the K² keys (area ∝ |a_k|, colour = sign) and the undeformed grid they
moved from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .layers import SIFA
from .ops.reference import bilinear_sample_zeros
from .utils.io import atomic_path

__all__ = [
    "SamplingMap",
    "display_frames",
    "draw_sampling",
    "explain_clip",
    "explain_video",
    "find_sifa_modules",
    "sifa_sampling",
]


@dataclass
class SamplingMap:
    """Sampling positions and weights of one SIFA module for one clip, in feature coordinates.

    Attributes:
        name: the module's qualified name in the model.
        positions: ``(T'-1, h, w, K², 2)`` (row, column) of the keys in frame t+1 of the query at (t, row, col).
        grid: ``(T'-1, h, w, K², 2)`` the same positions without offsets (the K×K window).
        weights: ``(T'-1, h, w, K²)`` attention weights (mean over correlation groups).
        feature_size: ``(h, w)``.
        num_steps: ``T'``.
    """

    name: str
    positions: torch.Tensor
    grid: torch.Tensor
    weights: torch.Tensor
    feature_size: tuple[int, int]
    num_steps: int


def find_sifa_modules(model: nn.Module) -> list[tuple[str, SIFA]]:
    """``(name, module)`` of every :class:`SIFA` module of ``model``, in registration (= forward) order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SIFA)]


def _sampling_of(module: SIFA, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions and grid ``(T'-1, h, w, K², 2)``, weights ``(T'-1, h, w, K²)`` of clip 0 of ``x (B, C, T', h, w)``."""
    x = x[:1].float()
    _, c, t, h, w = x.shape
    k, d = module.kernel_size, module.dilation
    pad = (d * (k - 1) + 1) // 2
    offsets = module.compute_offsets(x)  # (1, 2K², T'-1, h, w) or None
    if offsets is None:
        offsets = x.new_zeros(1, 2 * k * k, t - 1, h, w)
    offsets = offsets.float()
    rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1).expand(t - 1, h, w)
    cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w).expand(t - 1, h, w)
    query = x[0, :, :-1].transpose(0, 1)  # (T'-1, C, h, w): frames 0..T'-2
    keys = x[0, :, 1:].transpose(0, 1)  # (T'-1, C, h, w): frames 1..T'-1
    grid, pos, corr = [], [], []
    for idx in range(k * k):
        i, j = divmod(idx, k)
        g_h, g_w = rows - pad + i * d, cols - pad + j * d  # (T'-1, h, w)
        p_h, p_w = g_h + offsets[0, 2 * idx], g_w + offsets[0, 2 * idx + 1]
        sample = bilinear_sample_zeros(keys, p_h, p_w)  # (T'-1, C, h, w)
        prod = (query * sample).reshape(t - 1, module.groups, c // module.groups, h, w)
        corr.append(prod.sum(2).mean(1) * module.groups / c)  # (T'-1, h, w): group correlations (1/C), averaged
        grid.append(torch.stack([g_h, g_w], -1))
        pos.append(torch.stack([p_h, p_w], -1))
    weights = torch.stack(corr, -1)  # (T'-1, h, w, K²)
    if module.normalize == "softmax":
        weights = torch.softmax(weights * c / (c / module.groups) ** 0.5, dim=-1)
    return torch.stack(pos, -2), torch.stack(grid, -2), weights


@torch.no_grad()
def sifa_sampling(model: nn.Module, clip: torch.Tensor, block: int = 0) -> SamplingMap:
    """Run ``model`` on a clip and read the sampling of its ``block``-th SIFA module.

    Args:
        model: a model with :class:`SIFA` modules (any family).
        clip: model input ``(3, T, H, W)`` or ``(1, 3, T, H, W)``.
        block: index into :func:`find_sifa_modules`.
    """
    modules = find_sifa_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no SIFA modules (a C2D twin?); explain needs a SIFA model")
    if not -len(modules) <= block < len(modules):
        raise ValueError(f"block {block} out of range: the model has {len(modules)} SIFA modules")
    if clip.dim() == 4:
        clip = clip[None]
    if clip.dim() != 5:
        raise ValueError(f"clip must be (3, T, H, W) or (1, 3, T, H, W), got {tuple(clip.shape)}")
    name, module = modules[block]
    captured: list[torch.Tensor] = []
    handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    was_training = model.training
    try:
        model.eval()
        model(clip.to(next(model.parameters()).device))
    finally:
        handle.remove()
        model.train(was_training)
    x = captured[0]
    if x.shape[2] < 2:
        raise ValueError(f"SIFA module {name} sees T'={x.shape[2]} step(s): nothing to attend to")
    positions, grid, weights = (v.cpu() for v in _sampling_of(module, x))
    return SamplingMap(name, positions, grid, weights, (x.shape[3], x.shape[4]), x.shape[2])


def _motion_query(frames: torch.Tensor, t0: int, t1: int, size: tuple[int, int]) -> tuple[int, int]:
    """Feature cell with the strongest change between input frames ``t0`` and ``t1`` (``frames`` ``(T, H, W, 3)``)."""
    diff = (frames[t1].float() - frames[t0].float()).abs().sum(-1)[None, None]  # (1, 1, H, W)
    energy = torch.nn.functional.adaptive_avg_pool2d(diff, size)[0, 0]  # (h, w)
    r, c = divmod(int(energy.argmax()), size[1])
    return r, c


def _draw_keys(
    ax: Any,
    sampling: SamplingMap,
    where: tuple[int, int, int],
    to_px: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    w_max: float,
    frame_size: tuple[int, int],
) -> None:
    """One query's K² keys on frame t+1: the undeformed window (squares), offsets (lines), weights (dot area)."""
    import matplotlib.pyplot as plt

    t, r, c = where
    height, width = frame_size
    k_y, k_x = to_px(sampling.positions[t, r, c])  # (K²,)
    g_y, g_x = to_px(sampling.grid[t, r, c])
    wts = sampling.weights[t, r, c]
    ax.scatter(g_x, g_y, s=30, facecolors="none", edgecolors="white", linewidths=0.8, marker="s")
    for gx, gy, kx, ky in zip(g_x.tolist(), g_y.tolist(), k_x.tolist(), k_y.tolist()):
        ax.plot([gx, kx], [gy, ky], color="white", linewidth=0.7, alpha=0.8)
    colors = ["gold" if v >= 0 else "deepskyblue" for v in wts.tolist()]
    ax.scatter(k_x, k_y, s=20 + 280 * wts.abs() / w_max, c=colors, edgecolors="black", linewidths=0.6)
    # learned offsets may carry keys outside the frame (they sample zeros there): widen the view to show them
    x_lo, x_hi = min(-0.5, float(k_x.min()) - 1), max(width - 0.5, float(k_x.max()) + 1)
    y_lo, y_hi = min(-0.5, float(k_y.min()) - 1), max(height - 0.5, float(k_y.max()) + 1)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_hi, y_lo)
    ax.add_patch(
        plt.Rectangle((-0.5, -0.5), width, height, fill=False, edgecolor="black", linewidth=0.8, linestyle="--")
    )


def draw_sampling(
    frames: torch.Tensor,
    sampling: SamplingMap,
    out: str | os.PathLike[str],
    *,
    query: tuple[float, float] | None = None,
    max_frames: int = 6,
    title: str = "",
) -> str:
    """Draw query points and their deformed keys on consecutive frames and save a PNG.

    Args:
        frames: uint8 ``(T, H, W, 3)`` frames as the model saw them (after resize and crop).
        sampling: from :func:`sifa_sampling` on the same clip.
        out: PNG path (written atomically).
        query: ``(row, col)`` in input pixels for every pair; ``None`` picks, per pair, the cell whose input
            pixels change most (the moving object).
        max_frames: at most this many consecutive pairs are drawn.
        title: figure title.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {tuple(frames.shape)}")
    num_in, height, width = frames.shape[:3]
    if query is not None and not (0 <= query[0] < height and 0 <= query[1] < width):
        raise ValueError(f"query {tuple(query)} is outside the model input: rows 0..{height - 1}, cols 0..{width - 1}")
    if os.path.isdir(out):
        raise ValueError(f"out {os.fspath(out)!r} is a folder; give the PNG file to write")
    h, w = sampling.feature_size
    stride_t = max(num_in // sampling.num_steps, 1)
    s_h, s_w = height / h, width / w

    def to_px(rc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (rc[..., 0] + 0.5) * s_h - 0.5, (rc[..., 1] + 0.5) * s_w - 0.5

    pairs = min(max_frames, sampling.num_steps - 1)
    fig, axes = plt.subplots(2, pairs, figsize=(2.3 * pairs, 5.0), squeeze=False)
    w_max = float(sampling.weights.abs().max()) or 1.0
    for t in range(pairs):
        f0 = min(t * stride_t + stride_t // 2, num_in - 1)
        f1 = min((t + 1) * stride_t + stride_t // 2, num_in - 1)
        if query is None:
            r, c = _motion_query(frames, f0, f1, (h, w))
        else:
            r = min(max(int((query[0] + 0.5) / s_h), 0), h - 1)
            c = min(max(int((query[1] + 0.5) / s_w), 0), w - 1)
        q_y, q_x = (r + 0.5) * s_h - 0.5, (c + 0.5) * s_w - 0.5
        top, bottom = axes[0, t], axes[1, t]
        top.imshow(frames[f0].numpy(), interpolation="nearest")
        top.plot(q_x, q_y, marker="*", color="red", markersize=14, markeredgecolor="white")
        top.set_title(f"frame {f0}: query", fontsize=9)
        bottom.imshow(frames[f1].numpy(), interpolation="nearest")
        _draw_keys(bottom, sampling, (t, r, c), to_px, w_max, (height, width))
        bottom.plot(q_x, q_y, marker="+", color="red", markersize=10)
        bottom.set_title(f"frame {f1}: keys", fontsize=9)
        top.set_xlim(-0.5, width - 0.5)
        top.set_ylim(height - 0.5, -0.5)
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        (title + "\n" if title else "")
        + f"{sampling.name} ({h}×{w} map): red = query in frame t; dots = its {sampling.positions.shape[-2]} keys in "
        "frame t+1\n(area ∝ |attention weight|, gold > 0, blue < 0); squares = the K×K window before the offsets",
        fontsize=8,
    )
    fig.tight_layout()
    out = os.fspath(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return out


def explain_clip(
    model: nn.Module,
    clip: torch.Tensor,
    frames: torch.Tensor,
    out: str | os.PathLike[str],
    *,
    block: int = 0,
    query: tuple[float, float] | None = None,
    max_frames: int = 6,
    title: str = "",
) -> str:
    """:func:`sifa_sampling` + :func:`draw_sampling` for one clip (model input ``clip``, display ``frames``)."""
    sampling = sifa_sampling(model, clip, block)
    return draw_sampling(frames, sampling, out, query=query, max_frames=max_frames, title=title)


def display_frames(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Model input ``(3, T, H, W)`` → uint8 ``(T, H, W, 3)`` by undoing the normalisation (what the model saw)."""
    m = torch.tensor(mean).view(3, 1, 1, 1)
    s = torch.tensor(std).view(3, 1, 1, 1)
    pixels = (clip.float().cpu() * s + m).clamp(0, 1)
    return pixels.mul(255).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous()


def explain_video(
    video: str | os.PathLike[str],
    model: str | os.PathLike[str] | nn.Module,
    *,
    out: str | os.PathLike[str] = "sifa_sampling.png",
    block: int = 0,
    query: tuple[float, float] | None = None,
    max_frames: int = 6,
    device: str | torch.device = "cpu",
) -> str:
    """Draw SIFA's sampling positions on a video file (``sifa-hub explain``); returns the PNG path.

    Args:
        video: Video file; preprocessed by the clip pipeline exactly as for :func:`sifa_hub.predict.predict` (one
            centre clip).
        model: A SIFA model: any source of :func:`sifa_hub.loading.load_model`, or an instance.
        out: PNG to write.
        block: Which SIFA module (forward order).
        query: ``(row, col)`` in model-input pixels, or ``None`` for the strongest motion per pair.
        max_frames: Consecutive pairs to draw.
        device: Where to run the model.
    """
    from .data.pipeline import ClipPipeline
    from .loading import load_model
    from .utils.runtime import resolve_device

    loaded = load_model(model, device=resolve_device(device))
    cfg = loaded.data_config
    clip = ClipPipeline.from_data_config(cfg).load(video)[0]  # (3, T, H, W)
    arch = (getattr(loaded.model, "pretrained_cfg", None) or {}).get("architecture", type(loaded.model).__name__)
    title = f"{arch} on {os.path.basename(os.fspath(video))}"
    shown = display_frames(clip, cfg["mean"], cfg["std"])
    return explain_clip(loaded.model, clip, shown, out, block=block, query=query, max_frames=max_frames, title=title)
