"""Smoke tests of the benchmark machinery (``sifa_hub.bench``) on pico models; no timing is asserted."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from torch import nn

import sifa_hub  # noqa: F401  (registers the models)
from sifa_hub import bench
from sifa_hub.layers import SIFA


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
    assert bench.sifa_op_flops((2, 8, 4, 5, 6), 3) == 2 * (2 * 3 * 5 * 6) * 9 * 6 * 8
    assert bench.sifa_op_flops((1, 8, 1, 5, 6), 3) == 0


def test_count_flops_adds_the_sifa_op_analytically() -> None:
    model = _TinySifaNet().eval()
    bench.perturb_offset_convs(model)  # a zero offset conv is skipped at inference; a trained one is not
    x = torch.randn(2, 3, 4, 6, 7)  # (B, C, T, H, W)
    total, sifa_part = bench.count_flops(model, x)
    n = 2 * 4 * 6 * 7  # output positions of the (1, 3, 3) convs
    conv = 2 * n * 8 * 3 * 9
    conv_offset = 2 * (2 * 3 * 6 * 7) * 18 * 8 * 9  # on the T-1 key frames
    fc = 2 * 2 * 8 * 5
    assert sifa_part == bench.sifa_op_flops((2, 8, 4, 6, 7), 3)
    assert total == conv + conv_offset + fc + sifa_part


def test_flop_counter_counts_the_fused_sifa_op_and_cpu_sdpa() -> None:
    from torch.utils.flop_counter import sdpa_flop_count

    from sifa_hub.ops import sifa_attention

    x = torch.randn(1, 8, 3, 5, 6)  # (B, C, T, H, W)
    counter = bench.flop_counter()
    with counter, torch.no_grad():
        sifa_attention(x, backend="cpu")  # the torch.library custom op sifa_hub::cpu_forward
    assert counter.get_total_flops() == bench.sifa_op_flops(x.shape, 3)

    q = torch.randn(1, 2, 10, 4)  # (B, heads, N, head_dim)
    for grad_mode in (torch.no_grad, torch.inference_mode):  # two different aten ops on CPU
        counter = bench.flop_counter()
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
    bench.write_report(str(path), "first")
    text = path.read_text()
    path.write_text("# Title\nhand-written intro\n" + text.split("# Model benchmarks\n\n", 1)[1] + "analysis\n")
    bench.write_report(str(path), "second")
    text = path.read_text()
    assert text.startswith("# Title\nhand-written intro\n")
    assert "second" in text and "first" not in text
    assert text.endswith("analysis\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dtypes", "fp16"], "--dtypes"),
        (["--repeats", "0"], "--repeats"),
        (["--models", "no_such_model", "--repeats", "1"], "no_such_model"),
    ],
)
def test_bad_arguments_name_the_problem(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err


def test_pico_twins_end_to_end(tmp_path) -> None:
    out, raw = tmp_path / "RESULTS.md", tmp_path / "raw.json"
    argv = [
        "--models", "sifa_resnet_pico,c2d_resnet_pico",
        "--reference", "c2d_resnet_pico",
        "--profile-model", "sifa_resnet_pico",
        "--frames", "8", "--size", "32", "--batch-sizes", "1", "--dtypes", "fp32",
        "--repeats", "2", "--train-repeats", "1", "--threads", "1",
        "--out", str(out), "--json", str(raw),
    ]  # fmt: skip
    assert bench.main(argv) == 0
    data = json.loads(raw.read_text())
    infos = {i["name"]: i for i in data["infos"]}

    # Parameters and the analytic SIFA FLOPs match an independent count on a fresh model.
    model = timm.create_model("sifa_resnet_pico").eval()
    shapes: list[tuple[int, ...]] = []
    for m in model.modules():
        if isinstance(m, SIFA):
            m.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(torch.randn(1, 3, 8, 32, 32))
    assert shapes
    assert infos["sifa_resnet_pico"]["params"] == sum(p.numel() for p in model.parameters())
    assert infos["sifa_resnet_pico"]["sifa_flops"] == sum(bench.sifa_op_flops(s, 3) for s in shapes)
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

    rendered = tmp_path / "RENDERED.md"  # --render re-formats the saved run without running anything
    assert bench.main(["--render", str(raw), "--out", str(rendered)]) == 0
    assert rendered.read_text().split("Run: ", 1)[1] == text.split("Run: ", 1)[1]
