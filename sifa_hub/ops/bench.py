"""Benchmark of the SIFA operator's backends (``python benchmarks/bench_op.py``, later ``sifa-hub bench op``).

Shapes: the SIFA blocks of SIFA-Net R50 on a 16-frame 224² clip (early stride 4 → T = 4) at batch 2:
C=128@28², C=256@14², C=512@7², K=3, random offsets (N(0, 0.5²) px, so sample points are non-integer).

Methods, timed in interleaved rounds in one process (median over rounds; ``--clock cpu`` times with the
process's CPU time instead of wall time, which is robust to other processes on a shared machine but only
meaningful with ``--threads 1``):

* ``naive``: the obvious pure-PyTorch version, all K² samples of every step materialised by one
  ``F.grid_sample`` (and autograd through it);
* ``torch``: the default backend (per-k ``grid_sample``, samples recomputed in backward);
* ``fused``: the C++ kernel on CPU, the Triton kernels on CUDA;
* yardsticks on the same tensor: ``copy`` (``x.clone()``) and a depthwise 3×3 conv, as the models run it
  (``dw3d``: ``Conv3d`` with kernel (1, 3, 3), ``groups=C``) and as fast as PyTorch runs it (``dw2d_cl``:
  ``Conv2d`` on the B·T frames in channels-last memory format).

Memory of forward + backward (``loss = y.sum(); loss.backward()``), in feature maps (``x.nbytes``), measured
at batch ``--mem-batch`` (16: feature maps of several MB, well above the resolution of the CPU measure):

* ``saved``: bytes of the tensors autograd keeps between forward and backward
  (``torch.autograd.graph.saved_tensors_hooks``, distinct storages; the inputs x and offsets count when saved);
* ``peak``: CPU: peak resident memory above the level with the inputs allocated (``VmHWM`` of
  ``/proc/self/status`` after resetting it through ``/proc/self/clear_refs``, with glibc's mmap threshold fixed
  at 64 KiB and ``malloc_trim`` before each measurement so that freed tensors leave the resident set);
  CUDA: ``torch.cuda.max_memory_allocated`` above the inputs. It includes the output y and the gradients of
  x and offsets.
* ``work``: ``peak`` minus those unavoidable tensors (y, grad x, grad offsets): the working memory.

Errors: max |y - reference| of the float32 output against the float64 reference implementation.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .functional import selected_backend, sifa_attention
from .reference import sifa_attention_reference

__all__ = ["main", "naive_sifa"]

SHAPES = ((128, 28), (256, 14), (512, 7))


def naive_sifa(x: torch.Tensor, offsets: torch.Tensor, kernel_size: int = 3, dilation: int = 1) -> torch.Tensor:
    """SIFA (G=1, no softmax) with all K² samples of the T-1 steps materialised by one ``grid_sample``.

    Args:
        x: ``(B, C, T, H, W)``.
        offsets: ``(B, 2K², T-1, H, W)``.

    Returns:
        ``(B, C, T, H, W)``.
    """
    b, c, t, h, w = x.shape
    k2 = kernel_size * kernel_size
    pad = (dilation * (kernel_size - 1) + 1) // 2
    n = b * (t - 1)
    q = x[:, :, :-1].transpose(1, 2).reshape(n, c, h, w)  # (N, C, H, W)
    keys = x[:, :, 1:].transpose(1, 2).reshape(n, c, h, w)  # (N, C, H, W)
    off = offsets.transpose(1, 2).reshape(n, k2, 2, h, w)  # (N, K², 2, H, W)
    ki = torch.arange(k2, device=x.device)
    base_h = (ki // kernel_size * dilation - pad).view(1, k2, 1, 1) + torch.arange(h, device=x.device).view(1, 1, h, 1)
    base_w = (ki % kernel_size * dilation - pad).view(1, k2, 1, 1) + torch.arange(w, device=x.device).view(1, 1, 1, w)
    pos_h = off[:, :, 0] + base_h  # (N, K², H, W)
    pos_w = off[:, :, 1] + base_w
    grid = torch.stack((pos_w * 2 / (w - 1) - 1, pos_h * 2 / (h - 1) - 1), -1)  # (N, K², H, W, 2)
    grid = grid.permute(0, 2, 3, 1, 4).reshape(n, h, w * k2, 2)
    samples = F.grid_sample(keys, grid, align_corners=True).view(n, c, h, w, k2)  # (N, C, H, W, K²)
    corr = (q.unsqueeze(-1) * samples).sum(1, keepdim=True) / c  # (N, 1, H, W, K²)
    agg = (corr * samples).sum(-1)  # (N, C, H, W)
    y = torch.zeros_like(x)
    y[:, :, :-1] = agg.view(b, t - 1, c, h, w).transpose(1, 2)
    return y


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn().sum().backward()
        torch.cuda.synchronize(device)
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
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 64 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f}"


def _inputs(args: argparse.Namespace, channels: int, size: int, device: torch.device, batch: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(0)
    batch = batch or args.batch
    x = torch.randn(batch, channels, args.frames, size, size, generator=gen).to(device)
    off = (torch.randn(batch, 18, args.frames - 1, size, size, generator=gen) * args.offset_std).to(device)
    return x, off


def _methods(channels: int, device: torch.device) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    fused = "triton" if device.type == "cuda" else "cpu"
    dw3d = torch.nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1), groups=channels, bias=False)
    dw2d = torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
    dw3d, dw2d = dw3d.to(device), dw2d.to(device).to(memory_format=torch.channels_last)

    def dw2d_cl(a: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        # The fastest depthwise 3×3 in PyTorch: Conv2d on the frames as a channels-last (B·T, C, H, W) batch;
        # the (B, C, T, H, W) → (B, T, H, W, C) layout change is not timed (it is a view of a permuted copy).
        return dw2d(a)

    return {
        "naive": naive_sifa,
        "torch": lambda a, o: sifa_attention(a, o, backend="torch"),
        "fused": lambda a, o: sifa_attention(a, o, backend=fused),
        "copy": lambda a, o: a.clone(),
        "dw3d": lambda a, o: dw3d(a),
        "dw2d_cl": dw2d_cl,
    }


def _frames_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` → ``(B·T, C, H, W)`` in channels-last memory format."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 3, 4, 1).contiguous().view(b * t, h, w, c).permute(0, 3, 1, 2)


def run(args: argparse.Namespace) -> list[dict]:
    """Time every method in interleaved rounds, then measure memory; print and return one row per shape."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    name, why = selected_backend(device)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.clock} clock, auto backend: {name} ({why})")
    results = []
    for channels, size in SHAPES:
        x, off = _inputs(args, channels, size, device)
        ops = _methods(channels, device)
        times: dict[str, list[float]] = {f"{k}/{m}": [] for k in ops for m in ("fwd", "fwdbwd")}
        for _ in range(args.warmup + args.rounds):
            for key, op in ops.items():
                a = _frames_channels_last(x) if key == "dw2d_cl" else x
                with torch.no_grad():
                    _sync(device)
                    t0 = clock()
                    op(a, off)
                    _sync(device)
                    times[f"{key}/fwd"].append(clock() - t0)
                if key == "copy":
                    continue
                xg, og = a.detach().clone().requires_grad_(), off.clone().requires_grad_()
                _sync(device)
                t0 = clock()
                op(xg, og).sum().backward()
                _sync(device)
                times[f"{key}/fwdbwd"].append(clock() - t0)
        ref = sifa_attention_reference(x.double(), off.double())
        results.append(
            {
                "shape": f"C{channels}@{size}²",
                "median_s": {k: statistics.median(v[args.warmup :]) for k, v in times.items() if v},
                "max_err": {
                    k: (ops[k](x, off).double() - ref).abs().max().item() for k in ("naive", "torch", "fused")
                },
            }
        )
    # Memory after timing: fixing malloc's mmap threshold makes every allocation fault fresh pages.
    measure_peak = device.type == "cuda" or (_fix_malloc_threshold() and os.path.exists("/proc/self/clear_refs"))
    for row, (channels, size) in zip(results, SHAPES):
        x, off = _inputs(args, channels, size, device, args.mem_batch)
        ops = _methods(channels, device)
        fmap = x.nbytes
        mem = {}
        for key in ("naive", "torch", "fused", "dw3d"):
            xg, og = x.clone().requires_grad_(), off.clone().requires_grad_()
            op = ops[key]
            entry = {"saved": _saved_bytes(functools.partial(op, xg, og)) / fmap}
            if measure_peak:
                xg, og = x.clone().requires_grad_(), off.clone().requires_grad_()
                peak = _peak_bytes(functools.partial(op, xg, og), device)
                unavoidable = 2 * fmap + (og.nbytes if key != "dw3d" else 0)  # y, grad x, grad offsets
                entry["peak"] = peak / fmap
                entry["work"] = (peak - unavoidable) / fmap
            mem[key] = entry
        row["memory_fmaps"] = mem
        _print_row(row)
    return results


def _print_row(row: dict) -> None:
    med = row["median_s"]
    print(f"\n{row['shape']}  (median ms; × = naive / method; for yardsticks f = fused / yardstick)")
    print(f"  {'method':8s} {'fwd':>8s} {'fwd+bwd':>8s} {'fwd':>7s} {'fwd+bwd':>7s}  memory (feature maps)   max err")
    for key in ("naive", "torch", "fused", "dw3d", "dw2d_cl", "copy"):
        fwd, fb = med[f"{key}/fwd"], med.get(f"{key}/fwdbwd")
        if key in ("naive", "torch", "fused"):
            r_fwd = f"{med['naive/fwd'] / fwd:6.1f}×"
            r_fb = f"{med['naive/fwdbwd'] / fb:6.1f}×"
        else:
            r_fwd = f"{med['fused/fwd'] / fwd:6.1f}f"
            r_fb = f"{med['fused/fwdbwd'] / fb:6.1f}f" if fb else ""
        mem = row["memory_fmaps"].get(key)
        mem_s = ""
        if mem:
            mem_s = f"saved {mem['saved']:4.1f}"
            if "peak" in mem:
                mem_s += f" peak {mem['peak']:4.1f} work {mem['work']:4.1f}"
        err = row["max_err"].get(key)
        err_s = f"{err:.1e}" if err is not None else ""
        print(f"  {key:8s} {_fmt_ms(fwd)} {_fmt_ms(fb) if fb else '':>8s} {r_fwd:>7s} {r_fb:>7s}  {mem_s:33s} {err_s}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (C++ kernel) or cuda (Triton kernels)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (interleaved across methods)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--mem-batch", type=int, default=16, help="batch of the memory measurement (larger maps)")
    parser.add_argument("--frames", type=int, default=4, help="T after the early temporal stride")
    parser.add_argument("--offset-std", type=float, default=0.5, help="std of the random offsets in pixels")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")
    run(args)
    return 0
