"""Measurements of one model: latency, training step, peak memory, and the SIFA operator's profiled share.

* inference latency: median of ``repeats`` calls after one warm-up call (``torch.inference_mode``);
* one training step: forward + cross-entropy (summed over the heads of multi-head models) + backward + AdamW
  step + ``zero_grad(set_to_none=True)``, median of ``repeats`` steps after one warm-up step;
* peak memory of the warm-up call/step (see :func:`peak_memory`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..utils.flops import instrument_sifa
from ..utils.runtime import autocast, synchronize
from .specs import NUM_CLASSES, output_logits

__all__ = [
    "MIB",
    "ModelInfo",
    "Result",
    "amp_of",
    "heads_loss",
    "infer_call",
    "measure_setting",
    "peak_memory",
    "profile_call",
    "profile_sifa_share",
    "storage_bytes",
]

MIB = 1024**2
DTYPES = {"fp32": "none", "bf16": "bf16"}  # benchmark dtype name -> sifa_hub.utils.runtime.autocast amp


@dataclasses.dataclass
class Result:
    """Figures of one model in one setting (``None`` where not measured)."""

    model: str
    mode: str  # "infer" or "train"
    batch: int
    dtype: str  # "fp32" or "bf16" (autocast)
    times_s: list[float] = dataclasses.field(default_factory=list)
    cpu_times_s: list[float] = dataclasses.field(default_factory=list)  # process CPU time, all threads
    peak_bytes: int | None = None
    error: str | None = None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times_s) if self.times_s else None

    @property
    def median_cpu_s(self) -> float | None:
        return statistics.median(self.cpu_times_s) if self.cpu_times_s else None

    @property
    def throughput(self) -> float | None:
        """Clips per second."""
        m = self.median_s
        return self.batch / m if m else None


@dataclasses.dataclass
class ModelInfo:
    """Per-model figures that do not depend on the setting."""

    name: str
    params: int | None = None
    flops: int | None = None  # one clip, forward
    sifa_flops: int | None = None
    build_s: float | None = None
    wall_s: float | None = None
    error: str | None = None


def amp_of(dtype: str) -> str:
    """The :func:`sifa_hub.utils.runtime.autocast` mode of a benchmark dtype (``"fp32"`` or ``"bf16"``)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtypes: unknown dtype {dtype!r}; use 'fp32' and/or 'bf16'")
    return DTYPES[dtype]


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors``."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for state in optimizer.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor))


def peak_memory(fn: Callable[[], Any], device: torch.device, resident_bytes: int) -> tuple[Any, int]:
    """Run ``fn`` once and return ``(fn(), peak bytes allocated while it ran)``.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (it counts every live tensor).
    CPU: ``torch.profiler`` with ``profile_memory=True`` records every allocation and free of PyTorch's CPU
    allocator during ``fn``; the peak of their running sum (in time order) is added to ``resident_bytes``, the
    tensors alive before ``fn`` (parameters, buffers, optimizer state, inputs). This is the CPU analogue of
    ``max_memory_allocated``: allocator bytes, independent of malloc caching and of what earlier models in the same
    process left behind (an RSS high-water mark is neither).

    Args:
        fn: the call or step to measure.
        device: where it runs.
        resident_bytes: bytes of the tensors alive before ``fn`` (CPU only; CUDA counts them itself).
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        synchronize(device)
        return out, torch.cuda.max_memory_allocated(device)
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return out, resident_bytes + peak


def heads_loss(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``model(x)``, summed over the heads of multi-head models (``forward_heads``, SIFA-Net)."""
    heads = getattr(model, "forward_heads", model)
    return torch.stack([nn.functional.cross_entropy(z.float(), labels) for z in output_logits(heads(x))]).sum()


def infer_call(model: nn.Module, x: torch.Tensor, dtype: str) -> Callable[[], Any]:
    """A closure running one inference forward of ``model`` on ``x`` (``inference_mode``, autocast of ``dtype``);
    puts the model in eval mode."""
    model.eval()

    def call() -> Any:
        with torch.inference_mode(), autocast(x.device, amp_of(dtype)):
            return model(x)

    return call


def _train_call(model: nn.Module, x: torch.Tensor, dtype: str, seed: int) -> tuple[Callable[[], Any], Any, int]:
    """A training-step closure, its optimizer and the bytes of the optimizer state (created up front)."""
    model.train()
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (x.shape[0],), generator=gen).to(x.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # Create AdamW's state up front so the measured steps are steady-state steps (state resident).
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    def call() -> Any:
        with autocast(x.device, amp_of(dtype)):
            loss = heads_loss(model, x, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return call, optimizer, storage_bytes(_optimizer_tensors(optimizer))


def measure_setting(model: nn.Module, clip: torch.Tensor, result: Result, repeats: int, seed: int = 0) -> None:
    """Fill ``result``: one memory-measured warm-up call/step, then ``repeats`` timed ones.

    Args:
        model: the model, on the clip's device.
        clip: ``(B_max, 3, T, H, W)``; the first ``result.batch`` clips are used.
        result: the setting (mode, batch, dtype) to measure; its figures are filled in.
        repeats: timed calls/steps.
        seed: seed of the training labels.
    """
    x = clip[: result.batch]
    device = x.device
    resident = storage_bytes([*model.parameters(), *model.buffers(), x])
    optimizer = None
    if result.mode == "infer":
        call = infer_call(model, x, result.dtype)
    else:
        call, optimizer, state_bytes = _train_call(model, x, result.dtype, seed)
        resident += state_bytes
    try:
        _, result.peak_bytes = peak_memory(call, device, resident)
        for _ in range(repeats):
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            synchronize(device)
            result.times_s.append(time.perf_counter() - start)
            result.cpu_times_s.append(time.process_time() - start_cpu)
    finally:
        if optimizer is not None:
            model.zero_grad(set_to_none=True)
            del optimizer


@contextlib.contextmanager
def _annotate_sifa(model: nn.Module, counter: dict[str, int]) -> Iterator[None]:
    """Profiler ranges ``bench::sifa_attention`` (every operator call, whatever backend; counted in ``counter``)
    and ``bench::SIFA_module`` (forward of each :class:`sifa_hub.layers.SIFA`: offset input + offset conv + op)."""
    from torch.autograd.profiler import record_function

    from ..layers import SIFA

    def on_call(op: Callable[..., torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
        counter["calls"] += 1
        with record_function("bench::sifa_attention"):
            return op(*args, **kwargs)

    open_ranges: list[record_function] = []

    def pre_hook(module: nn.Module, args: Any) -> None:
        rf = record_function("bench::SIFA_module")
        rf.__enter__()
        open_ranges.append(rf)

    def post_hook(module: nn.Module, args: Any, output: Any) -> None:
        open_ranges.pop().__exit__(None, None, None)

    handles = []
    for m in model.modules():
        if isinstance(m, SIFA):
            handles += [m.register_forward_pre_hook(pre_hook), m.register_forward_hook(post_hook)]
    try:
        with instrument_sifa(on_call):
            yield
    finally:
        for h in handles:
            h.remove()


def profile_call(
    model: nn.Module, x: torch.Tensor, mode: str = "infer", dtype: str = "fp32"
) -> tuple[torch.profiler.profile, int]:
    """``torch.profiler`` (CPU activity) of one inference forward or training step, after one warm-up.

    The profiled call runs inside a ``bench::forward`` (inference) or ``bench::train_step`` range, with the
    ranges of :func:`_annotate_sifa`. A training step is forward + summed cross-entropy + backward (no optimizer).

    Returns:
        ``(profiler, SIFA operator calls in the profiled call)``.
    """
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    device = x.device
    labels = torch.zeros(x.shape[0], dtype=torch.long, device=device)

    def call() -> None:
        if mode == "infer":
            with torch.inference_mode(), autocast(device, amp_of(dtype)):
                model(x)
            return
        with autocast(device, amp_of(dtype)):
            loss = heads_loss(model, x, labels)
        loss.backward()
        model.zero_grad(set_to_none=True)

    model.train(mode == "train")
    counter = {"calls": 0}
    with _annotate_sifa(model, counter):
        call()  # warm-up
        counter["calls"] = 0
        name = "bench::forward" if mode == "infer" else "bench::train_step"
        with profile(activities=[ProfilerActivity.CPU]) as prof, record_function(name):
            call()
    return prof, counter["calls"]


def profile_sifa_share(
    model: nn.Module, x: torch.Tensor, repeats: int = 3, row_limit: int = 15
) -> tuple[dict[str, float], str]:
    """Profile inference forwards; return the SIFA operator's share of one and its profiler table.

    Of ``repeats`` profiled forwards the fastest is kept (the least disturbed on a shared machine); shares are
    taken within that one forward.

    Returns:
        ``({"forward_ms", "sifa_op_ms", "sifa_module_ms", "sifa_op_share", "sifa_module_share", "calls"}, table)``:
        inclusive CPU times of the ``bench::`` ranges (see :func:`profile_call`), and the profiler table sorted
        by self CPU time followed by those ranges.
    """
    runs = [profile_call(model, x, "infer") for _ in range(repeats)]
    prof, calls = min(
        runs, key=lambda r: next(e.cpu_time_total for e in r[0].key_averages() if e.key == "bench::forward")
    )
    averages = prof.key_averages()
    totals = {e.key: e.cpu_time_total for e in averages}
    forward_us = totals.get("bench::forward", 0.0)
    op_us = totals.get("bench::sifa_attention", 0.0)
    module_us = totals.get("bench::SIFA_module", 0.0)
    stats = {
        "forward_ms": forward_us / 1e3,
        "sifa_op_ms": op_us / 1e3,
        "sifa_module_ms": module_us / 1e3,
        "sifa_op_share": op_us / forward_us if forward_us else math.nan,
        "sifa_module_share": module_us / forward_us if forward_us else math.nan,
        "calls": float(calls),
    }
    table = averages.table(sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=48)
    rows = [e for e in averages if e.key.startswith("bench::")]
    annot = "\n".join(f"{e.key:<28} calls {e.count:>4}  CPU total {e.cpu_time_total / 1e3:10.1f} ms" for e in rows)
    return stats, table + "\nAnnotations (inclusive CPU time):\n" + annot
