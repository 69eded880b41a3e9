"""The device check (``sifa_hub.bench.gpu_check``) on its CPU code path (``tiny=True``): report structure and,
with the Triton interpreter, that every backend passes its correctness checks. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sifa_hub.bench import gpu_check, run_gpu_check


def _read(out_dir) -> tuple[dict, str]:
    return json.loads((out_dir / "gpu_check.json").read_text()), (out_dir / "gpu_check.md").read_text()


def test_tiny_op_and_models_sections_write_both_reports(tmp_path) -> None:
    report = run_gpu_check(str(tmp_path), tiny=True, sections=["op", "models"], log=lambda s: None)
    data, md = _read(tmp_path)
    assert data["passed"] is report["passed"] is True and data["tiny"] is True
    assert data["sections"] == ["op", "models"] and set(data["results"]) == {"op", "models"}
    (op_row,) = data["results"]["op"]["rows"]
    assert op_row["fused_gbps"] > 0 and op_row["copy_gbps"] > 0
    assert set(op_row["fused_vs_naive"]) == {"fwd", "fwdbwd"}
    rows = data["results"]["models"]["rows"]
    assert [(r["model"], r["mode"]) for r in rows] == [
        ("sifa_resnet_pico", "infer"), ("sifa_resnet_pico", "train"), ("sifa_swin_pico", "infer"),
        ("sifa_swin_pico", "train"),
    ]  # fmt: skip
    for r in rows:
        assert r["error"] is None and r["throughput_ratio"] > 0 and r["sifa_peak_mib"] > 0 and r["twin_peak_mib"] > 0
        assert r["params"]["sifa"] > r["params"]["twin"] > 0
    assert "tiny: CPU" in md and "## 2. Operator" in md and "## 3. Models" in md and "## 1." not in md
    assert "| sifa_swin_pico | c2d_swin_pico | train | 1 |" in md
    # The op targets are judged on the op row (the model target names sifa_resnet50, not run here).
    assert [(t["setting"], t["bound"]) for t in data["targets"]] == [(op_row["shape"], 10.0), (op_row["shape"], 5.0)]
    assert [t["met"] for t in data["targets"]] == [
        op_row["fused_vs_naive"][p] >= b for p, b in (("fwd", 10), ("fwdbwd", 5))
    ]
    assert "## Speed targets" in md and "Partial report" not in md


def test_speed_targets_judge_the_op_and_sifa_net_training() -> None:
    results = {
        "op": {"rows": [{"shape": "B8 C128 T4 28²", "fused_vs_naive": {"fwd": 12.0, "fwdbwd": 4.0}}]},
        "models": {"rows": [
            {"model": "sifa_resnet50", "twin": "c2d_resnet50", "mode": "infer", "batch": 8, "throughput_ratio": 0.5},
            {"model": "sifa_resnet50", "twin": "c2d_resnet50", "mode": "train", "batch": 8, "throughput_ratio": 0.93},
        ]},
    }  # fmt: skip
    rows = gpu_check.speed_targets(results)
    assert [(r["value"], r["bound"], r["met"]) for r in rows] == [
        (12.0, 10.0, True),
        (4.0, 5.0, False),
        (0.93, 0.9, True),
    ]
    assert rows[2]["target"] == "sifa_resnet50 train throughput ≥ 0.9× c2d_resnet50 (bf16)"
    results["models"]["rows"][1]["throughput_ratio"] = None  # the step failed: not met
    assert gpu_check.speed_targets(results)[2]["met"] is False


def test_report_is_written_after_every_section(tmp_path, monkeypatch) -> None:
    seen = {}

    def models_section(plan, log):  # runs second: the op section must already be on disk
        seen["data"], seen["md"] = _read(tmp_path)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(gpu_check, "bench_models", models_section)
    report = run_gpu_check(str(tmp_path), tiny=True, sections=["op", "models"], log=lambda s: None)
    assert list(seen["data"]["results"]) == ["op"] and "Partial report: 1 of 2 sections done** (op;" in seen["md"]
    data, md = _read(tmp_path)
    assert (
        report["passed"] is data["passed"] is False
        and data["results"]["models"]["error"] == "RuntimeError: out of memory"
    )
    assert "## models: error RuntimeError: out of memory" in md and "Partial report" not in md


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sections": ["speed"]}, "sections"), ({"sections": []}, "sections"), ({"device": "cpu"}, "device")],
)
def test_bad_arguments_name_the_problem(tmp_path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_gpu_check(str(tmp_path), **kwargs, log=lambda s: None)
    assert not (tmp_path / "gpu_check.json").exists()


def test_correctness_check_fails_a_wrong_backend(monkeypatch) -> None:
    import torch

    from sifa_hub import ops

    def wrong(x, offsets=None, kernel_size=3, dilation=1, groups=1, normalize=None, backend="auto"):  # type: ignore[no-untyped-def]
        y = ops.sifa_attention(x, offsets, kernel_size, dilation, groups, normalize, backend="reference")
        return y if backend == "reference" else y * 1.01

    monkeypatch.setattr(gpu_check, "sifa_attention", wrong)
    monkeypatch.setattr(gpu_check, "available_backends", lambda device: {"torch": (True, "")})
    section = gpu_check.check_correctness(torch.device("cpu"), log=lambda s: None)
    assert section["passed"] is False
    failed = {c["name"] for c in section["checks"] if not c["passed"]}
    assert {case[0] for case in gpu_check.CORRECTNESS_CASES} <= failed


TINY_SCRIPT = """
import json, sys
from sifa_hub.bench import run_gpu_check
report = run_gpu_check(sys.argv[1], tiny=True)
print(json.dumps({"passed": report["passed"]}))
"""


@pytest.mark.slow
def test_tiny_full_run_in_the_triton_interpreter(tmp_path) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-c", textwrap.dedent(TINY_SCRIPT), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, md = _read(tmp_path)
    assert data["sections"] == list(gpu_check.SECTIONS)
    correctness = data["results"]["correctness"]
    assert correctness["passed"], [c for c in correctness["checks"] if not c["passed"]]
    assert {c["backend"] for c in correctness["checks"]} == {"torch", "cpu", "triton"}
    assert correctness["skipped"] == {}
    per_backend = len(gpu_check.CORRECTNESS_CASES) * len(gpu_check.TOLERANCES) + 3  # + bf16, fp16, gradcheck
    assert len(correctness["checks"]) == 3 * per_backend
    assert [r["model"] for r in data["results"]["compile"]["rows"]] == ["sifa_resnet_pico", "sifa_swin_pico"]
    assert all("passed" in r for r in data["results"]["compile"]["rows"])
    assert "## 1. Correctness" in md and "## 4. torch.compile" in md
