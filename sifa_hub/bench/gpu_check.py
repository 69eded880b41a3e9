"""Device check (``sifa-hub bench gpu``, ``python benchmarks/gpu_check.py``): is the SIFA operator right and fast on
this GPU, and what does it cost in a model? One run takes under 5 minutes on one GPU and writes
``gpu_check.md`` and ``gpu_check.json``.

1. **correctness** of every backend usable on the device against the float64 reference: float32 and float64
   forward and gradients, bf16 / fp16 inputs under autocast, ``gradcheck`` in float64 on tiny shapes, odd sizes,
   out-of-frame offsets, groups, dilation and softmax;
2. **op**: the operator at the SIFA-Net R50 layer shapes (B 8, T 4 and 8) against the reference, the pure-PyTorch
   backend, a depthwise 3×3 conv and a copy of the same tensor, forward and forward + backward, with the
   achieved memory bandwidth of the fused kernel against the measured copy bandwidth;
3. **models**: ``sifa_resnet50`` / ``c2d_resnet50`` and ``sifa_swin_base`` / ``c2d_swin_base``: training step and
   inference throughput and peak memory under bf16 autocast in channels-last memory format, batch 8, 16×224²;
4. **compile**: ``torch.compile`` of one model of each family, its output against eager and its speed.

The report also judges the GPU speed targets (:data:`OP_TARGETS`: the fused op ≥ 10× the naive algorithm forward
and ≥ 5× forward + backward at every op shape; :data:`MODEL_TARGETS`: ``sifa_resnet50`` training throughput
≥ 0.9× its twin under bf16), and both files are rewritten after every section, so a run stopped by a time limit
keeps what it measured.

``tiny=True`` runs the same code paths on the CPU with tiny shapes and the pico models, and the Triton kernels in
Triton's interpreter: the test suite runs it so the script cannot rot. Its timings are CPU timings of toy shapes
and mean nothing. The interpreter needs ``TRITON_INTERPRET=1`` in the environment before Python starts (importing
``sifa_hub`` imports triton, which reads it then); ``python benchmarks/gpu_check.py --tiny`` sets it. Without it
the triton backend is reported as skipped, with the reason.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..ops import available_backends, sifa_attention
from ..utils.io import atomic_write_json, atomic_write_text
from ..utils.runtime import resolve_device, synchronize
from .measure import MIB, Result, measure_setting
from .op import op_inputs, op_methods, time_methods
from .runner import machine_description
from .specs import spec_for

__all__ = ["MODEL_TARGETS", "OP_TARGETS", "SECTIONS", "CheckPlan", "run_gpu_check", "speed_targets"]

SECTIONS = ("correctness", "op", "models", "compile")
Log = Callable[[str], None]
# (name, B, C, T, H, W, K, dilation, groups, normalize, offset std in px): odd sizes, borders, groups, softmax.
CORRECTNESS_CASES: tuple[tuple[str, int, int, int, int, int, int, int, int, str | None, float], ...] = (
    ("odd sizes", 2, 12, 3, 7, 5, 3, 1, 1, None, 0.7),
    ("out-of-frame offsets", 1, 8, 3, 6, 6, 3, 1, 1, None, 6.0),
    ("groups 4 + softmax", 1, 16, 4, 5, 6, 3, 1, 4, "softmax", 1.0),
    ("K 5, dilation 2, groups 2", 1, 8, 2, 6, 5, 5, 2, 2, None, 1.0),
)
# Speed targets on the GPU (issue 12): the fused op against the naive algorithm at every op shape, and SIFA-Net's
# training throughput against its twin under bf16. Reported beside the checks; ``passed`` is correctness only.
OP_TARGETS = {"fwd": 10.0, "fwdbwd": 5.0}
MODEL_TARGETS: tuple[tuple[str, str, float], ...] = (("sifa_resnet50", "train", 0.9),)
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4}  # max |err| relative to max |reference|
HALF_TOLERANCE = 3e-2


@dataclasses.dataclass(frozen=True)
class CheckPlan:
    """The sizes of one check run (:meth:`full` on a GPU, :meth:`tiny` on the CPU)."""

    device: torch.device
    op_shapes: tuple[tuple[int, int], ...]  # (C, H = W)
    op_batch: int
    op_frames: tuple[int, ...]
    rounds: int
    warmup: int
    model_pairs: tuple[tuple[str, str], ...]  # (SIFA model, C2D twin)
    model_batch: int
    frames: int
    size: int
    repeats: int
    compile_models: tuple[str, ...]

    @classmethod
    def full(cls, device: torch.device) -> CheckPlan:
        return cls(
            device, ((128, 28), (256, 14), (512, 7)), 8, (4, 8), 10, 3,
            (("sifa_resnet50", "c2d_resnet50"),
             ("sifa_swin_base_patch4_window7_224", "c2d_swin_base_patch4_window7_224")),
            8, 16, 224, 5, ("sifa_resnet50", "sifa_swin_base_patch4_window7_224"),
        )  # fmt: skip

    @classmethod
    def tiny(cls) -> CheckPlan:
        return cls(
            torch.device("cpu"), ((8, 6),), 1, (3,), 1, 0,
            (("sifa_resnet_pico", "c2d_resnet_pico"), ("sifa_swin_pico", "c2d_swin_pico")),
            1, 8, 32, 1, ("sifa_resnet_pico", "sifa_swin_pico"),
        )  # fmt: skip


def _check(name: str, backend: str, dtype: str, err: float | None, tol: float, detail: str = "") -> dict[str, Any]:
    passed = err is not None and err <= tol
    return {"name": name, "backend": backend, "dtype": dtype, "max_err": err, "tol": tol, "passed": passed,
            "detail": detail}  # fmt: skip


def _case_inputs(case: tuple, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    _, b, c, t, h, w, k, _, _, _, std = case
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, t, h, w, generator=gen, dtype=torch.float64)
    off = torch.randn(b, 2 * k * k, t - 1, h, w, generator=gen, dtype=torch.float64) * std
    return x.to(device, dtype), off.to(device, dtype)


def _relative_errors(backend: str, case: tuple, dtype: torch.dtype, device: torch.device) -> list[float]:
    """Max |error| / max |reference| of the output and of the gradients of x and offsets."""
    _, _, _, _, _, _, k, d, g, norm, _ = case
    x, off = _case_inputs(case, dtype, device)
    x64, off64 = x.double().requires_grad_(), off.double().requires_grad_()
    x, off = x.requires_grad_(), off.requires_grad_()
    y = sifa_attention(x, off, k, d, g, norm, backend=backend)
    y_ref = sifa_attention(x64, off64, k, d, g, norm, backend="reference")
    grad = torch.randn(y_ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(device)
    got = [y, *torch.autograd.grad(y, (x, off), grad.to(dtype))]
    want = [y_ref, *torch.autograd.grad(y_ref, (x64, off64), grad)]
    return [((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item() for a, b in zip(got, want)]


def _half_error(backend: str, case: tuple, dtype: torch.dtype, device: torch.device) -> float:
    """Relative error of a half-precision input under autocast (computed in float32, cast back)."""
    _, _, _, _, _, _, k, d, g, norm, _ = case
    x, off = _case_inputs(case, torch.float32, device)
    with torch.autocast(device.type, dtype=dtype):
        y = sifa_attention(x.to(dtype), off.to(dtype), k, d, g, norm, backend=backend)
    if y.dtype != dtype:
        raise TypeError(f"output dtype {y.dtype}, expected {dtype}")
    ref = sifa_attention(x.to(dtype).double(), off.to(dtype).double(), k, d, g, norm, backend="reference")
    return ((y.double() - ref).abs().max() / ref.abs().max()).item()


def _gradcheck(backend: str, device: torch.device) -> bool:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 2, 3, 4, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    off = (torch.randn(1, 18, 1, 3, 4, generator=gen, dtype=torch.float64) * 0.7).to(device).requires_grad_()
    # The Triton backward accumulates with atomics: results may differ in the last bits between runs. On the CPU
    # (the interpreter runs one forward per perturbed input element otherwise) the fast mode checks random
    # projections of the Jacobian.
    return torch.autograd.gradcheck(
        lambda a, o: sifa_attention(a, o, backend=backend),
        (x, off),
        nondet_tol=1e-10,
        fast_mode=device.type == "cpu",
        raise_exception=False,
    )


def _backend_checks(backend: str, device: torch.device) -> list[dict[str, Any]]:
    checks = []
    for case in CORRECTNESS_CASES:
        for dtype, tol in TOLERANCES.items():
            errors = _relative_errors(backend, case, dtype, device)
            detail = "y {:.1e}, grad x {:.1e}, grad offsets {:.1e}".format(*errors)
            checks.append(_check(case[0], backend, str(dtype).split(".")[1], max(errors), tol, detail))
    halves = [torch.bfloat16, torch.float16]
    for dtype in halves:
        err = _half_error(backend, CORRECTNESS_CASES[0], dtype, device)
        checks.append(_check("autocast, half inputs", backend, str(dtype).split(".")[1], err, HALF_TOLERANCE))
    ok = _gradcheck(backend, device)
    checks.append(_check("gradcheck (1, 4, 2, 3, 4)", backend, "float64", 0.0 if ok else 1.0, 0.0, "gradcheck"))
    return checks


def check_correctness(device: torch.device, log: Log) -> dict[str, Any]:
    """Every backend usable on ``device`` (except the reference itself) against the reference."""
    checks, skipped = [], {}
    for backend, (usable, why) in available_backends(device).items():
        if backend == "reference":
            continue
        if not usable:
            skipped[backend] = why
            continue
        try:
            found = _backend_checks(backend, device)
        except Exception as e:  # a backend that crashes fails its check, the run goes on
            found = [_check("run", backend, "-", None, 0.0, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")]
        checks += found
        log(f"correctness {backend}: {sum(c['passed'] for c in found)}/{len(found)} passed")
    return {"checks": checks, "skipped": skipped, "passed": all(c["passed"] for c in checks) and bool(checks)}


def bench_op(plan: CheckPlan, log: Log) -> dict[str, Any]:
    """Op timings at the R50 shapes, ratios to the naive algorithm, and achieved vs copy bandwidth of the fused op."""
    rows = []
    for frames in plan.op_frames:
        for channels, size in plan.op_shapes:
            x, off = op_inputs(channels, size, plan.op_batch, frames, 0.5, plan.device)
            med = time_methods(op_methods(channels, plan.device), x, off, plan.rounds, plan.warmup)
            copy_bw = 2 * x.nbytes / med["copy/fwd"]  # read + write
            fused_bytes = 2 * x.nbytes + off.nbytes  # read x and offsets once, write y: the least traffic
            rows.append(
                {
                    "shape": f"B{plan.op_batch} C{channels} T{frames} {size}²",
                    "median_s": med,
                    "copy_gbps": copy_bw / 1e9,
                    "fused_gbps": fused_bytes / med["fused/fwd"] / 1e9,
                    "fused_vs_naive": {p: med[f"naive/{p}"] / med[f"fused/{p}"] for p in ("fwd", "fwdbwd")},
                }
            )
            log(f"op {rows[-1]['shape']}: fused fwd {med['fused/fwd'] * 1e3:.3f} ms")
    return {"rows": rows}


def _model_results(name: str, plan: CheckPlan) -> tuple[list[Result], int]:
    """Inference and training step of one model under bf16 autocast, channels-last; and its parameter count."""
    model = spec_for(name).build_trained_path().to(plan.device).to(memory_format=torch.channels_last_3d)
    gen = torch.Generator().manual_seed(0)
    clip = torch.randn(plan.model_batch, 3, plan.frames, plan.size, plan.size, generator=gen)
    clip = clip.to(plan.device).contiguous(memory_format=torch.channels_last_3d)
    results = []
    for mode in ("infer", "train"):
        result = Result(name, mode, plan.model_batch, "bf16")
        try:
            measure_setting(model, clip, result, plan.repeats)
        except Exception as e:
            result.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        results.append(result)
    params = sum(p.numel() for p in model.parameters())
    del model
    if plan.device.type == "cuda":
        torch.cuda.empty_cache()
    return results, params


def bench_models(plan: CheckPlan, log: Log) -> dict[str, Any]:
    """SIFA models against their C2D twins: throughput and peak memory, and the SIFA / twin ratios."""
    rows = []
    for sifa, twin in plan.model_pairs:
        (s_inf, s_tr), s_params = _model_results(sifa, plan)
        (c_inf, c_tr), c_params = _model_results(twin, plan)
        for s, c in ((s_inf, c_inf), (s_tr, c_tr)):
            row = {"model": sifa, "twin": twin, "mode": s.mode, "batch": s.batch, "error": s.error or c.error}
            for tag, r in (("sifa", s), ("twin", c)):
                row[f"{tag}_clips_per_s"] = r.throughput
                row[f"{tag}_peak_mib"] = r.peak_bytes / MIB if r.peak_bytes else None
            row["throughput_ratio"] = s.throughput / c.throughput if s.throughput and c.throughput else None
            row["params"] = {"sifa": s_params, "twin": c_params}
            rows.append(row)
            log(f"models {sifa} {s.mode}: SIFA / twin throughput {row['throughput_ratio']}")
    return {"rows": rows}


def _compile_one(name: str, plan: CheckPlan) -> dict[str, Any]:
    model = spec_for(name).build_trained_path().to(plan.device).eval()
    x = torch.randn(2, 3, plan.frames, plan.size, plan.size, generator=torch.Generator().manual_seed(0))
    x = x.to(plan.device)
    compiled = torch.compile(model)
    with torch.inference_mode():
        eager = model(x)
        start = time.perf_counter()
        out = compiled(x)  # the first call compiles
        synchronize(plan.device)
        compile_s = time.perf_counter() - start
        timings = {}
        for label, fn in (("eager", model), ("compiled", compiled)):
            synchronize(plan.device)
            start = time.perf_counter()
            for _ in range(plan.repeats):
                fn(x)
            synchronize(plan.device)
            timings[label] = (time.perf_counter() - start) / plan.repeats
    err = ((out - eager).abs().max() / eager.abs().max()).item()
    return {"model": name, "compile_s": compile_s, "max_rel_err": err, "passed": err <= 1e-3,
            "eager_ms": timings["eager"] * 1e3, "compiled_ms": timings["compiled"] * 1e3}  # fmt: skip


def check_compile(plan: CheckPlan, log: Log) -> dict[str, Any]:
    """``torch.compile`` of one model per family: float32 inference against eager, compile time, speed."""
    rows = []
    for name in plan.compile_models:
        try:
            row = _compile_one(name, plan)
        except Exception as e:
            row = {"model": name, "passed": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        rows.append(row)
        log(f"compile {name}: {'ok' if row['passed'] else 'FAILED'}")
    return {"rows": rows, "passed": all(r["passed"] for r in rows)}


def _f(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def _md_correctness(section: dict[str, Any]) -> list[str]:
    lines = ["## 1. Correctness against the float64 reference", "",
             "| backend | check | dtype | max rel. error | tolerance | passed | detail |",
             "|---|---|---|---:|---:|:---:|---|"]  # fmt: skip
    for c in section["checks"]:
        lines.append(
            f"| {c['backend']} | {c['name']} | {c['dtype']} | {_f(c['max_err'], '.1e')} | {c['tol']:.0e} | "
            f"{'yes' if c['passed'] else 'NO'} | {c['detail']} |"
        )
    lines += [f"Skipped backend `{b}`: {why}." for b, why in section["skipped"].items()]
    return lines + [""]


def _md_op(section: dict[str, Any]) -> list[str]:
    methods = ("naive", "reference", "torch", "fused", "dw3d", "dw2d_cl")
    header = " | ".join(methods) + " | copy | fused × naive (fwd / fwd+bwd) | fused GB/s | copy GB/s"
    lines = ["## 2. Operator (median ms, forward / forward + backward)", "", f"| shape | {header} |",
             "|---|" + "---:|" * (len(methods) + 4)]  # fmt: skip
    for r in section["rows"]:
        med = r["median_s"]
        cells = [f"{med[f'{m}/fwd'] * 1e3:.3f} / {med[f'{m}/fwdbwd'] * 1e3:.3f}" for m in methods]
        ratio = r["fused_vs_naive"]
        lines.append(
            f"| {r['shape']} | " + " | ".join(cells) + f" | {med['copy/fwd'] * 1e3:.3f} | "
            f"{ratio['fwd']:.1f}× / {ratio['fwdbwd']:.1f}× | {r['fused_gbps']:.1f} | {r['copy_gbps']:.1f} |"
        )
    return lines + [""]


def _md_models(section: dict[str, Any]) -> list[str]:
    lines = ["## 3. Models (bf16 autocast, channels-last)", "",
             "| SIFA model | twin | mode | batch | SIFA clips/s | twin clips/s | SIFA / twin | SIFA peak MiB "
             "| twin peak MiB |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in section["rows"]:
        if r["error"]:
            lines.append(f"| {r['model']} | {r['twin']} | {r['mode']} | {r['batch']} | error: {r['error']} | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['twin']} | {r['mode']} | {r['batch']} | {_f(r['sifa_clips_per_s'], '.2f')} | "
            f"{_f(r['twin_clips_per_s'], '.2f')} | {_f(r['throughput_ratio'], '.2f')}× | "
            f"{_f(r['sifa_peak_mib'], '.0f')} | {_f(r['twin_peak_mib'], '.0f')} |"
        )
    return lines + [""]


def _md_compile(section: dict[str, Any]) -> list[str]:
    lines = ["## 4. torch.compile (float32 inference, batch 2)", "",
             "| model | passed | max rel. error vs eager | compile s | eager ms | compiled ms |",
             "|---|:---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in section["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | NO | error: {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['model']} | {'yes' if r['passed'] else 'NO'} | {r['max_rel_err']:.1e} | {r['compile_s']:.1f} | "
            f"{r['eager_ms']:.2f} | {r['compiled_ms']:.2f} |"
        )
    return lines + [""]


def speed_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed targets (:data:`OP_TARGETS`, :data:`MODEL_TARGETS`) against the op and models sections' rows:
    ``[{"target", "setting", "value", "bound", "met"}]`` (``value`` ``None`` and ``met`` False where not measured)."""
    rows = []
    for r in results.get("op", {}).get("rows", []):
        for phase, bound in OP_TARGETS.items():
            value = r["fused_vs_naive"][phase]
            label = "forward" if phase == "fwd" else "forward + backward"
            rows.append({"target": f"fused op {label} ≥ {bound:g}× naive", "setting": r["shape"], "value": value,
                         "bound": bound, "met": value >= bound})  # fmt: skip
    model_rows = results.get("models", {}).get("rows", [])
    for model, mode, bound in MODEL_TARGETS:
        for r in model_rows:
            if r["model"] == model and r["mode"] == mode:
                value = r["throughput_ratio"]
                rows.append({"target": f"{model} {mode} throughput ≥ {bound:g}× {r['twin']} (bf16)",
                             "setting": f"batch {r['batch']}", "value": value, "bound": bound,
                             "met": value is not None and value >= bound})  # fmt: skip
    return rows


def _md_targets(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["## Speed targets", "", "| target | setting | measured | met |", "|---|---|---:|:---:|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['setting']} | {_f(r['value'], '.2f')}× | {'yes' if r['met'] else 'NO'} |")
    return lines + [""]


def format_gpu_report(report: dict[str, Any]) -> str:
    """The Markdown of a :func:`run_gpu_check` report."""
    meta = report["meta"]
    tiny = " (tiny: CPU, Triton interpreter, toy shapes — timings mean nothing)" if report["tiny"] else ""
    lines = [
        f"# SIFA device check{tiny}",
        "",
        f"Run: {meta['date_utc']}, {report['total_s']:.0f} s; device `{meta['device']}`"
        + (f" ({meta['gpu']})" if "gpu" in meta else "")
        + f"; torch {meta['versions']['torch']}, triton {meta['versions']['triton']}",
        f"SIFA operator backends: {meta['sifa_backends']}",
        f"**All checks passed: {'yes' if report['passed'] else 'NO'}**",
        "",
    ]
    done = list(report["results"])
    if done != report["sections"]:
        lines[-1:] = [f"**Partial report: {len(done)} of {len(report['sections'])} sections done** "
                      f"({', '.join(done) or 'none'}; written after every section)", ""]  # fmt: skip
    formatters = {"correctness": _md_correctness, "op": _md_op, "models": _md_models, "compile": _md_compile}
    for name in done:
        section = report["results"][name]
        lines += formatters[name](section) if "error" not in section else [f"## {name}: error {section['error']}", ""]
    return "\n".join(lines + _md_targets(report.get("targets", [])))


def run_gpu_check(
    out_dir: str = "benchmarks/gpu_check",
    *,
    tiny: bool = False,
    device: str = "cuda",
    sections: Sequence[str] = SECTIONS,
    log: Log = print,
) -> dict[str, Any]:
    """Run the device check and write ``gpu_check.md`` and ``gpu_check.json`` to ``out_dir``.

    Args:
        out_dir: folder of the report (created).
        tiny: the CPU code-path check (tiny shapes, pico models, Triton interpreter); ``device`` is ignored.
        device: ``"cuda"`` or ``"cuda:N"``.
        sections: a subset of :data:`SECTIONS`, run in that order.
        log: progress sink.

    Returns:
        ``{"passed", "tiny", "sections", "results": {section: ...}, "targets", "meta", "total_s"}``; ``passed`` is
        whether every correctness and compile check passed (and no section failed to run); ``targets`` are the
        speed targets (:func:`speed_targets`), reported, not part of ``passed``. Both files are rewritten after
        every section.
    """
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ValueError(f"sections: unknown {unknown or 'empty list'}; use a subset of {','.join(SECTIONS)}")
    if tiny:
        plan = CheckPlan.tiny()
    else:
        dev = resolve_device(device)
        if dev.type != "cuda":
            raise ValueError(f"device: the device check runs on a GPU ('cuda'), got {device!r}; use tiny=True on CPU")
        plan = CheckPlan.full(dev)
    start = time.perf_counter()
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "correctness": lambda: check_correctness(plan.device, log),
        "op": lambda: bench_op(plan, log),
        "models": lambda: bench_models(plan, log),
        "compile": lambda: check_compile(plan, log),
    }
    results: dict[str, Any] = {}
    meta = machine_description(plan.device)
    for name in sections:
        try:
            results[name] = runners[name]()
        except Exception as e:  # a section that cannot run is reported, the others still run
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}", "passed": False}
        # Written after every section: a run stopped by a time limit keeps what it measured.
        passed = all(r.get("passed", True) for r in results.values())
        report = {"passed": passed, "tiny": tiny, "sections": list(sections), "results": results,
                  "targets": speed_targets(results), "meta": meta, "total_s": time.perf_counter() - start}  # fmt: skip
        atomic_write_json(os.path.join(out_dir, "gpu_check.json"), report)
        atomic_write_text(os.path.join(out_dir, "gpu_check.md"), format_gpu_report(report))
    log(f"device check {'passed' if passed else 'FAILED'}: {os.path.join(out_dir, 'gpu_check.md')}")
    return report
