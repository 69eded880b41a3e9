"""Benchmark of the SIFA operator's backends (``sifa-hub bench op``, ``python benchmarks/bench_op.py``).

Shapes: the SIFA blocks of SIFA-Net R50 on a 16-frame 224² clip (early stride 4 → T = 4) at batch 2:
C=128@28², C=256@14², C=512@7², K=3, random offsets (N(0, 0.5²) px, so sample points are non-integer).

Methods, timed in interleaved rounds in one process (median over rounds; ``clock="cpu"`` times with the process's
CPU time instead of wall time, robust to other processes on a shared machine but only meaningful with one thread).
Every SIFA method except ``naive`` is a backend of :func:`sifa_hub.ops.sifa_attention`:

* ``naive``: the obvious pure-PyTorch algorithm (:func:`naive_sifa`): all K² samples of all T-1 steps
  materialised by one ``F.grid_sample`` call, correlation and aggregation as broadcast products, autograd
  through it — the yardstick every ``×`` ratio divides by;
* ``reference``: the spec step by step (:mod:`sifa_hub.ops.reference`; all K² samples of a step materialised,
  autograd through it) — the test oracle, slower still;
* ``torch``: the default pure-PyTorch backend (per-k ``grid_sample``, samples recomputed in backward);
* ``fused``: the C++ kernel on CPU, the Triton kernels on CUDA, on the contiguous ``(B, C, T, H, W)`` tensor (the
  CPU kernel copies it to channels-last and the result back);
* ``fused_cl``: the same backend on the same values in ``channels_last_3d`` memory format, the layout SIFA-Net's
  trunk and Swin's tokens hand the operator (no copies on CPU; the output keeps the layout);
* yardsticks on the same tensor: ``copy`` (``x.clone()``) and a depthwise 3×3 conv, as the models run it
  (``dw3d``: ``Conv3d`` with kernel (1, 3, 3), ``groups=C``) and as fast as PyTorch runs it (``dw2d_cl``:
  ``Conv2d`` on the B·T frames in channels-last memory format).

Memory of forward + backward (``y.sum().backward()``), in feature maps (``x.nbytes``), at batch ``mem_batch``:

* ``saved``: bytes of the tensors autograd keeps between forward and backward
  (``torch.autograd.graph.saved_tensors_hooks``, distinct storages; the inputs x and offsets count when saved);
* ``peak``: CPU: peak resident memory above the level with the inputs allocated (``VmHWM`` of
  ``/proc/self/status`` after resetting it through ``/proc/self/clear_refs``, with glibc's mmap threshold fixed
  at 64 KiB and ``malloc_trim`` before each measurement so that freed tensors leave the resident set);
  CUDA: ``torch.cuda.max_memory_allocated`` above the inputs. It includes y and the gradients of x and offsets;
* ``work``: ``peak`` minus those unavoidable tensors (y, grad x, grad offsets): the working memory.

Errors: max |y - reference| of the float32 output against the float64 reference implementation.
"""

from __future__ import annotations

import ctypes
import functools
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..ops import selected_backend, sifa_attention
from ..utils.io import atomic_write_json
from ..utils.runtime import resolve_device, synchronize

__all__ = [
    "SHAPES",
    "SIFA_METHODS",
    "frames_channels_last",
    "method_inputs",
    "naive_sifa",
    "op_inputs",
    "op_methods",
    "run_op",
    "time_methods",
]

SHAPES: tuple[tuple[int, int], ...] = ((128, 28), (256, 14), (512, 7))  # (C, H = W) of the R50 SIFA blocks
SIFA_METHODS = ("naive", "reference", "torch", "fused", "fused_cl")
Method = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def op_inputs(
    channels: int, size: int, batch: int, frames: int, offset_std: float, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features ``(B, C, T, H, W)`` and offsets ``(B, 18, T-1, H, W)`` (K = 3) of std ``offset_std`` px."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, frames, size, size, generator=gen).to(device)
    off = (torch.randn(batch, 18, frames - 1, size, size, generator=gen) * offset_std).to(device)
    return x, off


def naive_sifa(x: torch.Tensor, offsets: torch.Tensor, kernel_size: int = 3, dilation: int = 1) -> torch.Tensor:
    """SIFA (one group, no softmax) the obvious way: one ``grid_sample`` for all K² keys of all T-1 steps.

    Args:
        x: ``(B, C, T, H, W)`` features, ``T >= 2``.
        offsets: ``(B, 2K², T-1, H, W)`` offsets of the key frames 1..T-1 (row, column per kernel position).

    Returns:
        ``(B, C, T, H, W)``, the last frame zero.
    """
    b, c, t, h, w = x.shape
    k2, n = kernel_size * kernel_size, b * (t - 1)
    pad = (dilation * (kernel_size - 1) + 1) // 2
    query = x[:, :, :-1].transpose(1, 2).reshape(n, c, h, w)  # (N, C, H, W), N = B·(T-1)
    keys = x[:, :, 1:].transpose(1, 2).reshape(n, c, h, w)
    off = offsets.transpose(1, 2).reshape(n, k2, 2, h, w)
    k = torch.arange(k2, device=x.device)
    rows = (k // kernel_size * dilation - pad).view(k2, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)
    cols = (k % kernel_size * dilation - pad).view(k2, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)
    pos_h, pos_w = off[:, :, 0] + rows, off[:, :, 1] + cols  # (N, K², H, W) in pixels
    grid = torch.stack((pos_w * 2 / max(w - 1, 1) - 1, pos_h * 2 / max(h - 1, 1) - 1), -1)
    grid = grid.permute(0, 2, 3, 1, 4).reshape(n, h, w * k2, 2)  # (N, H, W·K², 2) normalised (x, y)
    samples = F.grid_sample(keys, grid, align_corners=True).view(n, c, h, w, k2)  # (N, C, H, W, K²)
    corr = (query.unsqueeze(-1) * samples).sum(1, keepdim=True) / c  # (N, 1, H, W, K²)
    y = torch.zeros_like(x)
    y[:, :, :-1] = (corr * samples).sum(-1).view(b, t - 1, c, h, w).transpose(1, 2)
    return y


def frames_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` → ``(B·T, C, H, W)`` in channels-last memory format."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 3, 4, 1).contiguous().view(b * t, h, w, c).permute(0, 3, 1, 2)


def method_inputs(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensor each method takes where it is not ``x`` itself: ``dw2d_cl`` the :func:`frames_channels_last`
    frames, ``fused_cl`` ``x`` in ``channels_last_3d`` memory format (same values)."""
    return {"dw2d_cl": frames_channels_last(x), "fused_cl": x.contiguous(memory_format=torch.channels_last_3d)}


def op_methods(channels: int, device: torch.device) -> dict[str, Method]:
    """The timed methods (see the module docstring); see :func:`method_inputs` for the tensors they take."""
    fused = "triton" if device.type == "cuda" else "cpu"
    dw3d = torch.nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1), groups=channels, bias=False)
    dw2d = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
    dw3d, dw2d = dw3d.to(device), dw2d.to(device).to(memory_format=torch.channels_last)
    return {
        "naive": naive_sifa,
        "reference": lambda a, o: sifa_attention(a, o, backend="reference"),
        "torch": lambda a, o: sifa_attention(a, o, backend="torch"),
        "fused": lambda a, o: sifa_attention(a, o, backend=fused),
        "fused_cl": lambda a, o: sifa_attention(a, o, backend=fused),
        "copy": lambda a, o: a.clone(),
        "dw3d": lambda a, o: dw3d(a),
        "dw2d_cl": lambda a, o: dw2d(a),
    }


def _forward_backward(op: Method, x: torch.Tensor, off: torch.Tensor) -> None:
    op(x, off).sum().backward()


def time_methods(
    methods: dict[str, Method],
    x: torch.Tensor,
    off: torch.Tensor,
    rounds: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds of ``"<method>/fwd"`` and ``"<method>/fwdbwd"`` over interleaved rounds (``copy``: fwd only)."""
    device = x.device
    times: dict[str, list[float]] = {}

    def timed(key: str, fn: Callable[[], Any]) -> None:
        synchronize(device)
        t0 = clock()
        fn()
        synchronize(device)
        times.setdefault(key, []).append(clock() - t0)

    inputs = method_inputs(x)
    for _ in range(warmup + rounds):
        for name, op in methods.items():
            a = inputs.get(name, x)
            with torch.no_grad():
                timed(f"{name}/fwd", functools.partial(op, a, off))
            if name == "copy":
                continue
            xg, og = a.detach().clone().requires_grad_(), off.clone().requires_grad_()
            timed(f"{name}/fwdbwd", functools.partial(_forward_backward, op, xg, og))
    return {k: statistics.median(v[warmup:]) for k, v in times.items()}


def _saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn().sum().backward()
    return sum(storages.values())


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_bytes(fn: Callable[[], torch.Tensor], device: torch.device) -> int:
    """Peak memory above the current level while running forward + backward once."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn().sum().backward()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give cached free memory back, so new tensors fault fresh pages
    base = _rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    fn().sum().backward()
    return (_rss_kib("VmHWM") - base) * 1024


def _fix_malloc_threshold() -> bool:
    """Make glibc return freed tensors to the OS at once (so RSS tracks live memory); False if not glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _memory(x: torch.Tensor, off: torch.Tensor, measure_peak: bool) -> dict[str, dict[str, float]]:
    """Saved / peak / working memory of forward + backward of each SIFA method and ``dw3d``, in feature maps."""
    ops = op_methods(x.shape[1], x.device)
    fmap = x.nbytes
    mem = {}
    inputs = method_inputs(x)
    for key in (*SIFA_METHODS, "dw3d"):
        a = inputs.get(key, x)
        xg, og = a.clone().requires_grad_(), off.clone().requires_grad_()
        entry = {"saved": _saved_bytes(functools.partial(ops[key], xg, og)) / fmap}
        if measure_peak:
            xg, og = a.clone().requires_grad_(), off.clone().requires_grad_()
            peak = _peak_bytes(functools.partial(ops[key], xg, og), x.device)
            unavoidable = 2 * fmap + (og.nbytes if key != "dw3d" else 0)  # y, grad x, grad offsets
            entry["peak"] = peak / fmap
            entry["work"] = (peak - unavoidable) / fmap
        mem[key] = entry
    return mem


def _max_errors(x: torch.Tensor, off: torch.Tensor) -> dict[str, float]:
    ops = op_methods(x.shape[1], x.device)
    ref = sifa_attention(x.double(), off.double(), backend="reference")
    inputs = method_inputs(x)
    with torch.no_grad():
        return {k: (ops[k](inputs.get(k, x), off).double() - ref).abs().max().item() for k in SIFA_METHODS}


def _format_row(row: dict[str, Any]) -> str:
    med = row["median_s"]
    lines = [
        f"{row['shape']}  (median ms; × = naive / method; for yardsticks f = fused / yardstick)",
        f"  {'method':9s} {'fwd':>8s} {'fwd+bwd':>8s} {'fwd':>7s} {'fwd+bwd':>7s}  memory (feature maps)   max err",
    ]
    for key in (*SIFA_METHODS, "dw3d", "dw2d_cl", "copy"):
        fwd, fb = med[f"{key}/fwd"], med.get(f"{key}/fwdbwd")
        if key in SIFA_METHODS:
            r_fwd, r_fb = f"{med['naive/fwd'] / fwd:6.1f}×", f"{med['naive/fwdbwd'] / fb:6.1f}×"
        else:
            r_fwd, r_fb = f"{med['fused/fwd'] / fwd:6.1f}f", f"{med['fused/fwdbwd'] / fb:6.1f}f" if fb else ""
        mem = row["memory_fmaps"].get(key)
        mem_s = f"saved {mem['saved']:4.1f}" if mem else ""
        if mem and "peak" in mem:
            mem_s += f" peak {mem['peak']:4.1f} work {mem['work']:4.1f}"
        err = row["max_err"].get(key)
        err_s = f"{err:.1e}" if err is not None else ""
        fb_s = f"{fb * 1e3:8.2f}" if fb else ""
        lines.append(f"  {key:9s} {fwd * 1e3:8.2f} {fb_s:>8s} {r_fwd:>7s} {r_fb:>7s}  {mem_s:33s} {err_s}")
    return "\n".join(lines)


def run_op(
    *,
    device: str = "cpu",
    rounds: int = 10,
    warmup: int = 2,
    threads: int = 0,
    clock: str = "wall",
    batch: int = 2,
    mem_batch: int = 16,
    frames: int = 4,
    offset_std: float = 0.5,
    shapes: Sequence[tuple[int, int]] = SHAPES,
    json_path: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Time and size every method at every shape; log one table per shape and return one row per shape.

    Args:
        device: ``"cpu"`` (fused = the C++ kernel) or ``"cuda"`` (fused = the Triton kernels).
        rounds, warmup: timed and untimed rounds, interleaved across methods.
        threads: ``torch.set_num_threads`` (0: torch's default).
        clock: ``"wall"`` or ``"cpu"`` (process CPU time).
        batch, frames, offset_std: the timed inputs (see :func:`op_inputs`).
        mem_batch: batch of the memory measurement (larger maps, above the resolution of the CPU measure).
        shapes: ``(C, H = W)`` pairs.
        json_path: write the rows there as JSON.
        log: output sink.

    Returns:
        ``[{"shape", "median_s": {"<method>/fwd"|"/fwdbwd": s}, "max_err": {method: e}, "memory_fmaps": ...}]``.
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    minimums = (("rounds", rounds, 1), ("batch", batch, 1), ("mem_batch", mem_batch, 1), ("frames", frames, 2))
    for name, value, least in minimums:
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    if warmup < 0 or threads < 0:
        raise ValueError(f"warmup and threads must be >= 0, got {warmup} and {threads}")
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    name, why = selected_backend(dev)
    log(f"device {dev}, {torch.get_num_threads()} threads, {clock} clock, auto backend: {name} ({why})")
    rows = []
    for channels, size in shapes:
        x, off = op_inputs(channels, size, batch, frames, offset_std, dev)
        median = time_methods(op_methods(channels, dev), x, off, rounds, warmup, timer)
        rows.append({"shape": f"C{channels}@{size}²", "median_s": median, "max_err": _max_errors(x, off)})
    # Memory after timing: fixing malloc's mmap threshold makes every allocation fault fresh pages.
    measure_peak = dev.type == "cuda" or (_fix_malloc_threshold() and os.path.exists("/proc/self/clear_refs"))
    for row, (channels, size) in zip(rows, shapes):
        x, off = op_inputs(channels, size, mem_batch, frames, offset_std, dev)
        row["memory_fmaps"] = _memory(x, off, measure_peak)
        log("\n" + _format_row(row))
    if json_path:
        atomic_write_json(json_path, rows)
    return rows
