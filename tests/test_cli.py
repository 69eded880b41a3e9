"""The sifa-hub command line: help texts, predict/eval/explain on real mp4 files, train argument mapping, errors."""

from __future__ import annotations

import json
import os

import pytest
import timm
import torch

from sifa_hub.cli import build_parser, main
from sifa_hub.data import MotionDataset, write_video
from sifa_hub.predict import predict
from sifa_hub.publish import export_model

COMMANDS = ("train", "eval", "predict", "demo", "explain", "export", "push", "bench")
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
    for cmd in ("train", "eval", "predict", "demo", "explain"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text, cmd
    assert "torchrun --nnodes 2" in build_parser()._subparsers._group_actions[0].choices["train"].format_help()


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
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(tmp_path / "missing.mp4"), "--model", model_dir])
    assert exc.value.code == 2 and "missing.mp4" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["predict", videos[0], "--model", "no_such_model"])
    assert exc.value.code == 2 and "unknown model 'no_such_model'" in capsys.readouterr().err
    c2d = export_model(timm.create_model("c2d_resnet_pico", num_classes=8), tmp_path / "c2d")
    with pytest.raises(SystemExit) as exc:
        main(["explain", videos[0], "--model", c2d])
    assert exc.value.code == 2 and "no SIFA modules" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--optimizer", "lion"])
    assert exc.value.code == 2 and "optimizer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["explain", videos[0], "--model", model_dir, "--query", "3"])
    assert exc.value.code == 2 and "--query" in capsys.readouterr().err
