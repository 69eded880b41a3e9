"""sifa-hub demo in a tiny configuration: table, PNGs, loadable publishable model, C2D time-reversal blindness."""

from __future__ import annotations

import json
import os

import pytest
import timm
import torch

from sifa_hub.demo import DemoConfig, reversal_gap, run_demo
from sifa_hub.explain import find_sifa_modules, sifa_sampling
from sifa_hub.ops import functional
from sifa_hub.training_data import MotionClips

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def pure_pytorch_backend(monkeypatch):
    """The SIFA op on its pure-PyTorch backend (the demo and the maps are tested, not the fused kernel's build)."""
    monkeypatch.setattr(functional, "selected_backend", lambda device="cpu": ("torch", "tests: pure PyTorch"))


def test_demo_tiny(tmp_path, capsys, monkeypatch):
    import sifa_hub.ops

    builds = []

    def build_kernels() -> None:  # stands in for the ops kernel build: announces the build, then hits the cache
        if not builds:
            print("building the fused SIFA CPU kernel (first use)")
        builds.append(1)

    monkeypatch.setattr(sifa_hub.ops, "build_kernels", build_kernels, raising=False)
    cfg = DemoConfig(
        out=str(tmp_path / "demo"),
        classes=8,
        train_samples=32,
        val_samples=16,
        epochs=1,
        batch_size=16,
        num_frames=4,
        img_size=16,
        progress=False,
        threads=1,
    )
    old_mask = os.umask(0o022)
    try:
        results = run_demo(cfg)
    finally:
        os.umask(old_mask)
    out = capsys.readouterr().out
    for text in ("model", "params", "top-1 %", "clips/s", "sifa_resnet_pico", "c2d_resnet_pico", "50%"):
        assert text in out, text
    assert "time-reversal pairs" in out
    assert len(builds) == 2 and out.count("building the fused SIFA CPU kernel") == 1  # before each training run
    md = (tmp_path / "demo" / "results.md").read_text()
    assert "sifa_resnet_pico" in md and "c2d_resnet_pico" in md and "ceiling" in md
    on_disk = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert on_disk["models"] == json.loads(json.dumps(results["models"]))
    assert [r["model"] for r in results["models"]] == ["sifa_resnet_pico", "c2d_resnet_pico"]
    classes = results["classes"]
    assert len(classes) == 8 and results["chance_top1"] == pytest.approx(12.5) and results["c2d_ceiling_top1"] == 50.0
    for row in results["models"]:
        assert 0.0 <= row["top1"] <= 100.0 and row["params"] > 0 and row["clips_per_s"] > 0
    for png in ("learning_curves.png", "sifa_sampling.png"):
        with open(tmp_path / "demo" / png, "rb") as f:
            assert f.read(8) == PNG, png
    assert sorted(os.listdir(tmp_path / "demo" / "samples")) == sorted(f"{c}.mp4" for c in classes)
    # the SIFA model directory is publishable: weights, config, card, and it loads through timm with its labels
    sifa_dir = tmp_path / "demo" / "sifa_resnet_pico"
    for name in ("model.safetensors", "config.json", "README.md"):
        assert (sifa_dir / name).is_file(), name
    for path in (tmp_path / "demo").rglob("*"):  # every file the demo writes is readable by others (umask 022)
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path
    model = timm.create_model(f"local-dir:{sifa_dir}", pretrained=True)
    assert model.pretrained_cfg["label_names"] == classes
    assert model.num_frames == 4 and len(find_sifa_modules(model)) > 0
    # the C2D twin cannot tell a clip from its time reversal; that is why its ceiling is 50%
    c2d = timm.create_model(f"local-dir:{tmp_path / 'demo' / 'c2d_resnet_pico'}", pretrained=True)
    clips = MotionClips(4, num_frames=4, size=16, seed=5, mean=(0.5,) * 3, std=(0.25,) * 3)
    batch = torch.stack([clips[i][0] for i in range(4)])
    assert reversal_gap(c2d, batch) < 1e-4
    assert results["c2d_reversal_max_logit_gap"] < 1e-4


def test_sifa_sampling_matches_the_operator():
    """The explain maps' weights and positions reproduce the SIFA module's own output."""
    torch.manual_seed(0)
    model = timm.create_model("sifa_resnet_pico", num_classes=8, num_frames=4, img_size=16).eval()
    name, module = find_sifa_modules(model)[0]
    with torch.no_grad():
        module.conv_offset.weight.normal_(0, 0.1)
    clip = torch.randn(3, 4, 16, 16)
    captured = []
    handle = module.register_forward_hook(lambda m, args, out: captured.append((args[0], out)))
    maps = sifa_sampling(model, clip, block=0)
    handle.remove()
    x, y = captured[-1]
    assert maps.name == name and maps.num_steps == x.shape[2] and maps.feature_size == tuple(x.shape[3:])
    assert not torch.equal(maps.positions, maps.grid)  # learned offsets move the keys
    # rebuild y[t] = Σ_k a_k · x[t+1](pos_k) from the maps (reference bilinear sampling) and compare
    from sifa_hub.ops.reference import bilinear_sample_zeros

    keys = x[0, :, 1:].transpose(0, 1)  # (T-1, C, h, w)
    rebuilt = torch.zeros_like(keys)
    for k in range(maps.weights.shape[-1]):
        sample = bilinear_sample_zeros(keys, maps.positions[..., k, 0], maps.positions[..., k, 1])
        rebuilt += maps.weights[..., k].unsqueeze(1) * sample
    assert torch.allclose(rebuilt, y[0, :, :-1].transpose(0, 1), atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        sifa_sampling(model, clip, block=99)


def test_demo_config_errors():
    with pytest.raises(ValueError, match="family"):
        DemoConfig(family="vit").validate()
    with pytest.raises(ValueError, match="num_frames"):
        DemoConfig(num_frames=1).validate()
