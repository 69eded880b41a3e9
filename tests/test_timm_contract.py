"""timm's generic model checks (``tests/test_models.py`` of pytorch-image-models) ported to video, issue 13.

Every registered ``sifa_*`` / ``c2d_*`` variant: the pico models run at full depth on 8-frame 32 px clips; the big
ones are built on the meta device and checked for cfg consistency.
"""

from __future__ import annotations

import pytest
import timm
import torch

import sifa_hub  # noqa: F401  (registers the models)

ALL = sorted(timm.list_models(["sifa_*", "c2d_*"]))
PICOS = [n for n in ALL if n.endswith("_pico")]
BIG = [n for n in ALL if not n.endswith("_pico")]


def _clip(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))


def _model(name: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=5, **kwargs)


def test_every_family_is_covered() -> None:
    assert len(PICOS) == 4 and len(BIG) >= 10


@pytest.mark.parametrize("name", ALL)
def test_default_cfg_consistency(name: str) -> None:
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    assert cfg["input_size"][0] == model.in_chans == 3
    assert len(cfg["mean"]) == len(cfg["std"]) == 3 and all(s > 0 for s in cfg["std"])
    modules = dict(model.named_modules())
    assert cfg["first_conv"] in modules and modules[cfg["first_conv"]].in_channels == 3
    classifiers = (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]
    for head in classifiers:
        assert modules[head].out_features == cfg["num_classes"] == model.num_classes
    assert model.feature_info[-1]["num_chs"] == model.num_features


@pytest.mark.parametrize("name", PICOS)
def test_forward_backward_every_param_gets_a_grad(name: str) -> None:
    model = _model(name).train()
    out = model(_clip())
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("name", PICOS)
def test_features_head_and_unpooled(name: str) -> None:
    model = _model(name).eval()
    x = _clip()
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size)
        assert model.forward_head(feats).shape == (2, 5)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.head_hidden_size)
        model.reset_classifier(0, "")
        unpooled = model(x)
    main = feats[0] if isinstance(feats, tuple) else feats  # SIFA-Net: (main, dual)
    assert unpooled.dim() == 5 and unpooled.shape == main.shape
    assert unpooled.shape[-2:] == model.pretrained_cfg["pool_size"]
    unpooled_model = timm.create_model(name, num_classes=0, global_pool="")
    assert unpooled_model(x).dim() == 5


@pytest.mark.parametrize("name", PICOS)
def test_forward_intermediates_contract(name: str) -> None:
    model = _model(name).eval()
    x = _clip()
    n = len(model.feature_info)
    with torch.no_grad():
        every = model.forward_intermediates(x, intermediates_only=True)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        first = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        final, picked = model.forward_intermediates(x, indices=[n - 1], norm=True)
        feats = model.forward_features(x)
    assert len(every) == n and all(m.dim() == 5 for m in every)  # (B, C, T', H, W) in both families
    assert [m.shape[1] for m in every] == [f["num_chs"] for f in model.feature_info]
    for a, b in zip(last_two, every[-2:], strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(first[0], every[0])
    main = feats[0] if isinstance(feats, tuple) else feats
    torch.testing.assert_close(final[0] if isinstance(final, tuple) else final, main)
    assert len(picked) == 1
    with pytest.raises(ValueError, match=r"output_fmt='NCHW' is not available for a video model; pass 'NCTHW'"):
        model.forward_intermediates(x, output_fmt="NCHW")


@pytest.mark.parametrize("name", PICOS)
def test_prune_and_features_only_give_video_maps(name: str) -> None:
    x = _clip()
    ref = _model(name).eval()
    with torch.no_grad():
        every = ref.forward_intermediates(x, intermediates_only=True)
    pruned = _model(name).eval()
    kept = pruned.prune_intermediate_layers([1])
    assert kept == [1] and pruned.num_classes == 0
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in ref.parameters())
    with torch.no_grad():
        torch.testing.assert_close(pruned.forward_intermediates(x, indices=[1], intermediates_only=True)[0], every[1])
    indices = (0, 1)
    features = timm.create_model(name, features_only=True, out_indices=indices).eval()
    wanted = features.state_dict().keys()
    features.load_state_dict({"model." + k: v for k, v in ref.state_dict().items() if "model." + k in wanted})
    with torch.no_grad():
        maps = features(x)
    assert len(maps) == 2 and all(m.dim() == 5 for m in maps)
    assert features.feature_info.channels() == [every[i].shape[1] for i in indices]
    for i, m in zip(indices, maps, strict=True):
        torch.testing.assert_close(m, every[i])


@pytest.mark.parametrize("name", PICOS)
def test_grad_checkpointing_matches(name: str) -> None:
    model = _model(name).eval()
    x = _clip()
    ref = model(x)
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", PICOS)
def test_init_weights_is_public_and_deterministic(name: str) -> None:
    a, b = _model(name), _model(name)
    torch.manual_seed(1)
    a.init_weights()
    torch.manual_seed(1)
    b.init_weights()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    x = _clip()
    with torch.no_grad():  # the temporal paths start at zero: a SIFA model starts as its C2D twin would, or close
        assert torch.isfinite(a.eval()(x)).all()


def test_sifa_net_head_logits_hook() -> None:
    model = _model("sifa_resnet_pico").eval()
    x = _clip()
    with torch.no_grad():
        a, b = model.forward_head_logits(model.forward_features(x))
        torch.testing.assert_close((a, b), model.forward_heads(x))
        torch.testing.assert_close(model(x), sifa_hub.models.sifa_resnet.combine_heads(a, b))
