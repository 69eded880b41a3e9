"""The first published checkpoint (``model_cards/sifa_resnet_pico/``, trained by ``sifa-hub demo``) loads through
timm and transformers and still solves the motion task its card reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from transformers import AutoModelForVideoClassification

import sifa_hub  # noqa: F401
from sifa_hub.ops import functional
from sifa_hub.publish import validate_card
from sifa_hub.training_data import MotionClips

CHECKPOINT = Path(__file__).resolve().parents[1] / "model_cards" / "sifa_resnet_pico"


@pytest.fixture(autouse=True)
def pure_pytorch_backend(monkeypatch):
    """The SIFA op on its pure-PyTorch backend: the checkpoint is tested, not the fused kernel's build."""
    monkeypatch.setattr(functional, "selected_backend", lambda device="cpu": ("torch", "tests: pure PyTorch"))


def _held_out_clips(model: torch.nn.Module, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.pretrained_cfg
    clips = MotionClips(
        n,
        num_frames=model.num_frames,
        size=cfg["input_size"][-1],
        seed=12345,
        mean=cfg["mean"],
        std=cfg["std"],
        num_classes=model.num_classes,
    )
    videos, labels = zip(*(clips[i] for i in range(n)))
    return torch.stack(videos), torch.tensor(labels)


def test_checkpoint_matches_its_card_and_still_classifies_motion() -> None:
    card = validate_card(CHECKPOINT.parent / "sifa_resnet_pico.md")
    measured = json.loads((CHECKPOINT / "demo_results.json").read_text())
    sifa_top1 = next(m["top1"] for m in measured["models"] if m["model"] == "sifa_resnet_pico")
    assert f"value: {sifa_top1}" in card.content

    model = timm.create_model(f"local-dir:{CHECKPOINT}", pretrained=True).eval()
    videos, labels = _held_out_clips(model)  # fresh clips (another seed than training and validation)
    with torch.no_grad():
        logits = model(videos)
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    assert accuracy >= 0.9, f"published checkpoint: top-1 {accuracy:.2%} on fresh motion clips"

    hf_model = AutoModelForVideoClassification.from_pretrained(CHECKPOINT).eval()
    with torch.no_grad():
        hf_logits = hf_model(pixel_values=videos.transpose(1, 2)).logits
    torch.testing.assert_close(hf_logits, logits, rtol=0, atol=1e-5)
