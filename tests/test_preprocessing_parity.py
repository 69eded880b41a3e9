"""One video, one model, one input tensor (issue 10): ``predict``, ``explain``, the datasets' evaluation transform
(``sifa-hub eval``) and ``AutoVideoProcessor`` / ``pipeline("video-classification")`` all run the clip pipeline.

Each door is run up to the model's forward, where a pre-hook takes the input and stops the run, so even
``sifa_resnet50`` (crop_pct 0.875: short side 256, crop 224) is compared without a heavy forward; the pico models
are also run to the end, to compare probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn

import sifa_hub  # noqa: F401  (registers the models and the transformers integration)
from sifa_hub.data import ClipTransform, VideoListDataset, build_transform, write_video
from sifa_hub.data.pipeline import center_crop, resize_short_side, scale_size
from sifa_hub.explain import explain_video
from sifa_hub.hf import SifaForVideoClassification, SifaVideoProcessor
from sifa_hub.layers import SIFA
from sifa_hub.loading import data_config
from sifa_hub.predict import predict

MODELS = {  # name: (variant, timm kwargs, expected (img_size, crop_pct, short side))
    "c2d_resnet_pico_crop_pct_0.875": ("c2d_resnet_pico", {"pretrained_cfg_overlay": {"crop_pct": 0.875}}, (32, 36)),
    "c2d_resnet_pico": ("c2d_resnet_pico", {}, (32, 32)),
    "sifa_resnet_pico": ("sifa_resnet_pico", {}, (32, 32)),
    "sifa_swin_pico": ("sifa_swin_pico", {}, (32, 32)),
}


class Captured(Exception):
    """Raised by the forward pre-hook once it has the model's input."""


def input_of(model: nn.Module, door: Callable[[], object]) -> torch.Tensor:
    """The clip batch ``(B, C, T, H, W)`` a door feeds ``model`` (the forward itself does not run)."""
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0].detach().clone())
        raise Captured

    handle = model.register_forward_pre_hook(hook)
    try:
        with pytest.raises(Captured):
            door()
    finally:
        handle.remove()
    return seen[0]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames of 96×54 (not square, odd crop offsets): a bar moving right over a colour ramp."""
    frames = torch.zeros(40, 54, 96, 3, dtype=torch.uint8)
    frames[..., 0] = torch.linspace(0, 255, 96).to(torch.uint8)
    frames[..., 1] = torch.linspace(0, 200, 54).to(torch.uint8)[:, None]
    for t in range(40):
        frames[t, 10:40, 2 * t : 2 * t + 8] = 255
    path = tmp_path_factory.mktemp("parity") / "clip.mp4"
    write_video(path, frames, fps=25.0)
    return path


def build(name: str) -> nn.Module:
    variant, kwargs, _ = MODELS[name]
    torch.manual_seed(0)
    model = timm.create_model(variant, num_classes=4, **kwargs).eval()
    for module in model.modules():  # the pure-PyTorch operator: no kernel build in this test
        if isinstance(module, SIFA):
            module.backend = "torch"
    return model


def door_inputs(model: nn.Module, video: Path, tmp_path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """``(door, input (1, 3, T, H, W))`` for every door that takes a video file."""
    from transformers import AutoVideoProcessor

    cfg = data_config(model)
    yield "predict", input_of(model, lambda: predict(video, model, device="cpu"))
    if any(isinstance(m, SIFA) for m in model.modules()):
        yield "explain", input_of(model, lambda: explain_video(video, model, out=tmp_path / "x.png"))
    list_file = tmp_path / "val.txt"
    list_file.write_text(f"{video} 0\n")
    size, crop_pct, mean, std = cfg["img_size"], cfg["crop_pct"], cfg["mean"], cfg["std"]
    transforms = {
        "eval (build_transform)": build_transform(train=False, size=size, crop_pct=crop_pct, mean=mean, std=std),
        "eval (ClipTransform)": ClipTransform.from_data_config(cfg),
    }
    for door, tf in transforms.items():
        dataset = VideoListDataset(
            list_file, num_frames=cfg["num_frames"], sampling="uniform", train=False, transform=tf, classes=["a"]
        )
        yield door, dataset[0][0][None]
    SifaVideoProcessor.from_data_config(cfg).save_pretrained(tmp_path / "processor")
    processor = AutoVideoProcessor.from_pretrained(tmp_path / "processor")
    assert type(processor) is SifaVideoProcessor
    pixel_values = processor(str(video), return_tensors="pt")["pixel_values"]  # (1, T, 3, H, W)
    yield "AutoVideoProcessor", pixel_values.permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_door_gives_the_same_input(name: str, video: Path, tmp_path: Path) -> None:
    model = build(name)
    cfg = data_config(model)
    img_size, short_side = MODELS[name][2]
    assert cfg["img_size"] == img_size and scale_size(img_size, cfg["crop_pct"]) == short_side
    inputs = dict(door_inputs(model, video, tmp_path))
    reference = inputs.pop("predict")
    assert reference.shape == (1, 3, cfg["num_frames"], img_size, img_size)
    for door, tensor in inputs.items():
        assert torch.equal(tensor, reference), f"{name}: {door} differs from predict"


def test_sifa_resnet50_crop_pct_at_the_tensor_level(video: Path, tmp_path: Path) -> None:
    """The released geometry: 16 frames, short side floor(224 / 0.875) = 256, centre crop 224."""
    model = timm.create_model("sifa_resnet50", num_classes=4).eval()
    cfg = data_config(model)
    assert (cfg["num_frames"], cfg["img_size"], cfg["crop_pct"]) == (16, 224, 0.875)
    inputs = dict(door_inputs(model, video, tmp_path))
    reference = inputs.pop("predict")
    assert reference.shape == (1, 3, 16, 224, 224)
    for door, tensor in inputs.items():
        assert torch.equal(tensor, reference), f"sifa_resnet50: {door} differs from predict"
    # and the processor transformers builds from the model's config is the same one
    hf_config = SifaForVideoClassification.from_timm(model).config
    from_config = SifaVideoProcessor.from_sifa_config(hf_config)
    assert (from_config.size.shortest_edge, from_config.crop_size.height, from_config.num_frames) == (256, 224, 16)


@pytest.mark.parametrize("name", ["c2d_resnet_pico_crop_pct_0.875", "sifa_swin_pico"])
def test_identical_probabilities_through_predict_eval_and_the_pipeline(name: str, video: Path, tmp_path: Path) -> None:
    from transformers import pipeline

    model = build(name)
    cfg = data_config(model)
    got = predict(video, model, top_k=4, device="cpu")[0]["predictions"]
    by_predict = torch.tensor([p["score"] for p in sorted(got, key=lambda p: p["index"])])
    (tmp_path / "val.txt").write_text(f"{video} 0\n")
    dataset = VideoListDataset(
        tmp_path / "val.txt",
        num_frames=cfg["num_frames"],
        sampling="uniform",
        train=False,
        classes=["a"],
        transform=ClipTransform.from_data_config(cfg),
    )
    with torch.no_grad():
        by_eval = model(dataset[0][0][None]).softmax(-1)[0]
    assert torch.equal(by_eval, by_predict)
    labels = [f"class_{i}" for i in range(4)]
    hf_model = SifaForVideoClassification.from_timm(model, labels=labels).eval()
    processor = SifaVideoProcessor.from_data_config(cfg)
    classifier = pipeline("video-classification", model=hf_model, video_processor=processor)
    by_pipeline = {d["label"]: d["score"] for d in classifier(str(video), top_k=4)}
    assert np.allclose([by_pipeline[label] for label in labels], by_predict.tolist(), atol=1e-6)


def test_scale_size_is_timms_floor_rule() -> None:
    assert scale_size(224, 0.875) == 256 and scale_size(224, 1.0) == 224
    assert scale_size(32, 0.875) == 36  # round() would give 37: the one-pixel disagreement of issue 10
    assert scale_size(288, 0.9) == 320
    for bad in (0.0, 1.5, -1, "0.9"):
        with pytest.raises(ValueError, match="crop_pct"):
            scale_size(224, bad)  # type: ignore[arg-type]


def test_one_centre_crop_rule_and_resize_geometry() -> None:
    frames = torch.arange(39, dtype=torch.float32).view(1, 1, 1, 39).expand(2, 3, 33, 39)  # (T, C, H, W)
    crop = center_crop(frames, (32, 32))
    assert crop.shape == (2, 3, 32, 32) and int(crop[0, 0, 0, 0]) == 3  # (39 - 32) // 2, not round(3.5) = 4
    resized = resize_short_side(torch.zeros(2, 3, 54, 96, dtype=torch.uint8), 36)
    assert resized.shape == (2, 3, 36, 64) and resized.dtype == torch.float32  # long side floor(36 * 96 / 54)
    portrait = resize_short_side(torch.zeros(1, 3, 96, 54), 36)
    assert portrait.shape == (1, 3, 64, 36)
    with pytest.raises(ValueError, match="larger than the frames"):
        center_crop(frames, (40, 40))


def test_data_config_uses_the_models_own_input_size() -> None:
    """An in-process pico model (pretrained_cfg input 32) is fed 32×32, not the ResNet constructor's 224."""
    for variant in ("c2d_resnet_pico", "sifa_resnet_pico", "sifa_swin_pico"):
        assert data_config(timm.create_model(variant))["img_size"] == 32
    assert data_config(timm.create_model("sifa_resnet_pico", img_size=48))["img_size"] == 48  # built for 48
