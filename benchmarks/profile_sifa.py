"""Where the time goes: ``torch.profiler`` of SIFA models and their C2D twins, grouped by kind of op.

For each model (offset convs given non-zero weights, as in a trained model): one warm-up, then ``--repeats``
profiled inference forwards (or training steps with ``--mode train``) on a random clip; prints the top ops by self
CPU time (per op, the minimum over the runs) and a breakdown by category (convolution kernels, batch norm, SIFA
operator, attention/matmul, norms, copies and layout changes, elementwise), side by side::

    python benchmarks/profile_sifa.py --models sifa_resnet50,c2d_resnet50 --threads 2
    python benchmarks/profile_sifa.py --models sifa_swin_tiny_patch4_window7_224,c2d_swin_tiny_patch4_window7_224
    python benchmarks/profile_sifa.py --models sifa_resnet_pico --frames 8 --size 32 --mode train

On a shared machine, prefer ``--threads 1``: self CPU times are then per-op work, not time spent waiting for a
descheduled OpenMP thread.
"""

from __future__ import annotations

import argparse
import re
import sys

import torch

from sifa_hub.bench import profile_call, spec_for

# First match wins; patterns are matched against profiler op names.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("SIFA operator", r"^sifa_hub::|_SifaFunction|grid_sampler"),
    ("conv: slow_conv3d (im2col)", r"slow_conv3d"),
    ("conv: oneDNN", r"mkldnn_convolution|mkldnn_rnn|onednn"),
    ("conv: other", r"conv"),
    ("batch norm", r"batch_norm"),
    ("attention (sdpa/softmax/bmm)", r"scaled_dot_product|_flash_attention|softmax|bmm|baddbmm"),
    ("linear / matmul", r"addmm|::mm$|matmul|linear"),
    ("layer norm", r"layer_norm"),
    ("copy / layout", r"copy_|contiguous|clone|cat$|stack|roll|index|pad|constant_pad|permute|transpose|reshape"),
    ("pooling", r"pool"),
    ("elementwise / activations", r"add|mul|sub|div|sigmoid|relu|gelu|clamp|mean|sum|where|fill_|zero_"),
)


def categorize(name: str) -> str:
    """The category of a profiler op name (``"other"`` if no pattern matches)."""
    for category, pattern in CATEGORIES:
        if re.search(pattern, name):
            return category
    return "other"


def min_self_ms(profs: list[torch.profiler.profile]) -> dict[str, float]:
    """Self CPU ms of every op, the minimum over several profiled runs (robust to preemption on a shared host)."""
    out: dict[str, float] = {}
    for prof in profs:
        for e in prof.key_averages():
            ms = e.self_cpu_time_total / 1e3
            out[e.key] = min(out.get(e.key, ms), ms)
    return out


def breakdown(self_ms: dict[str, float]) -> tuple[dict[str, float], float]:
    """Self CPU ms per category, and the total self CPU ms (``bench::`` annotation ranges excluded)."""
    out: dict[str, float] = {}
    total = 0.0
    for name, ms in self_ms.items():
        if name.startswith("bench::"):
            continue
        total += ms
        cat = categorize(name)
        out[cat] = out.get(cat, 0.0) + ms
    return out, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="sifa_resnet50,c2d_resnet50", help="comma-separated")
    parser.add_argument("--mode", choices=("infer", "train"), default="infer")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--rows", type=int, default=12, help="rows of each model's top-op table")
    parser.add_argument("--repeats", type=int, default=3, help="profiled runs; per op, the minimum is kept")
    args = parser.parse_args(argv)
    if min(args.batch, args.frames, args.size, args.repeats) < 1:
        parser.error("--batch, --frames, --size and --repeats must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0))
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    columns: dict[str, tuple[dict[str, float], float]] = {}
    for name in names:
        try:
            spec = spec_for(name)
        except ValueError as e:
            parser.error(str(e))
        model = spec.build_trained_path()  # the trained path: non-zero offsets (see sifa_hub.bench)
        runs = [profile_call(model, x, args.mode, args.dtype) for _ in range(args.repeats)]
        self_ms = min_self_ms([prof for prof, _ in runs])
        print(f"\n=== {name}: {args.mode} b{args.batch} {args.dtype}, SIFA operator calls: {runs[0][1]} ===")
        print(f"top ops, self CPU ms (min of {args.repeats} runs):")
        for op, ms in sorted(self_ms.items(), key=lambda kv: -kv[1])[: args.rows]:
            print(f"  {op:<52} {ms:10.2f}")
        columns[name] = breakdown(self_ms)
        del model, runs
    header = f"{'category (self CPU ms)':<32}" + "".join(f"{n[:24]:>26}" for n in columns)
    print("\n" + header)
    cats = [c for c, _ in CATEGORIES] + ["other"]
    for cat in cats:
        cells = [cols.get(cat, 0.0) for cols, _ in columns.values()]
        if any(cells):
            row = "".join(f"{v:>16.1f} ({100 * v / tot:4.1f}%)" for v, (_, tot) in zip(cells, columns.values()))
            print(f"{cat:<32}" + row)
    print(f"{'total':<32}" + "".join(f"{tot:>16.1f}         " for _, tot in columns.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
