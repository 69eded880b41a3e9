"""SIFA-Net (ResNet family): timm contract, official-checkpoint fidelity, converter and 2D inflation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from safetensors import safe_open
from safetensors.torch import save_file

import sifa_hub.layers
from sifa_hub.models._helpers import CheckpointMismatchError
from sifa_hub.models.sifa_resnet import SifaResNet, checkpoint_filter_fn, combine_heads

NET_FIXTURE = "official_sifa_net_small.safetensors"
VARIANTS = ["sifa_resnet50", "sifa_resnet101", "sifa_resnet_pico", "c2d_resnet50", "c2d_resnet101", "c2d_resnet_pico"]
# the fixture's official configuration (safetensors metadata "arch")
SMALL_ARGS = {
    "layers": (1, 2, 2, 2),
    "width_per_group": 16,
    "sifa_kernel": (1, 3, 3, 3),
    "early_stride": 4,
    "num_classes": 10,
    "num_frames": 16,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _pico(name: str = "sifa_resnet_pico", **kwargs: object) -> SifaResNet:
    return timm.create_model(name, num_classes=5, **kwargs)


def _clip(b: int = 2, t: int = 8, size: int = 32) -> torch.Tensor:
    return torch.randn(b, 3, t, size, size)


# ---------------------------------------------------------------------------------------------------------------
# registration and the timm model contract
# ---------------------------------------------------------------------------------------------------------------


def test_registered_with_timm() -> None:
    names = set(timm.list_models("sifa*")) | set(timm.list_models("c2d*"))
    assert set(VARIANTS) <= names
    cfg = timm.models.get_pretrained_cfg("sifa_resnet50").to_dict()
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["paper_ids"] == "arXiv:2206.06931"
    assert cfg["classifier"] == ("fc", "fc_dual")
    assert cfg["first_conv"] == "conv1"
    assert cfg["num_classes"] == 400
    assert cfg["hf_hub_id"] == "timm/resnet50.a1_in1k"  # the default tag: an ImageNet initialisation


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_forward_backward(name: str) -> None:
    pico = name.endswith("pico")
    model = timm.create_model(name, num_classes=3)
    assert model.pretrained_cfg["architecture"] == name and model.default_cfg == model.pretrained_cfg
    assert model.num_frames == (8 if pico else 16) and model.early_stride == (1 if pico else 4)
    if not pico:  # R50/R101: forward only, on a short low-resolution clip (T = 2 steps, 1x1 layer4 maps)
        with torch.no_grad():
            assert model.eval()(_clip(b=1, t=8, size=32)).shape == (1, 3)
        return
    y = model(_clip())  # pico at its real size: 8 frames of 32x32
    assert y.shape == (2, 3)
    F.nll_loss(y, torch.tensor([0, 2])).backward()  # y holds log-probabilities
    assert all(p.grad is not None for p in model.parameters())


def test_pico_maps_and_params() -> None:
    model = _pico().eval()
    main, dual = model.forward_features(_clip())
    assert main.shape == (2, 256, 8, 2, 2)  # 32x32 input: layer4 keeps a 2x2 map
    assert dual.shape == (2, 256, 4, 4, 4)
    assert [f["reduction"] for f in model.feature_info] == [2, 2, 4, 8, 16]
    n_sifa = sum(1 for m in model.modules() if isinstance(m, sifa_hub.layers.SIFA))
    assert n_sifa == 4  # one in each of layer2, layer3, layer4, layer4_dual
    assert not any(isinstance(m, sifa_hub.layers.SIFA) for m in _pico("c2d_resnet_pico").modules())


def test_c2d_pico_is_blind_to_time_reversal() -> None:
    """Early stride 1, frame-wise blocks, time-mean GC and pair-wise time max pool: the C2D twin sees the set of
    frames only, so a clip and its reversal get the same logits; the SIFA model tells them apart."""
    clip = _clip(b=1)
    with torch.no_grad():
        c2d = _pico("c2d_resnet_pico", zero_init_last=False).eval()  # residual branches active, as once trained
        torch.testing.assert_close(c2d(clip.flip(2)), c2d(clip))
        sifa = _pico(zero_init_last=False).eval()
        assert (sifa(clip.flip(2)) - sifa(clip)).abs().max() > 1e-4


def test_output_is_log_of_reference_prediction_and_loss() -> None:
    model = _pico().eval()
    x, target = _clip(), torch.tensor([1, 4])
    with torch.no_grad():
        a, b = model.forward_heads(x)
        out = model(x)
    torch.testing.assert_close(out, combine_heads(a, b))
    torch.testing.assert_close(out.softmax(-1), (a.softmax(-1) + b.softmax(-1)) / 2)
    expected = F.cross_entropy(a, target) + F.cross_entropy(b, target)
    torch.testing.assert_close(model.loss((a, b), target), expected)
    with torch.no_grad():
        torch.testing.assert_close(model.loss(x, target), expected)
    soft = F.one_hot(target, 5).float() * 0.9 + 0.02  # mixup-style probability targets
    torch.testing.assert_close(
        model.loss((a, b), soft, label_smoothing=0.1),
        F.cross_entropy(a, soft, label_smoothing=0.1) + F.cross_entropy(b, soft, label_smoothing=0.1),
    )


def test_head_pre_logits_and_reset_classifier() -> None:
    model = _pico().eval()
    x = _clip()
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size) == (2, 2 * model.num_features)
        torch.testing.assert_close(pre[:, : model.num_features], feats[0].mean((2, 3, 4)))
        fc, fc_dual = model.get_classifier()
        assert model.get_classifier(name_only=True) == ("fc", "fc_dual")
        torch.testing.assert_close(model(x), combine_heads(fc(pre[:, :256]), fc_dual(pre[:, 256:])))
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre)
        with pytest.raises(ValueError, match="num_classes=0"):
            model.forward_heads(x)
        model.reset_classifier(7)
        assert model(x).shape == (2, 7) and model.fc_dual.out_features == 7
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="max")
    with pytest.raises(ValueError, match="needs num_classes=0"):
        model.reset_classifier(3, global_pool="")


def test_grad_checkpointing_same_output_and_grads() -> None:
    model = _pico().eval()
    x = _clip()
    ref = model(x)
    ref.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing()
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g)


def test_channels_last_3d() -> None:
    model = _pico().eval()
    x = _clip()
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last_3d)
        out = model(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_wrong_layout_is_refused() -> None:
    model = _pico().eval()
    with pytest.raises(ValueError, match=r"looks like \(B, T, C, H, W\); permute"):
        model(torch.randn(1, 8, 3, 32, 32))
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(1, 4, 8, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="at least 2"):
        model(torch.randn(1, 3, 1, 32, 32))
    r50 = SifaResNet(layers=(1, 1, 1, 1), base_planes=8, stem_width=8, num_classes=2)  # early stride 4
    with pytest.raises(ValueError, match="multiple of early_stride=4"):
        r50(torch.randn(1, 3, 10, 32, 32))
    with pytest.raises(ValueError, match="at least 8"):
        r50(torch.randn(1, 3, 4, 32, 32))


def test_features_only_and_forward_intermediates() -> None:
    x = _clip()
    feat_model = timm.create_model("sifa_resnet_pico", features_only=True).eval()
    model = _pico().eval()
    weights = {k.removeprefix("model."): v for k, v in feat_model.state_dict().items()}  # the getter's wrapped model
    assert not model.load_state_dict(weights, strict=False).unexpected_keys
    with torch.no_grad():
        maps = feat_model(x)
        inter = model.forward_intermediates(x, intermediates_only=True)
        final, inter2 = model.forward_intermediates(x, indices=[1, 4])
        feats = model.forward_features(x)
        early = model.forward_intermediates(x, indices=[0, 2], stop_early=True, intermediates_only=True)
    expected = [(2, 16, 8, 16, 16), (2, 32, 8, 16, 16), (2, 64, 8, 8, 8), (2, 128, 8, 4, 4), (2, 256, 8, 2, 2)]
    assert [tuple(m.shape) for m in maps] == expected
    assert feat_model.feature_info.channels() == [s[1] for s in expected]
    for a, b in zip(maps, inter, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(inter2[0], inter[1])
    torch.testing.assert_close(inter2[1], inter[4])
    torch.testing.assert_close(final[0], feats[0])
    torch.testing.assert_close(final[1], feats[1])
    assert [tuple(m.shape) for m in early] == [expected[0], expected[2]]
    with pytest.raises(ValueError, match="output_fmt='NCTHW'"):
        model.forward_intermediates(x, output_fmt="NCHW")


def test_group_matcher_puts_dual_blocks_with_layer4() -> None:
    from timm.models import group_parameters

    model = _pico()
    groups = group_parameters(model, model.group_matcher(coarse=False), reverse=False)
    for params in groups.values():
        prefixes = {n.split(".")[0] + "." + n.split(".")[1] for n in params if n.startswith("layer4")}
        if any(p.startswith("layer4_dual.1") for p in prefixes):
            assert prefixes == {"layer4.1", "layer4_dual.1"}
    assert model.no_weight_decay() == set()


# ---------------------------------------------------------------------------------------------------------------
# fidelity to the official code
# ---------------------------------------------------------------------------------------------------------------


def _official_cpu_offset_input(x: torch.Tensor) -> torch.Tensor:
    """The released block's offset input as its CPU run computed it (emulated deterministically).

    The official ``DEFLocalTransBottleneck`` builds ``prev`` with the in-place, self-overlapping copy
    ``out_tmp[:, :, 1:] = out_tmp[:, :, :-1]``. PyTorch's CPU copy kernel (the fixture's machine: AVX-512)
    processes each ``(b, c)`` slab front to back in 64-byte chunks (8 float64), loading a chunk before storing
    it, so ``prev[t]`` cascades from frame 0 whenever ``H·W >= 8`` (and is a mix for smaller maps) instead of
    being ``x[t-1]`` as the spec (and this package) define. The golden fixture carries that artifact.
    """
    b, c, t, h, w = x.shape
    hw, n, chunk = h * w, (t - 1) * h * w, 8
    flat = x.reshape(b * c, t * hw).clone()
    full = n - n % chunk
    for i in range(0, full, chunk):
        flat[:, hw + i : hw + i + chunk] = flat[:, i : i + chunk].clone()
    for i in range(full, n):
        flat[:, hw + i] = flat[:, i]
    prev = flat.reshape(x.shape)
    z = torch.sigmoid(x - prev) * x + x
    return z[:, :, 1:]


NetFixture = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def official_net(fixtures_dir: Path) -> NetFixture:
    """``(state, input clip, main-head logits, dual-head logits)`` of the official small SIFA-Net (float64)."""
    with safe_open(str(fixtures_dir / NET_FIXTURE), "pt") as f:
        assert json.loads(f.metadata()["arch"])["layers"] == list(SMALL_ARGS["layers"])
        state = {k[len("state.") :]: f.get_tensor(k) for k in f.keys() if k.startswith("state.")}  # noqa: SIM118
        return state, f.get_tensor("input"), f.get_tensor("output.0"), f.get_tensor("output.1")


def test_fidelity_official_small_net(official_net: NetFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    state, clip, out_main, out_dual = official_net
    model = SifaResNet(**SMALL_ARGS, sifa_backend="reference").double().eval()
    model.load_state_dict(checkpoint_filter_fn({k: v.double() for k, v in state.items()}, model))
    monkeypatch.setattr(sifa_hub.layers, "offset_input", _official_cpu_offset_input)
    with torch.no_grad():
        main, dual = model.forward_heads(clip.double())
        out = model(clip.double())
    torch.testing.assert_close(main, out_main, rtol=0, atol=1e-8)
    torch.testing.assert_close(dual, out_dual, rtol=0, atol=1e-8)
    torch.testing.assert_close(out.exp(), (out_main.softmax(-1) + out_dual.softmax(-1)) / 2, rtol=0, atol=1e-8)


def test_official_pth_through_timm_pretrained(
    official_net: NetFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An official-style ``.pth`` (``state_dict`` container, ``module.`` prefix) loads via timm, weights_only."""
    state, clip, out_main, out_dual = official_net
    path = tmp_path / "official.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    model = timm.create_model(
        "sifa_resnet50", pretrained=True, pretrained_cfg_overlay={"file": str(path), "num_classes": 10}, **SMALL_ARGS
    )
    model = model.double().eval()
    assert torch.equal(model.layer2[1].sifa.conv_offset.weight, state["layer2.1.conv_offset.weight"].double())
    monkeypatch.setattr(sifa_hub.layers, "offset_input", _official_cpu_offset_input)
    with torch.no_grad():
        main, dual = model.forward_heads(clip.double())
    torch.testing.assert_close(main, out_main, rtol=0, atol=1e-8)
    torch.testing.assert_close(dual, out_dual, rtol=0, atol=1e-8)


def test_own_safetensors_roundtrip_through_timm(tmp_path: Path) -> None:
    model = _pico(drop_path_rate=0.1)
    assert model(_clip(b=1)).shape == (1, 5)  # stochastic depth active in training mode
    for m in model.modules():  # non-trivial offsets and BN statistics, so the round trip is checked
        if isinstance(m, sifa_hub.layers.SIFA):
            m.conv_offset.weight.data.normal_(0, 0.05)
    path = tmp_path / "pico.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = timm.create_model(
        "sifa_resnet_pico", pretrained=True, pretrained_cfg_overlay={"file": str(path), "num_classes": 5}
    )
    x = _clip(b=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


@pytest.fixture(scope="module")
def official_shapes(fixtures_dir: Path) -> dict[str, dict[str, list[int]]]:
    return json.loads((fixtures_dir / "official_state_dict_shapes.json").read_text())


@pytest.mark.parametrize(("name", "official", "trainable"), [
    ("sifa_resnet50", "c2d_sifa_resnet50", 43_040_928),
    ("sifa_resnet101", "c2d_sifa_resnet101", 63_554_272),
])  # fmt: skip
def test_official_keys_and_param_counts(
    name: str, official: str, trainable: int, official_shapes: dict[str, dict[str, list[int]]]
) -> None:
    model = timm.create_model(name, num_classes=400, num_frames=16)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    shapes = official_shapes[official]
    state = {"module." + k: torch.zeros(s) for k, s in shapes.items()}
    converted = checkpoint_filter_fn(state, model)
    model.load_state_dict(converted, strict=True)
    dropped = {k for k in shapes if k.endswith("def_cor.weight")}
    assert dropped and len(converted) == len(shapes) - len(dropped)
    with pytest.raises(CheckpointMismatchError, match="unexpected keys"):
        checkpoint_filter_fn(state, timm.create_model(name.replace("sifa_", "c2d_"), num_classes=400))


def test_mismatch_is_reported(official_net: NetFixture) -> None:
    state, *_ = official_net
    model = SifaResNet(**SMALL_ARGS)
    broken = {k: v for k, v in state.items() if not k.startswith("layer3.1.bn2")}
    broken["layer9.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError) as err:
        checkpoint_filter_fn(broken, model)
    msg = str(err.value)
    assert "missing keys" in msg and "layer3.1.bn2.weight" in msg and "unexpected keys: layer9.weight" in msg
    narrow = SifaResNet(**{**SMALL_ARGS, "width_per_group": 32})
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        checkpoint_filter_fn(state, narrow)
    other_classes = SifaResNet(**{**SMALL_ARGS, "num_classes": 3})  # classifiers keep their init, the rest loads
    other_classes.load_state_dict(checkpoint_filter_fn(state, other_classes))
    torch.testing.assert_close(other_classes.layer4[1].conv3.weight, state["layer4.1.conv3.weight"])
    headless = SifaResNet(**{**SMALL_ARGS, "num_classes": 0})
    headless.load_state_dict(checkpoint_filter_fn(state, headless))


# ---------------------------------------------------------------------------------------------------------------
# inflation of 2D ImageNet ResNets
# ---------------------------------------------------------------------------------------------------------------


def _randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Random BN affine/statistics so that no residual branch is zero (timm/torchvision zero-init bn3)."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 0.6)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def resnet2d_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(1)
    r2d = _randomise_bn(timm.create_model("resnet50", pretrained=False))
    path = tmp_path_factory.mktemp("r2d") / "resnet50.safetensors"
    save_file(r2d.state_dict(), str(path))
    return r2d, path


def _stride1_layer4(r2d: torch.nn.Module) -> torch.nn.Module:
    layer4 = copy.deepcopy(r2d.layer4)
    layer4[0].conv2.stride = (1, 1)
    layer4[0].downsample[0].stride = (1, 1)
    return layer4


def _zero_gc(model: SifaResNet) -> None:
    for name, p in model.named_parameters():
        if ".fc2." in name:
            p.data.zero_()


def test_inflate_timm_resnet50_c2d_twin_equals_2d(resnet2d_file: tuple[torch.nn.Module, Path]) -> None:
    """C2D twin + inflated 2D weights + GC fc2 zeroed: main map t == 2D map of frame E·t + E//2 (any clip);
    dual map == 2D layer4 at stride 1 on layer3 max-pooled over frame pairs (checked on a repeated frame)."""
    r2d, path = resnet2d_file
    model = timm.create_model(
        "c2d_resnet50",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path), "num_classes": 1000},
        num_frames=8,
        num_classes=1000,
    ).eval()
    torch.testing.assert_close(model.fc_dual.weight, r2d.fc.weight)  # 2D classifier initialises both heads
    _zero_gc(model)
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        main, _ = model.forward_features(clip)
        for t in range(2):
            torch.testing.assert_close(
                main[:, :, t], r2d.forward_features(clip[:, :, 4 * t + 2]), rtol=1e-4, atol=1e-4
            )
        frame = clip[:, :, 2]
        _, dual = model.forward_features(frame[:, :, None].expand(-1, -1, 8, -1, -1))
        x = r2d.layer3(r2d.layer2(r2d.layer1(r2d.maxpool(r2d.act1(r2d.bn1(r2d.conv1(frame)))))))
        torch.testing.assert_close(dual[:, :, 0], _stride1_layer4(r2d)(x), rtol=1e-4, atol=1e-4)


def test_inflate_timm_resnet50_sifa_model(resnet2d_file: tuple[torch.nn.Module, Path]) -> None:
    """SIFA model from 2D weights: offsets start at zero, layer1 (no SIFA/GC) equals 2D per frame, but the
    SIFA add is not zero at init (zero offsets = local attention over the next frame), so deeper maps differ."""
    r2d, path = resnet2d_file
    model = timm.create_model(
        "sifa_resnet50", pretrained=True, pretrained_cfg_overlay={"file": str(path)}, num_frames=8
    ).eval()
    assert model.fc.out_features == 400  # 1000-class 2D classifier dropped: heads keep their init
    assert all(not m.conv_offset.weight.any() for m in model.modules() if isinstance(m, sifa_hub.layers.SIFA))
    _zero_gc(model)
    c2d = timm.create_model("c2d_resnet50", num_frames=8).eval()
    c2d.load_state_dict({k: v for k, v in model.state_dict().items() if "sifa." not in k})
    clip = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        layer1 = model.forward_intermediates(clip, indices=[1], intermediates_only=True)[0]
        x2d = r2d.layer1(r2d.maxpool(r2d.act1(r2d.bn1(r2d.conv1(clip[:, :, 6])))))
        torch.testing.assert_close(layer1[:, :, 1], x2d, rtol=1e-4, atol=1e-4)
        assert (model.forward_features(clip)[0] - c2d.forward_features(clip)[0]).abs().max() > 1e-3


def test_inflate_torchvision_keys_and_in_chans() -> None:
    tv = _randomise_bn(torchvision.models.resnet50(weights=None))
    model = timm.create_model(
        "c2d_resnet50",
        pretrained=True,
        pretrained_cfg_overlay={"state_dict": tv.state_dict()},
        num_frames=8,
        early_stride=2,
    ).eval()
    stem = model.conv1.weight
    assert stem.shape == (64, 3, 2, 7, 7) and not stem[:, :, 0].any()
    torch.testing.assert_close(stem[:, :, 1], tv.conv1.weight)
    _zero_gc(model)
    frame = torch.randn(1, 3, 64, 64)
    trunk = torch.nn.Sequential(*list(tv.children())[:-2])
    with torch.no_grad():
        main, _ = model.forward_features(frame[:, :, None].expand(-1, -1, 8, -1, -1))
        torch.testing.assert_close(main[:, :, 3], trunk(frame), rtol=1e-4, atol=1e-4)
    gray = timm.create_model(
        "c2d_resnet50", pretrained=True, pretrained_cfg_overlay={"state_dict": tv.state_dict()}, in_chans=1
    )
    torch.testing.assert_close(gray.conv1.weight[:, 0, 2], tv.conv1.weight.sum(1))


def test_old_class_names_are_deprecated_aliases() -> None:
    import sifa_hub.models.sifa_resnet as sifa_resnet

    with pytest.warns(DeprecationWarning, match="use SifaResNet"):
        assert sifa_resnet.SIFAResNet is SifaResNet
    with pytest.warns(DeprecationWarning, match="use SifaBottleneck"):
        assert sifa_resnet.SIFABottleneck is sifa_resnet.SifaBottleneck
    with pytest.raises(AttributeError, match="no attribute 'SIFANet'"):
        _ = sifa_resnet.SIFANet
