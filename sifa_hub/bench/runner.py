"""The model benchmark run: every model of a config measured in one process on the same random clip.

Every model sees the same random clip ``(B, 3, T, H, W)`` (16 × 224² by default); for each, parameters and FLOPs
of one clip (:func:`sifa_hub.utils.flops.count_flops`), then every setting of :func:`plan_settings` measured by
:func:`sifa_hub.bench.measure.measure_setting`, and for the profiled model the SIFA operator's share of
inference time. Figures are reported as ratios to the reference **C2D-R50** (timm ``resnet50`` run frame-wise on
the ``B·T`` frames) by :mod:`sifa_hub.bench.report`.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..utils.flops import count_flops
from ..utils.io import atomic_write_json
from ..utils.runtime import cpu_flags, resolve_device
from .measure import DTYPES, MIB, ModelInfo, Result, measure_setting, profile_sifa_share
from .report import format_report, json_ready, write_report
from .specs import MODEL_SPECS, QUICK_MODELS, REFERENCE_MODEL, ModelSpec, spec_for

__all__ = ["BenchConfig", "loadavg", "machine_description", "plan_settings", "run_benchmarks", "run_models"]

Log = Callable[[str], None]


@dataclasses.dataclass
class BenchConfig:
    """What to run (the arguments of :func:`run_models`)."""

    models: list[str]
    batch_sizes: list[int]
    dtypes: list[str]
    modes: list[str]
    repeats: int = 5
    train_repeats: int = 3
    train_batch_sizes: list[int] | None = None  # None: every batch size
    budget: bool = True
    frames: int = 16
    size: int = 224
    device: str = "cpu"
    threads: int | None = None
    profile_model: str | None = "sifa_resnet50"
    reference: str = REFERENCE_MODEL
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for d in self.dtypes:
            if d not in DTYPES:
                raise ValueError(f"dtypes: unknown dtype {d!r}; use 'fp32' and/or 'bf16'")
        for m in self.modes:
            if m not in ("infer", "train"):
                raise ValueError(f"modes: unknown mode {m!r}; use 'infer' and/or 'train'")
        for name in ("repeats", "train_repeats", "frames", "size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive, got {self.batch_sizes}")
        if not self.models:
            raise ValueError("models: no model to run")
        resolve_device(self.device)  # ValueError naming the device if it cannot be used


def plan_settings(spec: ModelSpec, config: BenchConfig) -> list[tuple[str, int, str, int]]:
    """The ``(mode, batch, dtype, repeats)`` settings of one model, in run order.

    With ``config.budget`` (the default) the run fits the time budget of a 2-core CPU:

    1. published peers (``role == "peer"``) run the smallest batch only, and train in the first dtype only;
    2. heavy models do not train above the smallest batch;
    3. training steps: ``train_repeats`` at the smallest batch for models that are not heavy, else 1;
    4. every inference setting keeps ``repeats``.
    """
    smallest = min(config.batch_sizes)
    plan = []
    for mode in config.modes:
        for batch in config.batch_sizes:
            for i, dtype in enumerate(config.dtypes):
                if mode == "train" and config.train_batch_sizes and batch not in config.train_batch_sizes:
                    continue
                if not config.budget:
                    plan.append((mode, batch, dtype, config.repeats if mode == "infer" else config.train_repeats))
                    continue
                if spec.role == "peer" and (batch != smallest or (mode == "train" and i > 0)):
                    continue
                if mode == "infer":
                    plan.append((mode, batch, dtype, config.repeats))
                elif batch == smallest:
                    plan.append((mode, batch, dtype, 1 if spec.heavy else config.train_repeats))
                elif not spec.heavy:
                    plan.append((mode, batch, dtype, 1))
    return plan


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_benchmarks(
    config: BenchConfig,
    specs: dict[str, ModelSpec] | None = None,
    log: Log = print,
    on_model_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every model of ``config`` in this process.

    Args:
        config: what to run (validated here).
        specs: specs to use instead of :func:`sifa_hub.bench.specs.spec_for` (by name).
        log: progress sink.
        on_model_done: called with the run so far after every model (e.g. to write partial reports).

    Returns:
        ``{"specs", "infos", "results", "profile", "meta"}``, the input of
        :func:`sifa_hub.bench.report.format_report`.
    """
    config.validate()
    resolved = {name: (specs or {}).get(name) or spec_for(name) for name in config.models}
    device = resolve_device(config.device)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, resolved, device, log, on_model_done)
    finally:
        torch.set_num_threads(threads)


def _build(spec: ModelSpec, config: BenchConfig, clip: torch.Tensor, info: ModelInfo, log: Log) -> nn.Module | None:
    """Build, perturb and move the model, count its parameters and FLOPs on one clip; ``None`` if not built."""
    t0 = time.perf_counter()
    try:
        model = spec.build_trained_path(config.seed).to(clip.device)
    except Exception as e:  # a model that cannot be built is reported, the run goes on
        info.error = f"{type(e).__name__}: {e}"
        log(f"[{info.name}] not built: {info.error}")
        return None
    info.build_s = time.perf_counter() - t0
    info.params = sum(p.numel() for p in model.parameters())
    try:
        model.eval()
        info.flops, info.sifa_flops = count_flops(model, clip[:1])
    except Exception as e:
        info.error = f"FLOPs: {type(e).__name__}: {e}"
        log(f"[{info.name}] {info.error}")
    return model


def _measure_model(
    spec: ModelSpec, model: nn.Module, clip: torch.Tensor, config: BenchConfig, log: Log
) -> list[Result]:
    """Every planned setting of one model (errors are recorded per setting, the run goes on)."""
    results = []
    for mode, batch, dtype, repeats in plan_settings(spec, config):
        result = Result(spec.name, mode, batch, dtype)
        results.append(result)
        try:
            measure_setting(model, clip, result, repeats, config.seed)
        except Exception as e:
            result.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        _free(clip.device)
        shown = f"{result.median_s * 1e3:9.1f} ms" if result.median_s else f"error {result.error}"
        mem = f"{result.peak_bytes / MIB:8.0f} MiB" if result.peak_bytes else ""
        log(f"[{spec.name}] {mode} b{batch} {dtype}: {shown} {mem} (n={len(result.times_s)})")
    return results


def _profile(name: str, model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    try:
        stats, table = profile_sifa_share(model, x)
        return {"model": name, "stats": stats, "table": table}
    except Exception as e:
        return {"model": name, "error": f"{type(e).__name__}: {e}"}


def _run(
    config: BenchConfig,
    resolved: dict[str, ModelSpec],
    device: torch.device,
    log: Log,
    on_model_done: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(config.seed)
    clip = torch.randn(max(config.batch_sizes), 3, config.frames, config.size, config.size, generator=gen).to(device)
    meta = machine_description(device)
    meta["load_before"] = loadavg()
    start = time.perf_counter()
    run: dict[str, Any] = {"specs": resolved, "infos": [], "results": [], "profile": None, "meta": meta}

    def snapshot() -> dict[str, Any]:
        meta.update(load_after=loadavg(), total_s=time.perf_counter() - start, config=dataclasses.asdict(config))
        return run

    for name in config.models:
        info = ModelInfo(name)
        run["infos"].append(info)
        t0 = time.perf_counter()
        model = _build(resolved[name], config, clip, info, log)
        if model is None:
            continue
        run["results"] += _measure_model(resolved[name], model, clip, config, log)
        if name == config.profile_model and device.type == "cpu":
            run["profile"] = _profile(name, model, clip[:1])
        info.wall_s = time.perf_counter() - t0
        log(f"[{name}] done in {info.wall_s:.1f} s")
        del model
        _free(device)
        if on_model_done is not None:
            on_model_done(snapshot())
    return snapshot()


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages as text (``"n/a"`` where unavailable)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> str:
    keep = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    flags = cpu_flags()
    if not flags:
        return "unknown"
    return ", ".join(k for k in keep if k in flags) or "none of avx2/avx512/amx"


def machine_description(device: torch.device) -> dict[str, Any]:
    """CPU/GPU model, cores, threads and library versions."""
    import importlib.metadata as md

    from ..ops import selected_backend

    versions = {}
    for pkg in ("torch", "torchvision", "timm", "transformers", "triton"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "n/a"
    backend, why = selected_backend(device)
    meta: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": versions,
        "device": str(device),
        "sifa_backends": f"auto → {backend!r} ({why})",
    }
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    return meta


def run_models(
    models: Sequence[str] | None = None,
    *,
    quick: bool = False,
    batch_sizes: Sequence[int] | None = None,
    dtypes: Sequence[str] | None = None,
    modes: Sequence[str] = ("infer", "train"),
    repeats: int = 5,
    train_repeats: int = 3,
    train_batch_sizes: Sequence[int] | None = None,
    budget: bool = True,
    frames: int = 16,
    size: int = 224,
    device: str = "cpu",
    threads: int | None = None,
    profile_model: str | None = "sifa_resnet50",
    reference: str = REFERENCE_MODEL,
    out: str | None = None,
    json_path: str | None = None,
    specs: dict[str, ModelSpec] | None = None,
    log: Log = print,
) -> str:
    """Benchmark models (``sifa-hub bench models``); write the reports after every model; return the Markdown.

    Args:
        models: model names (:data:`MODEL_SPECS` or any timm video model); ``None``: :data:`QUICK_MODELS` with
            ``quick``, else all of :data:`MODEL_SPECS`.
        quick: defaults of a quick run (batch 1, fp32).
        batch_sizes: default ``[1]`` with ``quick``, else ``[1, 4]``.
        dtypes: ``"fp32"`` and/or ``"bf16"`` (autocast); default ``["fp32"]`` with ``quick``, else both.
        modes: ``"infer"`` and/or ``"train"``.
        repeats, train_repeats: timed inference calls / training steps after the warm-up.
        train_batch_sizes: the batch sizes that train (``None``: all).
        budget: apply the time-budget rules of :func:`plan_settings`.
        frames, size: the clip ``(B, 3, frames, size, size)``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        threads: ``torch.set_num_threads`` for the run.
        profile_model: model whose SIFA operator share is profiled (CPU; skipped if not run).
        reference: model the ratios are relative to.
        out: Markdown report (the text between its generated-section markers is replaced).
        json_path: the raw run as JSON (:func:`sifa_hub.bench.report.render_models` formats it again).
        specs: specs to use instead of the registered ones (by name).
        log: progress sink.
    """
    models = list(models) if models else list(QUICK_MODELS if quick else MODEL_SPECS)
    config = BenchConfig(
        models=models,
        batch_sizes=list(batch_sizes or ([1] if quick else [1, 4])),
        dtypes=list(dtypes or (["fp32"] if quick else ["fp32", "bf16"])),
        modes=list(modes),
        repeats=repeats,
        train_repeats=train_repeats,
        train_batch_sizes=list(train_batch_sizes) if train_batch_sizes else None,
        budget=budget,
        frames=frames,
        size=size,
        device=device,
        threads=threads,
        profile_model=profile_model if profile_model in models else None,
        reference=reference,
    )

    def save(run: dict[str, Any], final: bool = False) -> str:
        report = format_report(run)
        if not final:
            report = f"**Partial run: {len(run['infos'])} of {len(config.models)} models done.**\n\n{report}"
        if out:
            write_report(out, report)
        if json_path:
            atomic_write_json(json_path, json_ready(run), indent=1)
        return report

    def save_partial(run: dict[str, Any]) -> None:
        save(run)

    return save(run_benchmarks(config, specs, log, on_model_done=save_partial), final=True)
