"""transformers integration: config, models over the timm modules, video processor, Auto*, pipeline, Trainer."""

from __future__ import annotations

import json
import math
import re

import av
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
    Trainer,
    TrainingArguments,
    pipeline,
)

import sifa_hub  # noqa: F401  (registers timm models and transformers Auto* classes)
from sifa_hub.hf import (
    SifaConfig,
    SifaForVideoClassification,
    SifaModel,
    SifaVideoProcessor,
)
from sifa_hub.models._helpers import CheckpointMismatchError
from sifa_hub.models.sifa_resnet import combine_heads

LABELS = ["left", "right", "up", "down"]
PICO = {
    "resnet": {"architecture": "sifa_resnet_pico", "num_frames": 8, "image_size": 32},
    "swin": {"architecture": "sifa_swin_pico", "num_frames": 8, "image_size": 32},
}


def make_config(family: str, **kwargs) -> SifaConfig:
    values = dict(PICO[family], id2label=dict(enumerate(LABELS)))
    values.update(kwargs)
    return SifaConfig(**values)


def clip(batch: int = 2, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """``(B, T, C, H, W)`` pixel values."""
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every float tensor (zero-initialised paths and BN statistics included) non-trivial values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=gen)
                if "running_var" in name:
                    t.copy_(noise.abs() + 0.5)
                else:
                    t.add_(0.1 * noise)


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> str:
    """2 s, 25 fps h264 clip of a white square moving right (encoded with PyAV)."""
    path = str(tmp_path_factory.mktemp("video") / "moving.mp4")
    height, width = 48, 64
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(50):
            frame = np.zeros((height, width, 3), np.uint8)
            x = i % (width - 12)
            frame[18:30, x : x + 12] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ----------------------------------------------------------------------------------------------------- config


def test_config_round_trip_and_timm_view(tmp_path):
    config = make_config("swin", model_args={"learn_offsets": True})
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "sifa"
    assert data["architecture"] == "sifa_swin_pico" and data["num_classes"] == 4
    assert data["model_args"] == {"learn_offsets": True, "num_frames": 8, "in_chans": 3, "img_size": [32, 32]}
    assert data["pretrained_cfg"]["input_size"] == [3, 32, 32] and data["label_names"] == LABELS
    loaded = SifaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.id2label == dict(enumerate(LABELS)) and loaded.label2id["up"] == 2
    assert loaded.model_args == {"learn_offsets": True} and loaded.family == "swin"
    # timm reads the same file: its pretrained_cfg is a valid PretrainedCfg and model_args build the model
    from timm.models._builder import resolve_pretrained_cfg
    from timm.models._hub import load_model_config_from_path

    pretrained_cfg, name, model_args = load_model_config_from_path(tmp_path)
    assert name == "sifa_swin_pico" and model_args["learn_offsets"] is True
    assert resolve_pretrained_cfg(name, pretrained_cfg).num_classes == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"architecture": "resnet50"}, "not a SIFA variant"),
        ({"num_frames": 0}, "num_frames must be a positive int"),
        ({"image_size": [32, 32, 3]}, "image_size"),
        ({"model_args": {"num_classes": 3}, "num_labels": 4}, "num_classes=3 disagrees with the 4 labels"),
        ({"model_args": {"num_frames": 16}}, "contradicts num_frames"),
        ({"image_mean": [0.5]}, "image_mean has 1 values"),
        ({"image_std": [1.0, 0.0, 1.0]}, "image_std must be positive"),
        ({"pretrained_cfg": {"frames": 8}}, "pretrained_cfg has keys"),
        ({"id2label": {0: "a", 1: "b"}, "num_classes": 3}, "num_classes=3"),
        ({"label_names": ["a", "b", "c"], "num_classes": 4}, "label_names has 3 names but num_classes=4"),
        ({"label_names": ["a", 2]}, "label_names must be a list of strings"),
        ({"id2label": {0: "a", 2: "b"}}, r"id2label keys must be the class indices 0\.\.1"),
        ({"id2label": {0: "a", 1: "b"}, "label_names": ["b", "a"]}, "disagree with id2label"),
        ({"num_classes": "4"}, "num_classes must be an int"),
        ({"num_frames": "8"}, "num_frames must be a positive int, got '8'"),
        ({"image_size": 0}, "image_size must be a positive int"),
        ({"model_args": [1, 2]}, "model_args must be a dict"),
        ({"image_mean": ["a", "b", "c"]}, "image_mean must be a list of 3 numbers"),
        ({"image_std": [1.0, float("nan"), 1.0]}, "image_std must be finite"),
        ({"pretrained_cfg": "x"}, "pretrained_cfg must be a dict"),
    ],
)
def test_config_errors(kwargs, message):
    values = dict(PICO["resnet"], **kwargs)
    with pytest.raises(ValueError, match=message):
        SifaConfig(**values)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"num_frames": 0}, "num_frames must be a positive int"),
        ({"num_frames": "8"}, "num_frames must be a positive int, got '8'"),
        ({"image_std": [0.2, 0.0, 0.2]}, "image_std must be positive"),
        ({"label_names": ["left", "right"]}, "label_names .* disagree with id2label"),
        ({"architecture": None}, "architecture is missing"),
    ],
)
def test_bad_config_json_names_the_file_and_field(tmp_path, edit, message):
    """Every door (SifaConfig, AutoConfig, the model classes) says ``<dir>/config.json: <field> ...``."""
    model = SifaForVideoClassification(make_config("resnet", architecture="c2d_resnet_pico"))
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    data = json.loads(path.read_text())
    for key, value in edit.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    expected = f"^{re.escape(str(path))}: {message}"
    for load in (SifaConfig.from_pretrained, AutoConfig.from_pretrained, SifaForVideoClassification.from_pretrained):
        with pytest.raises(ValueError, match=expected):
            load(tmp_path)


def test_unknown_architecture_and_bad_frame_count():
    with pytest.raises(ValueError, match="unknown SIFA architecture 'sifa_resnet_nano'"):
        SifaModel(SifaConfig(architecture="sifa_resnet_nano"))
    # swin pico embeds tubelets of 2 frames: 7 frames cannot be cut into them
    with pytest.raises(ValueError, match=r"cannot build sifa_swin_pico .*multiple of early_stride \(2\)"):
        SifaForVideoClassification(make_config("swin", num_frames=7))


# ------------------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("family", ["resnet", "swin"])
def test_fresh_model_is_the_timm_model(family):
    """Same seed → the very tensors timm.create_model makes (post_init must keep timm's init) and its logits."""
    config = make_config(family)
    torch.manual_seed(0)
    model = SifaForVideoClassification(config).eval()
    torch.manual_seed(0)
    reference = timm.create_model(config.architecture, num_classes=4, **config.timm_kwargs()).eval()
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == [f"timm_model.{k}" for k in theirs]
    assert all(torch.equal(ours[f"timm_model.{k}"], v) for k, v in theirs.items())
    zero_init = [k for k in theirs if ".conv_offset." in k or ".conv_t." in k or ".sifa_norm." in k]
    assert zero_init and all(not theirs[k].any() for k in zero_init)
    x = clip()
    with torch.no_grad():
        assert torch.equal(model(x).logits, reference(x.permute(0, 2, 1, 3, 4)))


def test_sifa_net_logits_heads_and_reference_loss():
    model = SifaForVideoClassification(make_config("resnet")).eval()
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        out = model(clip(), labels=labels)
    a, b = out.head_logits
    assert a.shape == b.shape == (2, 4)
    # logits = log of the mean of the two softmaxes: softmax(logits) is the reference prediction
    torch.testing.assert_close(out.logits.softmax(-1), (a.softmax(-1) + b.softmax(-1)) / 2, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.logits, combine_heads(a, b), rtol=0, atol=0)
    torch.testing.assert_close(out.loss, F.cross_entropy(a, labels) + F.cross_entropy(b, labels))


def test_sifa_net_other_problem_types():
    """Multi-label / regression: logits are the mean of both heads, loss is the problem's loss on each head."""
    x = clip()
    model = SifaForVideoClassification(make_config("resnet", problem_type="multi_label_classification")).eval()
    targets = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    with torch.no_grad():
        out = model(x, labels=targets)
    a, b = out.head_logits
    torch.testing.assert_close(out.logits, (a + b) / 2)
    expected = F.binary_cross_entropy_with_logits(a, targets) + F.binary_cross_entropy_with_logits(b, targets)
    torch.testing.assert_close(out.loss, expected)
    regression = SifaForVideoClassification(make_config("resnet", id2label=None, num_labels=1)).eval()
    with torch.no_grad():
        out = regression(x, labels=torch.tensor([0.5, -1.0]))
    a, b = out.head_logits
    torch.testing.assert_close(out.logits, (a + b) / 2)
    assert regression.config.problem_type == "regression" and torch.isfinite(out.loss)


@pytest.mark.parametrize("family", ["resnet", "swin"])
def test_training_steps_decrease_loss(family):
    torch.manual_seed(0)
    model = SifaForVideoClassification(make_config(family, model_args={"drop_rate": 0.0})).train()
    x, labels = clip(2, seed=1), torch.tensor([0, 3])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):
        loss = model(x, labels=labels).loss
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("family", ["resnet", "swin"])
def test_backbone_outputs_hidden_states_and_tuples(family):
    config = make_config(family)
    backbone = SifaModel(config).eval()
    x = clip()
    with torch.no_grad():
        out = backbone(x, output_hidden_states=True)
        as_tuple = backbone(x, return_dict=False)
    c = backbone.timm_model.num_features
    assert out.last_hidden_state.dim() == 5 and out.last_hidden_state.shape[:2] == (2, c)
    assert out.pooler_output.shape == (2, 2 * c if family == "resnet" else c)
    assert len(out.hidden_states) == (5 if family == "resnet" else 2)
    assert all(h.dim() == 5 and h.shape[0] == 2 for h in out.hidden_states)
    assert (out.dual_hidden_state is not None) == (family == "resnet")
    assert torch.equal(as_tuple[0], out.last_hidden_state) and torch.equal(as_tuple[1], out.pooler_output)
    with torch.no_grad():
        picked = backbone(x, output_hidden_states=[1]).hidden_states
    assert len(picked) == 1 and torch.equal(picked[0], out.hidden_states[1])


@pytest.mark.parametrize("family", ["resnet", "swin"])
def test_gradient_checkpointing_same_gradients(family):
    torch.manual_seed(0)
    model = SifaForVideoClassification(make_config(family, model_args={"drop_rate": 0.0})).eval()
    x, labels = clip(), torch.tensor([0, 2])
    model(x, labels=labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    model(x, labels=labels).loss.backward()
    for name, grad in plain.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, rtol=1e-4, atol=1e-6)
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing


def test_pixel_values_errors():
    model = SifaForVideoClassification(make_config("swin")).eval()
    with pytest.raises(ValueError, match=r"looks like \(B, C, T, H, W\).*permute\(0, 2, 1, 3, 4\)"):
        model(clip().permute(0, 2, 1, 3, 4))
    with pytest.raises(ValueError, match="must be \\(B, T, C, H, W\\), got a 4-D tensor"):
        model(torch.zeros(8, 3, 32, 32))
    with pytest.raises(ValueError, match="clip length T=7 must be a positive multiple of early_stride=2"):
        model(clip(frames=7))
    with pytest.raises(ValueError, match="cannot return attention maps"):
        model(clip(), output_attentions=True)
    with pytest.raises(TypeError, match="pixel_values must be a torch.Tensor"):
        model(np.zeros((1, 8, 3, 32, 32), np.float32))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_pixel_values_point_to_the_processor(dtype):
    model = SifaForVideoClassification(make_config("resnet", architecture="c2d_resnet_pico")).eval()
    frames = torch.zeros(1, 8, 3, 32, 32, dtype=dtype)
    with pytest.raises(TypeError, match=rf"dtype {dtype}.*video processor.*/ 255 - mean\) / std"):
        model(frames)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixel_values_are_named(bad):
    model = SifaForVideoClassification(make_config("swin")).eval()
    x = clip(1)
    x[0, 3, 1, 4, 5] = bad
    with pytest.raises(ValueError, match="input clip contains NaN/Inf"):
        model(x)


def test_other_float_dtypes_are_cast_to_the_weights_dtype():
    model = SifaForVideoClassification(make_config("resnet")).eval()
    x = clip()
    with torch.no_grad():
        expected = model(x).logits
        for dtype in (torch.float64, torch.float16, torch.bfloat16):
            out = model(x.to(dtype)).logits
            assert out.dtype == torch.float32
            tol = 1e-6 if dtype == torch.float64 else 0.05
            torch.testing.assert_close(out, expected, rtol=tol, atol=tol)


def test_batch_of_zero_clips():
    """An empty batch gives empty outputs of the right shapes (SIFA-Net, both classifiers)."""
    model = SifaForVideoClassification(make_config("resnet")).eval()
    with torch.no_grad():
        out = model(clip(0), labels=torch.zeros(0, dtype=torch.long))
    assert out.logits.shape == (0, 4) and all(h.shape == (0, 4) for h in out.head_logits)
    with torch.no_grad():
        features = SifaModel(make_config("resnet")).eval()(clip(0))
    assert features.pooler_output.shape[0] == 0 and features.last_hidden_state.shape[0] == 0


# --------------------------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("family", ["resnet", "swin"])
def test_save_load_bit_exact_and_timm_reads_the_file(family, tmp_path):
    model = SifaForVideoClassification(make_config(family)).eval()
    randomize_(model.timm_model)  # zero-init paths and BN statistics get non-trivial values
    x = clip()
    with torch.no_grad():
        expected = model(x).logits
    model.save_pretrained(tmp_path)
    file_keys = set(load_file(tmp_path / "model.safetensors"))
    assert file_keys == set(model.timm_model.state_dict())  # timm-native keys
    loaded = SifaForVideoClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, expected)
    for source in (
        {"model_name": f"local-dir:{tmp_path}"},
        dict(
            model_name=model.config.architecture,
            num_classes=4,
            pretrained_cfg_overlay={"file": str(tmp_path / "model.safetensors"), "num_classes": 4},
            **model.config.timm_kwargs(),
        ),
    ):
        timm_model = timm.create_model(pretrained=True, **source).eval()
        with torch.no_grad():
            assert torch.equal(timm_model(x.permute(0, 2, 1, 3, 4)), expected)


def test_sharded_save_load(tmp_path):
    model = SifaForVideoClassification(make_config("resnet")).eval()
    randomize_(model.timm_model)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and set(index["weight_map"]) == set(model.timm_model.state_dict())
    loaded = SifaForVideoClassification.from_pretrained(tmp_path).eval()
    x = clip()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


@pytest.mark.parametrize("family", ["resnet", "swin"])
def test_missing_weights_are_initialised_like_timm(family, tmp_path):
    """Tensors absent from a checkpoint get timm's init: zero temporal paths, 0/1 BN statistics, exact buffers."""
    config = make_config(family)
    model = SifaForVideoClassification(config)
    randomize_(model.timm_model)
    state = model.timm_model.state_dict()
    dropped = [k for k in state if any(p in k for p in (".sifa.", ".conv_t.", ".sifa_norm.", "bn3.", "running_"))]
    assert dropped
    model.save_pretrained(tmp_path)
    save_file({k: v for k, v in state.items() if k not in dropped}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match="missing"):
        SifaForVideoClassification.from_pretrained(tmp_path)
    loaded = SifaForVideoClassification.from_pretrained(tmp_path, strict=False).eval()
    fresh = timm.create_model(config.architecture, num_classes=4, **config.timm_kwargs()).state_dict()
    got = loaded.timm_model.state_dict()
    for key, value in fresh.items():
        if key in dropped:
            if not value.is_floating_point() or not value.any() or (value == 1).all():
                assert torch.equal(got[key], value), key  # zeros, ones, counters
        else:
            assert torch.equal(got[key], state[key]), key
    # the same weights in a timm model give the same logits (Swin's index/mask buffers are rebuilt correctly)
    reference = timm.create_model(config.architecture, num_classes=4, **config.timm_kwargs())
    reference.load_state_dict(got)
    with torch.no_grad():
        assert torch.equal(loaded(clip()).logits, reference.eval()(clip().permute(0, 2, 1, 3, 4)))


def test_config_weights_mismatch_errors(tmp_path):
    c2d = SifaForVideoClassification(make_config("resnet", architecture="c2d_resnet_pico"))
    c2d.save_pretrained(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"missing: .*sifa\.conv_offset"):
        SifaForVideoClassification.from_pretrained(tmp_path, architecture="sifa_resnet_pico")
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        SifaForVideoClassification.from_pretrained(tmp_path, id2label={0: "a", 1: "b"})
    # a new classifier size is fine when asked for
    two = SifaForVideoClassification.from_pretrained(tmp_path, id2label={0: "a", 1: "b"}, ignore_mismatched_sizes=True)
    assert two.timm_model.fc.out_features == 2
    assert torch.equal(two.timm_model.conv1.weight, c2d.timm_model.conv1.weight)
    # a classification checkpoint loads into the backbone; a backbone checkpoint into the classifier
    backbone = SifaModel.from_pretrained(tmp_path)
    assert torch.equal(backbone.timm_model.conv1.weight, c2d.timm_model.conv1.weight)
    backbone.save_pretrained(tmp_path / "backbone")
    head = SifaForVideoClassification.from_pretrained(tmp_path / "backbone", id2label={0: "a", 1: "b", 2: "c"})
    assert head.timm_model.fc.weight.shape == (3, head.timm_model.num_features) and head.timm_model.fc.weight.std() > 0


@pytest.mark.parametrize("family", ["resnet", "swin"])
def test_new_num_labels_with_ignore_mismatched_sizes(family, tmp_path):
    """As for VideoMAE: ``num_labels=10`` replaces the saved 4 labels; the backbone is kept, the head is new."""
    model = SifaForVideoClassification(make_config(family, architecture=f"c2d_{family}_pico"))
    model.save_pretrained(tmp_path)
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        SifaForVideoClassification.from_pretrained(tmp_path, num_labels=10)
    ten = SifaForVideoClassification.from_pretrained(tmp_path, num_labels=10, ignore_mismatched_sizes=True).eval()
    assert ten.config.num_labels == 10 and ten.config.id2label[9] == "LABEL_9"
    saved = ten.config.to_dict()
    assert saved["num_classes"] == 10 and saved["label_names"] == [f"LABEL_{i}" for i in range(10)]
    head = ten.timm_model.get_classifier()
    heads = head if isinstance(head, tuple) else (head,)
    assert all(h.weight.shape == (10, ten.timm_model.num_features) and h.weight.std() > 0 for h in heads)
    kept = {k: v for k, v in model.state_dict().items() if ".fc" not in k}
    loaded = ten.state_dict()
    assert kept and all(torch.equal(loaded[k], v) for k, v in kept.items())
    with torch.no_grad():
        assert ten(clip()).logits.shape == (2, 10)


def test_timm_save_for_hf_directory_loads(tmp_path):
    """A directory written by timm's own ``save_for_hf`` (no transformers fields) loads as well."""
    timm_model = timm.create_model("sifa_swin_pico", num_classes=3).eval()
    timm.models.save_for_hf(timm_model, tmp_path, safe_serialization=True)
    model = SifaForVideoClassification.from_pretrained(tmp_path, num_frames=8).eval()
    assert model.config.num_labels == 3 and model.config.architecture == "sifa_swin_pico"
    with torch.no_grad():
        assert torch.equal(model(clip()).logits, timm_model(clip().permute(0, 2, 1, 3, 4)))


def test_timm_conversion_both_ways():
    timm_model = timm.create_model("sifa_swin_pico", num_classes=4, learn_offsets=True).eval()
    model = SifaForVideoClassification.from_timm(timm_model, labels=LABELS)
    assert model.to_timm() is timm_model and model.config.id2label[3] == "down"
    assert model.config.model_args == {"learn_offsets": True} and model.config.num_frames == 8
    assert set(model.state_dict()) == {f"timm_model.{k}" for k in timm_model.state_dict()}
    with torch.no_grad():
        assert torch.equal(model(clip()).logits, timm_model(clip().permute(0, 2, 1, 3, 4)))
    with pytest.raises(ValueError, match="3 labels for a model with num_classes=4"):
        SifaForVideoClassification.from_timm(timm_model, labels=LABELS[:3])


# ------------------------------------------------------------------------------ Auto*, processor, pipeline


def save_with_processor(model, path) -> SifaVideoProcessor:
    processor = SifaVideoProcessor.from_sifa_config(model.config)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return processor


def test_auto_classes_resolve(tmp_path):
    model = SifaForVideoClassification(make_config("resnet"))
    save_with_processor(model, tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is SifaConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is SifaModel
    assert type(AutoModelForVideoClassification.from_pretrained(tmp_path)) is SifaForVideoClassification
    processor = AutoVideoProcessor.from_pretrained(tmp_path)
    assert type(processor) is SifaVideoProcessor and processor.num_frames == 8
    assert processor.crop_size.height == 32 and processor.size.shortest_edge == 32  # pico crop_pct = 1.0


def test_video_processor_sampling_and_inputs(mp4, tmp_path):
    processor = SifaVideoProcessor(num_frames=8, size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    meta = type("Meta", (), {"total_num_frames": 50})()
    assert processor.sample_frames(meta).tolist() == [3, 9, 15, 21, 28, 34, 40, 46]
    assert processor.sample_frames(meta, frame_sampling="dense", frame_stride=2).tolist() == list(range(17, 33, 2))
    meta.total_num_frames = 5
    assert processor.sample_frames(meta).tolist() == [0, 0, 1, 2, 2, 3, 4, 4]  # short videos repeat frames
    with pytest.raises(ValueError, match="frame_sampling must be"):
        SifaVideoProcessor(frame_sampling="random")
    with pytest.raises(ValueError, match="fps is not supported"):
        processor.sample_frames(meta, fps=5)
    # the released setting: short side 256, centre crop 224 (crop_pct 0.875), 16 frames
    released = SifaVideoProcessor.from_sifa_config(SifaConfig(pretrained_cfg={"crop_pct": 0.875}))
    assert (released.size.shortest_edge, released.crop_size.height, released.num_frames) == (256, 224, 16)
    batch = processor([mp4, mp4], return_tensors="pt", frame_sampling="dense")
    assert batch["pixel_values"].shape == (2, 8, 3, 32, 32)
    frames = np.random.default_rng(0).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)  # 4 frames, 8 wanted
    assert processor(frames, return_tensors="pt")["pixel_values"].shape == (1, 8, 3, 32, 32)
    processor.save_pretrained(tmp_path)
    again = SifaVideoProcessor.from_pretrained(tmp_path)
    assert again.to_dict() == processor.to_dict()
    dense = again(mp4, return_tensors="pt", frame_sampling="dense")["pixel_values"]
    assert torch.equal(dense, batch["pixel_values"][:1])


def test_pipeline_on_mp4(mp4, tmp_path):
    model = SifaForVideoClassification(make_config("resnet")).eval()
    processor = save_with_processor(model, tmp_path)
    classifier = pipeline("video-classification", model=str(tmp_path))
    result = classifier(mp4, top_k=3)
    assert [set(r) for r in result] == [{"label", "score"}] * 3
    scores = [r["score"] for r in result]
    assert all(label["label"] in LABELS for label in result) and scores == sorted(scores, reverse=True)
    assert 0 < sum(scores) <= 1 + 1e-6
    with torch.no_grad():
        probs = model(**processor(mp4, return_tensors="pt")).logits.softmax(-1)[0]
    assert math.isclose(scores[0], probs.max().item(), rel_tol=1e-5)


def test_trainer_two_steps(tmp_path):
    model = SifaForVideoClassification(make_config("swin", architecture="c2d_swin_pico"))  # Trainer glue only
    dataset = [{"pixel_values": clip(1, seed=i)[0], "labels": torch.tensor(i % 4)} for i in range(4)]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    result = trainer.train()
    assert result.global_step == 2 and math.isfinite(result.training_loss)
    trainer.save_model(str(tmp_path / "final"))
    loaded = SifaForVideoClassification.from_pretrained(tmp_path / "final").eval()
    with torch.no_grad():
        assert torch.equal(loaded(clip()).logits, model.eval()(clip()).logits)


def test_trainer_evaluate_with_tutorial_compute_metrics(tmp_path):
    """The tutorial ``compute_metrics`` (``p.predictions.argmax(-1)``) works on SIFA-Net, whose output also
    carries ``head_logits``: predictions are the combined logits only (``keys_to_ignore_at_inference``)."""
    model = SifaForVideoClassification(make_config("resnet", architecture="c2d_resnet_pico")).eval()
    assert model.config.keys_to_ignore_at_inference == ["head_logits"]
    dataset = [{"pixel_values": clip(1, seed=i)[0], "labels": torch.tensor(i % 4)} for i in range(5)]
    seen = {}

    def compute_metrics(p):
        predictions = p.predictions.argmax(-1)
        seen["shape"] = p.predictions.shape
        return {"accuracy": float((predictions == p.label_ids).mean())}

    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True, dataloader_num_workers=0
    )
    metrics = Trainer(model=model, args=args, eval_dataset=dataset, compute_metrics=compute_metrics).evaluate()
    assert seen["shape"] == (5, 4)
    with torch.no_grad():
        expected = model(torch.stack([d["pixel_values"] for d in dataset])).logits.argmax(-1)
    labels = torch.tensor([d["labels"] for d in dataset])
    assert metrics["eval_accuracy"] == pytest.approx((expected == labels).float().mean().item())
    assert math.isfinite(metrics["eval_loss"])
