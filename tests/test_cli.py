"""The sifa-hub command line: help texts, predict/eval/explain on real mp4 files, train/export/push/bench argument
mapping, ``python -m sifa_hub``, errors (more bad input in ``test_cli_errors.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
from hub_server import HubServer

import sifa_hub.bench
import sifa_hub.ops
from sifa_hub.cli import build_parser, main
from sifa_hub.data import MotionDataset, write_video
from sifa_hub.predict import predict
from sifa_hub.publish import export_model

COMMANDS = ("train", "eval", "predict", "demo", "explain", "export", "push", "bench", "build-kernels")
ROOT = Path(__file__).resolve().parents[1]
MOTION_CLASSES = tuple(MotionDataset(1, classes=8).classes)  # what `--data motion` trains on by default


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """An exported 8-class sifa_resnet_pico for 4-frame 16 px clips, with non-trivial SIFA offsets."""
    torch.manual_seed(0)
    model = timm.create_model("sifa_resnet_pico", num_classes=8, num_frames=4, img_size=16)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "conv_offset", None) is not None:
                m.conv_offset.weight.normal_(0, 0.05)  # move the keys off the regular grid
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.fill_(1.0)  # undo zero-init of residual branches so SIFA contributes
    return export_model(model, tmp_path_factory.mktemp("export") / "sifa", labels=list(MOTION_CLASSES))


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    """Two motion clips (left, right) encoded as mp4 with PyAV."""
    folder = tmp_path_factory.mktemp("videos")
    data = MotionDataset(2, num_frames=8, size=32, seed=1)
    paths = []
    for i in range(2):
        path = str(folder / f"{data.classes[i]}.mp4")
        write_video(path, data.clip_uint8(i), fps=8.0)
        paths.append(path)
    return paths


def test_help_of_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    top = capsys.readouterr().out
    assert all(cmd in top for cmd in COMMANDS) and "examples:" in top
    for cmd in (*COMMANDS, "bench models", "bench op", "bench gpu"):
        with pytest.raises(SystemExit) as exc:
            main([*cmd.split(), "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and "--debug" in text, cmd
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("sifa-hub ")
    assert "torchrun --nnodes 2" in build_parser()._subparsers._group_actions[0].choices["train"].format_help()


def test_python_dash_m_sifa_hub(tmp_path):
    # the package runs as a module (no import cycle: demo does not import cli), with the console script's codes
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    missing = str(tmp_path / "missing.mp4")
    argv = [sys.executable, "-m", "sifa_hub", "predict", missing, "--model", "sifa_resnet_pico"]
    run = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert run.returncode == 1 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("sifa-hub predict: error: ")
    assert "missing.mp4" in run.stderr


def test_predict_json_on_mp4(model_dir, videos, capsys):
    assert main(["predict", *videos, "--model", model_dir, "--top-k", "8", "--json", "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["video"] for r in results] == videos
    for r in results:
        scores = [p["score"] for p in r["predictions"]]
        assert sorted(scores, reverse=True) == scores and sum(scores) == pytest.approx(1.0, abs=1e-4)
        assert sorted(p["label"] for p in r["predictions"]) == sorted(MOTION_CLASSES)
    # two views average to a different distribution than one, and the text output names the labels
    two = predict(videos[:1], model_dir, top_k=3, num_clips=2, device="cpu")[0]["predictions"]
    assert len(two) == 3
    assert main(["predict", videos[0], "--model", model_dir, "--top-k", "2", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(videos[0]) and "1. " in text and "2. " in text


def test_eval_motion_json(model_dir, capsys):
    args = ["eval", "--model", model_dir, "--data", "motion", "--motion-samples", "16", "--json", "--device", "cpu"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_samples"] == 16 and 0.0 <= result["top1"] <= result["top5"] <= 100.0
    assert result["classes"] == list(MOTION_CLASSES)


def test_explain_writes_png(model_dir, videos, tmp_path, capsys):
    out = tmp_path / "keys.png"
    assert main(["explain", videos[0], "--model", model_dir, "--out", str(out), "--frames", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_train_cli_maps_options(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "c2d_resnet_pico", "--motion-train-samples", "16", "--motion-val-samples", "8"]
    args += ["--epochs", "1", "--batch-size", "8", "--num-frames", "4", "--img-size", "16", "--no-progress"]
    args += ["--output-dir", str(out), "--lr", "0.01", "--label-smoothing", "0", "--device", "cpu"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["lr"] == 0.01 and metrics["config"]["progress"] is False
    assert metrics["config"]["model"] == "c2d_resnet_pico" and metrics["completed"]
    assert os.path.isfile(out / "model" / "config.json")


def test_clear_errors(model_dir, videos, tmp_path, capsys):
    # a missing file is a runtime error (1), an unknown name or a bad option value a usage error (2)
    assert main(["predict", str(tmp_path / "missing.mp4"), "--model", model_dir]) == 1
    assert "missing.mp4" in capsys.readouterr().err
    assert main(["predict", videos[0], "--model", "no_such_model"]) == 2
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    c2d = export_model(timm.create_model("c2d_resnet_pico", num_classes=8), tmp_path / "c2d")
    assert main(["explain", videos[0], "--model", c2d]) == 1
    assert "no SIFA modules" in capsys.readouterr().err
    assert main(["train", "--optimizer", "lion"]) == 2
    assert "optimizer" in capsys.readouterr().err
    assert main(["explain", videos[0], "--model", model_dir, "--query", "3"]) == 2
    assert "--query" in capsys.readouterr().err


def test_cli_export_and_push(hub_server: HubServer, model_dir, tmp_path: Path, capsys) -> None:
    from huggingface_hub import model_info, snapshot_download

    from sifa_hub.publish import validate_card

    repo = f"{HubServer.org}/cli-pico"
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(MOTION_CLASSES[::-1]))
    out = tmp_path / "cli"
    argv = ["export", "--model", model_dir, "--out", str(out), "--labels", str(labels), "--repo-id", repo]
    assert main([*argv, "--no-verify"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / "config.json").read_text())["label_names"] == list(MOTION_CLASSES[::-1])
    argv = ["push", str(out), "--repo-id", repo, "--private", "--commit-message", "from the CLI"]
    assert main(argv) == 0
    assert hub_server.commit_history(repo)[0].title == "from the CLI"
    assert capsys.readouterr().out.strip().startswith(hub_server.url)
    card = tmp_path / "card.md"
    argv = ["export", "--model", model_dir, "--card-only", str(card), "--repo-id", repo]
    assert main([*argv, "--weights-description", "trained by a test"]) == 0
    assert "trained by a test" in validate_card(card).text
    assert model_info(repo).private
    snapshot = Path(snapshot_download(repo))
    assert (snapshot / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


class _Recorder:
    """Stands in for a library function: records its arguments and returns ``result``."""

    def __init__(self, result):
        self.result = result
        self.calls: list[tuple[tuple, dict]] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


def test_bench_commands_map_options(monkeypatch, tmp_path, capsys):
    # the parsers live here; the benchmark functions take plain arguments (their own tests run them)
    models = _Recorder("| model | clips/s |")
    monkeypatch.setattr(sifa_hub.bench, "run_models", models, raising=False)
    argv = ["bench", "models", "--models", "sifa_resnet_pico,c2d_resnet_pico", "--batch-sizes", "1,2"]
    assert main([*argv, "--dtypes", "fp32", "--no-budget", "--frames", "4", "--size", "32"]) == 0
    assert capsys.readouterr().out.strip() == "| model | clips/s |"
    ((args, kwargs),) = models.calls
    assert args == (["sifa_resnet_pico", "c2d_resnet_pico"],) and kwargs["batch_sizes"] == [1, 2]
    assert kwargs["dtypes"] == ["fp32"] and kwargs["budget"] is False and (kwargs["frames"], kwargs["size"]) == (4, 32)
    assert kwargs["modes"] == ["infer", "train"] and kwargs["quick"] is False and kwargs["json_path"] is None

    rendered = _Recorder("rendered")
    monkeypatch.setattr(sifa_hub.bench, "render_models", rendered, raising=False)
    assert main(["bench", "models", "--render", "run.json", "--out", "r.md"]) == 0
    assert rendered.calls == [(("run.json",), {"out": "r.md"})] and len(models.calls) == 1

    op = _Recorder([])
    monkeypatch.setattr(sifa_hub.bench, "run_op", op, raising=False)
    assert main(["bench", "op", "--rounds", "3", "--threads", "1", "--clock", "cpu", "--json", "op.json"]) == 0
    (((), kwargs),) = op.calls
    assert (kwargs["rounds"], kwargs["threads"], kwargs["clock"], kwargs["json_path"]) == (3, 1, "cpu", "op.json")
    assert (kwargs["batch"], kwargs["mem_batch"], kwargs["frames"], kwargs["offset_std"]) == (2, 16, 4, 0.5)

    for met, status in ((True, 0), (None, 0), (False, 1)):  # exit 1 when a target is missed
        twins = _Recorder([SimpleNamespace(met=met)])
        monkeypatch.setattr(sifa_hub.bench, "run_twins", twins, raising=False)
        argv = ["bench", "twins", "--models", "sifa_resnet_pico", "--batch-sizes", "2", "--rounds", "3"]
        assert main([*argv, "--threads", "0"]) == status
        ((args, kwargs),) = twins.calls
        assert args == (["sifa_resnet_pico"],) and (kwargs["batch_sizes"], kwargs["rounds"]) == ([2], 3)
        assert kwargs["threads"] is None and kwargs["dtypes"] == ["fp32", "bf16"] and kwargs["warmup"] == 1
        assert kwargs["instances"] == 3
        assert (kwargs["frames"], kwargs["size"], kwargs["out"], kwargs["json_path"]) == (16, 224, None, None)

    for passed, status in ((True, 0), (False, 1)):
        gpu = _Recorder({"passed": passed})
        monkeypatch.setattr(sifa_hub.bench, "run_gpu_check", gpu, raising=False)
        assert main(["bench", "gpu", "--tiny", "--sections", "correctness", "--out-dir", str(tmp_path)]) == status
        assert gpu.calls == [((str(tmp_path),), {"tiny": True, "device": "cuda", "sections": ["correctness"]})]

    monkeypatch.setattr(sifa_hub.bench, "run_models", _raise_value_error, raising=False)
    assert main(["bench", "models", "--dtypes", "fp16"]) == 2
    assert capsys.readouterr().err.strip() == "sifa-hub bench models: error: dtypes: unknown dtype 'fp16'"


def _raise_value_error(*args, **kwargs):
    raise ValueError("dtypes: unknown dtype 'fp16'")


def test_build_kernels(monkeypatch, capsys):
    status = {"cpu": "C++ extension loaded from /cache/sifa_cpu.so", "triton": "unavailable: no CUDA device"}
    monkeypatch.setattr(sifa_hub.ops, "build_kernels", _Recorder(status), raising=False)
    assert main(["build-kernels"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{k}: {v}" for k, v in status.items()]
    assert main(["build-kernels", "--require", "cpu"]) == 0
    capsys.readouterr()
    assert main(["build-kernels", "--require", "cpu,triton"]) == 1
    assert capsys.readouterr().err.strip().endswith("required kernels unavailable: triton")


def test_bench_models_runs_through_the_cli(capsys):
    # the real benchmark at a tiny size: the parser's options reach run_models under its own names
    argv = ["bench", "models", "--models", "sifa_resnet_pico,c2d_resnet_pico", "--modes", "infer", "--frames", "8"]
    argv += ["--size", "32", "--repeats", "1", "--batch-sizes", "1", "--dtypes", "fp32"]
    argv += ["--reference", "c2d_resnet_pico"]
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert "sifa_resnet_pico" in report and "c2d_resnet_pico" in report and "infer b1 fp32" in report


@pytest.mark.slow
def test_build_kernels_builds_the_cpu_kernel(capsys):
    # slow: the first build of the fused kernel takes about a minute (then it is cached)
    assert main(["build-kernels", "--require", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cpu: ") and not lines[0].startswith("cpu: unavailable")
