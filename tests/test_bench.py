"""Tests of the benchmark package (``sifa_hub.bench``) and of FLOP counting (``sifa_hub.utils.flops``) on pico
models and tiny shapes; no timing is asserted."""

from __future__ import annotations

import json
import os

import pytest
import timm
import torch
from torch import nn

import sifa_hub  # noqa: F401  (registers the models)
from sifa_hub import bench
from sifa_hub.bench import op as op_bench
from sifa_hub.layers import SIFA
from sifa_hub.utils import flops

PICO = ["sifa_resnet_pico", "c2d_resnet_pico"]


class _TinySifaNet(nn.Module):
    """Conv3d (1, 3, 3) + SIFA residual + linear head, on ``(B, 3, T, H, W)``."""

    def __init__(self, width: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, width, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.sifa = SIFA(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (B, W, T, H, W)
        x = x + self.sifa(x)
        return self.fc(x.mean(dim=(2, 3, 4)))


def test_sifa_op_flops_formula() -> None:
    # B·(T-1)·H·W queries × K² keys × 6C MACs × 2 FLOPs
    assert flops.sifa_op_flops((2, 8, 4, 5, 6), 3) == 2 * (2 * 3 * 5 * 6) * 9 * 6 * 8
    assert flops.sifa_op_flops((1, 8, 1, 5, 6), 3) == 0


def test_count_flops_adds_the_sifa_op_analytically() -> None:
    model = _TinySifaNet().eval()
    bench.perturb_offset_convs(model)  # a zero offset conv is skipped at inference; a trained one is not
    x = torch.randn(2, 3, 4, 6, 7)  # (B, C, T, H, W)
    total, sifa_part = flops.count_flops(model, x)
    n = 2 * 4 * 6 * 7  # output positions of the (1, 3, 3) convs
    conv = 2 * n * 8 * 3 * 9
    conv_offset = 2 * (2 * 3 * 6 * 7) * 18 * 8 * 9  # on the T-1 key frames
    fc = 2 * 2 * 8 * 5
    assert sifa_part == flops.sifa_op_flops((2, 8, 4, 6, 7), 3)
    assert total == conv + conv_offset + fc + sifa_part


def test_instrument_sifa_routes_every_call_and_restores() -> None:
    import sifa_hub.layers
    import sifa_hub.ops

    original = sifa_hub.ops.sifa_attention
    seen: list[tuple[int, ...]] = []

    def on_call(op, args, kwargs):  # type: ignore[no-untyped-def]
        seen.append(tuple(args[0].shape))
        return op(*args, **kwargs)

    model = _TinySifaNet().eval()
    with flops.instrument_sifa(on_call), torch.no_grad():
        model(torch.randn(1, 3, 3, 5, 5))
    assert seen == [(1, 8, 3, 5, 5)]
    assert sifa_hub.ops.sifa_attention is original
    assert getattr(sifa_hub.layers, "sifa_attention", original) is original


def test_flop_counter_counts_the_fused_sifa_op_and_cpu_sdpa() -> None:
    from torch.utils.flop_counter import sdpa_flop_count

    from sifa_hub.ops import sifa_attention

    x = torch.randn(1, 8, 3, 5, 6)  # (B, C, T, H, W)
    counter = flops.flop_counter()
    with counter, torch.no_grad():
        sifa_attention(x, backend="cpu")  # the torch.library custom op sifa_hub::cpu_forward
    assert counter.get_total_flops() == flops.sifa_op_flops(x.shape, 3)

    q = torch.randn(1, 2, 10, 4)  # (B, heads, N, head_dim)
    for grad_mode in (torch.no_grad, torch.inference_mode):  # two different aten ops on CPU
        counter = flops.flop_counter()
        with counter, grad_mode():
            nn.functional.scaled_dot_product_attention(q, q, q)
        assert counter.get_total_flops() == sdpa_flop_count(q.shape, q.shape, q.shape) > 0


def test_perturb_offset_convs_gives_trained_like_offsets() -> None:
    model = _TinySifaNet()
    assert not model.sifa.conv_offset.weight.any()  # zero init: SIFA would skip the offset conv at inference
    assert bench.perturb_offset_convs(model, std=0.01) == 1
    w = model.sifa.conv_offset.weight.detach()
    assert bool(w.any()) and 0.007 < float(w.std()) < 0.013


def test_peak_memory_cpu_is_the_peak_of_live_allocations() -> None:
    def fn() -> torch.Tensor:
        a = torch.ones(1 << 20)  # 4 MiB
        del a
        return torch.ones(1 << 19)  # 2 MiB, allocated after the 4 MiB were freed

    out, peak = bench.peak_memory(fn, torch.device("cpu"), resident_bytes=1000)
    assert out.numel() == 1 << 19
    assert 1000 + (4 << 20) <= peak < 1000 + (4 << 20) + (64 << 10)


def test_framewise_averages_frame_logits() -> None:
    image_model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 6))
    model = bench.FrameWise(image_model)
    x = torch.randn(2, 3, 5, 4, 4)  # (B, C, T, H, W)
    expected = torch.stack([image_model(x[:, :, t]) for t in range(5)], 1).mean(1)
    torch.testing.assert_close(model(x), expected)


def test_write_report_keeps_the_text_around_the_generated_section(tmp_path) -> None:
    path = tmp_path / "RESULTS.md"
    umask = os.umask(0o022)
    try:
        bench.write_report(str(path), "first")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
    text = path.read_text()
    path.write_text("# Title\nhand-written intro\n" + text.split("# Model benchmarks\n\n", 1)[1] + "analysis\n")
    bench.write_report(str(path), "second")
    text = path.read_text()
    assert text.startswith("# Title\nhand-written intro\n")
    assert "second" in text and "first" not in text
    assert text.endswith("analysis\n")


def test_write_report_appends_to_a_file_without_its_markers(tmp_path) -> None:
    path = tmp_path / "NOTES.md"
    path.write_text("# Notes\nkept\n")
    bench.write_report(str(path), "section", "<!-- B -->", "<!-- E -->")
    assert path.read_text() == "# Notes\nkept\n\n<!-- B -->\nsection\n<!-- E -->\n"
    bench.write_report(str(path), "again", "<!-- B -->", "<!-- E -->")
    assert path.read_text() == "# Notes\nkept\n\n<!-- B -->\nagain\n<!-- E -->\n"


def test_run_twins_tiny_pairs_rounds_and_report(tmp_path, monkeypatch) -> None:
    from sifa_hub.bench import twins

    out, raw = tmp_path / "RESULTS.md", tmp_path / "twins.json"
    bench.write_report(str(out), "models section")  # the twins section goes beside the models' section
    monkeypatch.setattr(twins, "TARGETS", (("sifa_resnet_pico", "infer", "FLOP-scaled throughput", 0.5),))
    results = bench.run_twins(
        ["sifa_resnet_pico"], batch_sizes=[1, 2], dtypes=["fp32", "bf16"], rounds=3, instances=1, warmup=0, frames=4,
        size=32,
        out=str(out), json_path=str(raw), log=lambda s: None,
    )  # fmt: skip
    assert [(r.model, r.twin, r.batch, r.dtype) for r in results] == [
        ("sifa_resnet_pico", "c2d_resnet_pico", b, d) for b in (1, 2) for d in ("fp32", "bf16")
    ]
    clip, models = torch.zeros(1, 3, 4, 32, 32), [bench.spec_for(n).build(400).eval() for n in PICO]
    bench.perturb_offset_convs(models[0])  # the trained path, as the benchmark runs it
    sifa_flops, twin_flops = (flops.count_flops(m, clip)[0] for m in models)
    for r in results:
        assert r.clock == "cpu"  # one thread on a CPU: judged on process CPU time
        assert len(r.sifa_s) == len(r.twin_s) == len(r.sifa_cpu_s) == len(r.twin_cpu_s) == 3
        assert r.ratio == sorted(t / s for s, t in zip(r.sifa_cpu_s, r.twin_cpu_s))[1]  # median of paired ratios
        assert r.bound == pytest.approx(0.5 * twin_flops / sifa_flops) and r.met == (r.ratio >= r.bound)
    text = out.read_text()
    assert "models section" in text and text.count("| sifa_resnet_pico | c2d_resnet_pico | infer b") == 4
    assert f"≥ {0.5 * twin_flops / sifa_flops:.3f}× (0.50 × " in text
    data = json.loads(raw.read_text())
    assert len(data["results"]) == 4 and data["meta"]["rounds"] == 3
    # Several builds of the pair pool their rounds.
    (pooled,) = bench.run_twins(
        ["sifa_resnet_pico"],
        batch_sizes=[1],
        dtypes=["fp32"],
        rounds=2,
        instances=2,
        frames=4,
        size=32,
        log=lambda s: None,
    )
    assert pooled.instances == 2 and len(pooled.sifa_cpu_s) == len(pooled.twin_cpu_s) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"models": ["c2d_resnet_pico"]}, "no C2D twin"),
        ({"rounds": 0}, "rounds"),
        ({"instances": 0}, "instances"),
        ({"dtypes": ["fp8"]}, "fp8"),
        ({"dtypes": []}, "dtypes"),
    ],
)
def test_run_twins_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bench.run_twins(**{"models": ["sifa_resnet_pico"], **kwargs}, log=lambda s: None)


def test_plan_settings_follows_the_budget_rules() -> None:
    config = bench.BenchConfig(models=[], batch_sizes=[1, 4], dtypes=["fp32", "bf16"], modes=["infer", "train"])
    light, heavy, peer = (bench.spec_for(n) for n in ("c2d_resnet50", "c2d_swin_base_patch4_window7_224", "r3d_18"))
    assert bench.plan_settings(light, config) == [
        ("infer", 1, "fp32", 5), ("infer", 1, "bf16", 5), ("infer", 4, "fp32", 5), ("infer", 4, "bf16", 5),
        ("train", 1, "fp32", 3), ("train", 1, "bf16", 3), ("train", 4, "fp32", 1), ("train", 4, "bf16", 1),
    ]  # fmt: skip
    assert [s for s in bench.plan_settings(heavy, config) if s[0] == "train"] == [
        ("train", 1, "fp32", 1), ("train", 1, "bf16", 1)
    ]  # fmt: skip
    peer_plan = [("infer", 1, "fp32", 5), ("infer", 1, "bf16", 5), ("train", 1, "fp32", 1)]
    assert bench.plan_settings(peer, config) == peer_plan
    config.budget = False
    assert len(bench.plan_settings(peer, config)) == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtypes": ["fp16"]}, "dtypes"),
        ({"repeats": 0}, "repeats"),
        ({"modes": ["eval"]}, "modes"),
        ({"batch_sizes": [0]}, "batch_sizes"),
        ({"models": ["no_such_model"], "repeats": 1}, "no_such_model"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bench.run_models(**kwargs, log=lambda s: None)


def test_run_models_tiny_writes_both_reports_and_renders_them_again(tmp_path, monkeypatch) -> None:
    out, raw = tmp_path / "RESULTS.md", tmp_path / "raw.json"
    report = bench.run_models(
        PICO, reference="c2d_resnet_pico", profile_model=None, frames=4, size=32, batch_sizes=[1], dtypes=["fp32"],
        repeats=1, train_repeats=1, threads=1, out=str(out), json_path=str(raw), log=lambda s: None,
    )  # fmt: skip
    data = json.loads(raw.read_text())
    assert [i["name"] for i in data["infos"]] == PICO
    settings = {(r["model"], r["mode"]) for r in data["results"]}
    assert settings == {(m, mode) for m in PICO for mode in ("infer", "train")}
    assert all(r["error"] is None and len(r["times_s"]) == 1 and r["peak_bytes"] > 0 for r in data["results"])
    assert "| sifa_resnet_pico | infer b1 fp32 |" in report  # the twin table
    assert report.strip() in out.read_text() and "Partial run" not in out.read_text()
    rendered = tmp_path / "RENDERED.md"
    assert bench.render_models(str(raw), out=str(rendered)).split("Run: ", 1)[1] == report.split("Run: ", 1)[1]
    assert rendered.read_text() == out.read_text()
    # A FLOP-scaled throughput target: bound × twin FLOPs / SIFA FLOPs, with both FLOP counts shown.
    from sifa_hub.bench import report as report_mod

    monkeypatch.setattr(report_mod, "TARGETS", (("sifa_resnet_pico", "infer", "FLOP-scaled throughput", 0.95),))
    flops = {i["name"]: i["flops"] for i in data["infos"]}
    bound = 0.95 * flops["c2d_resnet_pico"] / flops["sifa_resnet_pico"]
    targets = bench.render_models(str(raw)).split("### Targets", 1)[1]
    assert f"sifa_resnet_pico infer throughput ≥ {bound:.3f}× twin (= 0.95 × " in targets


def test_render_models_names_a_bad_file(tmp_path) -> None:
    bad = tmp_path / "run.json"
    bad.write_text('{"infos": []}')
    with pytest.raises(ValueError, match="run.json"):
        bench.render_models(str(bad))


@pytest.mark.parametrize("dilation", [1, 2])
def test_naive_yardstick_is_sifa(dilation: int) -> None:
    """The op benchmark's naive baseline computes the operator (one group, no softmax), values and gradients."""
    x, off = op_bench.op_inputs(6, 5, 2, 3, 0.7, torch.device("cpu"))
    x, off = x.double().requires_grad_(), off.double().requires_grad_()
    y = op_bench.naive_sifa(x, off, dilation=dilation)
    ref = sifa_hub.ops.sifa_attention(x, off, dilation=dilation, backend="reference")
    assert torch.allclose(y, ref, atol=1e-12)
    grads = torch.autograd.grad(y.square().sum(), (x, off))
    ref_grads = torch.autograd.grad(ref.square().sum(), (x, off))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads, ref_grads))


def test_run_op_tiny_rows(tmp_path) -> None:
    lines: list[str] = []
    rows = bench.run_op(
        shapes=((8, 6),), rounds=1, warmup=0, batch=1, mem_batch=1, frames=3, json_path=str(tmp_path / "op.json"),
        log=lines.append,
    )  # fmt: skip
    (row,) = rows
    assert row["shape"] == "C8@6²"
    methods = {*op_bench.SIFA_METHODS, "dw3d", "dw2d_cl"}
    assert set(row["median_s"]) == {f"{m}/{p}" for m in methods for p in ("fwd", "fwdbwd")} | {"copy/fwd"}
    assert all(v > 0 for v in row["median_s"].values())
    assert set(row["max_err"]) == set(op_bench.SIFA_METHODS) and max(row["max_err"].values()) < 1e-4
    assert set(row["memory_fmaps"]) == {*op_bench.SIFA_METHODS, "dw3d"}
    assert json.loads((tmp_path / "op.json").read_text())[0]["shape"] == "C8@6²"
    assert any("C8@6²" in line and "reference" in line for line in lines)


@pytest.mark.parametrize("kwargs", [{"clock": "gpu"}, {"rounds": 0}, {"frames": 1}, {"device": "tpu"}])
def test_run_op_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs)) if "device" not in kwargs else "tpu"):
        bench.run_op(**kwargs, log=lambda s: None)


@pytest.mark.slow
def test_pico_twins_end_to_end(tmp_path) -> None:
    out, raw = tmp_path / "RESULTS.md", tmp_path / "raw.json"
    bench.run_models(
        PICO, reference="c2d_resnet_pico", profile_model="sifa_resnet_pico", frames=8, size=32, batch_sizes=[1],
        dtypes=["fp32"], repeats=2, train_repeats=1, threads=1, out=str(out), json_path=str(raw),
    )  # fmt: skip
    data = json.loads(raw.read_text())
    infos = {i["name"]: i for i in data["infos"]}

    # Parameters and the analytic SIFA FLOPs match an independent count on a fresh model.
    from sifa_hub.bench.specs import NUM_CLASSES

    model = timm.create_model("sifa_resnet_pico", num_classes=NUM_CLASSES).eval()  # as the benchmark builds it
    shapes: list[tuple[int, ...]] = []
    for m in model.modules():
        if isinstance(m, SIFA):
            m.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(torch.randn(1, 3, 8, 32, 32))
    assert shapes
    assert infos["sifa_resnet_pico"]["params"] == sum(p.numel() for p in model.parameters())
    assert infos["sifa_resnet_pico"]["sifa_flops"] == sum(flops.sifa_op_flops(s, 3) for s in shapes)
    assert infos["c2d_resnet_pico"]["sifa_flops"] == 0
    assert infos["sifa_resnet_pico"]["flops"] > infos["c2d_resnet_pico"]["flops"] > 0

    results = {(r["model"], r["mode"]): r for r in data["results"]}
    assert set(results) == {(m, mode) for m in infos for mode in ("infer", "train")}
    for r in results.values():
        assert r["error"] is None
        assert len(r["times_s"]) == (2 if r["mode"] == "infer" else 1)
        param_bytes = 4 * infos[r["model"]]["params"]
        assert r["peak_bytes"] > (param_bytes if r["mode"] == "infer" else 3 * param_bytes)  # + AdamW state

    assert data["profile"]["stats"]["calls"] == len(shapes)
    text = out.read_text()
    assert "| sifa_resnet_pico | infer b1 fp32 |" in text
    assert "bench::sifa_attention" in text
    assert "judged on the CPU-time ratio" in text  # a single-threaded run

    rendered = tmp_path / "RENDERED.md"  # rendering re-formats the saved run without running anything
    bench.render_models(str(raw), out=str(rendered))
    assert rendered.read_text().split("Run: ", 1)[1] == text.split("Run: ", 1)[1]
