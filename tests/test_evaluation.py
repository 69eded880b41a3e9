"""Evaluation: metrics of a loader, view averaging, and ``sifa-hub eval`` on the classes the model was trained on."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sifa_hub  # noqa: F401  (registers the variants)
from sifa_hub.evaluation import ClassSubset, evaluate, evaluate_model
from sifa_hub.ops import functional


@pytest.fixture(autouse=True)
def pure_pytorch_backend(monkeypatch):
    """The SIFA op on its pure-PyTorch backend: these tests test evaluation, not the fused kernel (no build)."""
    monkeypatch.setattr(functional, "selected_backend", lambda device="cpu": ("torch", "tests: pure PyTorch"))


class _OracleModel(nn.Module):
    """Logits ``-scale · ((c - s) mod N)``: class ``s + j`` ranks j-th; ``s`` and ``scale`` are read from the clip."""

    num_classes = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, N)
        s, scale = x[:, 0, 0, 0, 0].long(), x[:, 1, 0, 0, 0]
        rank = (torch.arange(self.num_classes)[None] - s[:, None]) % self.num_classes  # (B, N)
        return -scale[:, None] * rank.float()


def test_evaluate_top1_top5_and_view_averaging():
    n = 10
    stored = torch.arange(n) % 8
    rank_of_truth = torch.tensor([0, 0, 0, 0, 0, 1, 1, 6, 4, 4])  # top-1: 5/10, top-5: 9/10
    labels = (stored + rank_of_truth) % 8
    x = torch.zeros(n, 3, 2, 4, 4)
    x[:, 0, 0, 0, 0], x[:, 1, 0, 0, 0] = stored.float(), 1.0
    metrics = evaluate(_OracleModel(), DataLoader(TensorDataset(x, labels), batch_size=4))
    assert metrics["top1"] == pytest.approx(50.0) and metrics["top5"] == pytest.approx(90.0)
    assert metrics["num_samples"] == n and metrics["clips_per_s"] > 0
    # two views per clip: a sharp one ranking `stored` first and a soft one ranking `stored + 3` first; the mean
    # of their probabilities favours `stored` (0.43 vs 0.32), the soft view alone never does
    views = torch.zeros(n, 2, 3, 2, 4, 4)
    views[:, 0, 0, 0, 0, 0], views[:, 0, 1, 0, 0, 0] = stored.float(), 2.0
    views[:, 1, 0, 0, 0, 0], views[:, 1, 1, 0, 0, 0] = ((stored + 3) % 8).float(), 1.0
    averaged = evaluate(_OracleModel(), DataLoader(TensorDataset(views, stored), batch_size=4))
    soft_only = evaluate(_OracleModel(), DataLoader(TensorDataset(views[:, 1], stored), batch_size=4))
    assert averaged["top1"] == pytest.approx(100.0) and soft_only["top1"] == pytest.approx(0.0)
    assert averaged["clips_per_s"] > 0


def test_class_subset_keeps_the_model_classes_in_its_order():
    x = torch.arange(6).float()
    data = TensorDataset(x, torch.tensor([0, 1, 2, 0, 1, 2]))  # data classes a, b, c
    subset = ClassSubset(data, [0, 1, 2, 0, 1, 2], ["a", "b", "c"], ["c", "a"])  # the model knows c, a (in order)
    assert len(subset) == 4 and subset.classes == ["a", "c"]
    assert [subset[i] for i in range(4)] == [(x[0], 1), (x[2], 0), (x[3], 1), (x[5], 0)]


def _export(tmp_path, labels: list[str]) -> str:
    from sifa_hub.publish import export_model

    torch.manual_seed(0)
    model = timm.create_model("sifa_resnet_pico", num_classes=len(labels), num_frames=4, img_size=16).eval()
    return export_model(model, tmp_path / "model", labels=labels)


def test_evaluate_model_on_the_model_classes_of_the_motion_set(tmp_path):
    """The README's `sifa-hub eval --model sifa_demo_out/sifa_resnet_pico --data motion`: a 4-class model on the
    8-class motion set is scored on its own 4 classes (the held-out clips of a 4-class run)."""
    folder = _export(tmp_path, ["left", "right", "up", "down"])
    result = evaluate_model(folder, "motion", motion_samples=8, batch_size=4, device="cpu")
    assert result["classes"] == ["left", "right", "up", "down"] and result["excluded_classes"] == []
    assert result["num_samples"] == 8 and 0.0 <= result["top1"] <= result["top5"] <= 100.0
    # the same clips through evaluate() directly give the same numbers
    from sifa_hub.loading import load_model
    from sifa_hub.training_data import build_eval_dataset

    loaded = load_model(folder)
    geometry = {k: loaded.data_config[k] for k in ("mean", "std", "num_frames", "img_size", "crop_pct")}
    dataset, classes = build_eval_dataset("motion", motion_classes=4, motion_val_samples=8, **geometry)
    direct = evaluate(loaded.model, DataLoader(dataset, batch_size=4))
    assert classes == result["classes"] and direct["top1"] == result["top1"] and direct["loss"] == result["loss"]


def test_evaluate_model_leaves_out_classes_the_model_does_not_know(tmp_path):
    folder = _export(tmp_path, ["left", "right", "up", "down", "clockwise", "anticlockwise"])
    result = evaluate_model(folder, "motion", motion_samples=16, batch_size=8, device="cpu")
    assert result["excluded_classes"] == ["approaching", "receding"]
    assert result["num_samples"] == 12  # 16 balanced clips of 8 classes, 6 of them known


def test_evaluate_model_errors(tmp_path):
    unnamed = timm.create_model("sifa_resnet_pico", num_classes=3, num_frames=4, img_size=16)
    with pytest.raises(ValueError, match="3 unnamed classes but data 'motion' has 8"):
        evaluate_model(unnamed, "motion", motion_samples=8, device="cpu")
    folder = _export(tmp_path, ["cat", "dog"])
    with pytest.raises(ValueError, match=r"model classes \['cat', 'dog'\] and data 'motion'"):
        evaluate_model(folder, "motion", motion_samples=8, device="cpu")
    with pytest.raises(ValueError, match="crops must be 1 or 3"):
        evaluate_model(folder, "motion", num_crops=2)
