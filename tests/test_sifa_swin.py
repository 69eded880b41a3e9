"""SIFA-Transformer (Swin family): timm contract, fidelity to the official code, checkpoint conversion."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.optim import create_optimizer_v2

import sifa_hub  # noqa: F401  (registers the models)
from sifa_hub.models import sifa_swin
from sifa_hub.models._helpers import CheckpointMismatchError
from sifa_hub.models.sifa_swin import (
    SifaSwinBlock,
    SifaSwinTransformer,
    checkpoint_filter_fn,
    temporal_conv_residual,
)

TRANSFORMER_FIXTURE = "official_sifa_transformer_small.safetensors"
SHAPES_FIXTURE = "official_state_dict_shapes.json"

VARIANTS = [
    f"{p}_{s}_patch4_window7_224" for p in ("sifa_swin", "c2d_swin") for s in ("tiny", "small", "base", "large")
]
VARIANTS += ["sifa_swin_pico", "c2d_swin_pico"]
# Trainable parameters of the official models (num_classes 400, 16 frames), from the fixtures' README, and the
# values of the never-used official tensors (unused temporal conv / SIFA norm of each block) the converter drops.
OFFICIAL_PARAMS = {"small": 60_954_586, "base": 108_134_216, "large": 242_785_828}
NEVER_USED_VALUES = {"small": 7_665_984, "base": 13_625_088, "large": 30_648_960}


def _pico(**kwargs) -> SifaSwinTransformer:
    torch.manual_seed(0)
    return timm.create_model("sifa_swin_pico", num_classes=5, **kwargs)


def _clip(b: int = 2, t: int = 8, size: int = 32) -> torch.Tensor:
    return torch.randn(b, 3, t, size, size, generator=torch.Generator().manual_seed(1))


def _fixture_model(fixtures_dir: Path) -> SifaSwinTransformer:
    """The configuration of the official golden output (metadata ``arch`` of the fixture)."""
    arch = json.loads(safe_open(str(fixtures_dir / TRANSFORMER_FIXTURE), "pt").metadata()["arch"])
    assert arch["offsets"] == "fixed zero" and arch["K"] == 3 and arch["clip_len"] == 16 // arch["early_stride"]
    return SifaSwinTransformer(
        img_size=arch["img_size"],
        patch_size=arch["patch_size"],
        early_stride=arch["early_stride"],
        num_frames=arch["clip_len"] * arch["early_stride"],  # official clip_len = T' (tubelets), not frames
        num_classes=arch["num_classes"],
        embed_dim=arch["embed_dim"],
        depths=arch["depths"],
        num_heads=arch["num_heads"],
        window_size=arch["window_size"],
        mlp_ratio=arch["mlp_ratio"],
        qkv_bias=arch["qkv_bias"],
        sifa_kernel_size=arch["K"],
    )


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_builds_through_timm(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert isinstance(model, SifaSwinTransformer)
    assert model.use_sifa == name.startswith("sifa_")
    assert (model.num_frames, model.early_stride) == ((8, 2) if "pico" in name else (16, 4))
    cfg = model.pretrained_cfg
    assert cfg["paper_ids"] == "arXiv:2206.06931"
    # default tag: an ImageNet initialisation from timm's repo (models/_pretrained.py); picos have no weights
    tag = "ms_in22k" if "large" in name else "ms_in1k"
    assert cfg.get("hf_hub_id") == (None if "pico" in name else f"timm/{name.split('_', 1)[1]}.{tag}")
    assert cfg["first_conv"] == "patch_embed.proj" and cfg["classifier"] == "head.fc"
    assert cfg["input_size"] == ((3, 32, 32) if "pico" in name else (3, 224, 224))
    has_temporal = any(".sifa_norm." in k or ".conv_t." in k for k in model.state_dict())
    assert has_temporal == name.startswith("sifa_")


@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_official_parameter_counts_and_key_by_key_conversion(size, fixtures_dir):
    shapes = json.loads((fixtures_dir / SHAPES_FIXTURE).read_text())[f"c2d_sifa_swin_vit_{size[0]}_p4_w7"]
    with torch.device("meta"):
        model = timm.create_model(f"sifa_swin_{size}_patch4_window7_224", num_classes=400)
        official = {k: torch.empty(s) for k, s in shapes.items()}
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[size] - NEVER_USED_VALUES[size]
    assert sum(p.numel() for p in model.parameters()) == sifa_swin.PARAMS[size]
    assert sifa_swin.OFFICIAL_PARAMS[size] == OFFICIAL_PARAMS[size]
    converted = checkpoint_filter_fn(official, model)
    constants = [k for k in shapes if k.endswith(("relative_position_index", "attn_mask", "def_cor.weight"))]
    unused = [k for k in shapes if k.endswith((".conv.weight", ".tda_norm.weight", ".tda_norm.bias"))]
    renamed = {k: k.replace(".tda_norm.", ".sifa_norm.").replace(".conv.", ".conv_t.") for k in unused}
    unused = [k for k in unused if renamed[k] not in converted]
    assert len(unused) == sifa_swin.NEVER_USED_OFFICIAL_TENSORS[size] == 35
    assert sum(math.prod(shapes[k]) for k in unused) == NEVER_USED_VALUES[size]
    # one model tensor per official learnable tensor that the released forward uses
    assert len(converted) == len(shapes) - len(constants) - len(unused)
    assert model.load_state_dict(converted, strict=True, assign=True)
    assert converted["layers.1.downsample.reduction.weight"].shape == tuple(
        shapes["layers.0.downsample.reduction.weight"]
    )
    assert converted["layers.0.blocks.1.conv_t.weight"].shape[2:] == (3, 1, 1)
    assert "head.fc.weight" in converted and "layers.0.blocks.0.sifa_norm.weight" in converted


def test_pico_forward_backward_and_temporal_modes():
    model = _pico()
    modes = [blk.temporal_mode for stage in model.layers for blk in stage.blocks]
    assert modes == ["sifa", "conv", "sifa", "conv"]
    x = _clip().requires_grad_()
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for stage in model.layers:
        for blk in stage.blocks:
            used, unused = (blk.sifa_norm, blk.conv_t) if blk.temporal_mode == "sifa" else (blk.conv_t, blk.sifa_norm)
            assert used.weight.grad is not None
            assert unused is None  # the released blocks also held this one, never used: not built here
    assert all(p.grad is not None for p in model.parameters())  # DDP needs no find_unused_parameters


def test_temporal_path_is_active_once_trained():
    model = _pico().eval()
    x = _clip()
    before = model(x)
    with torch.no_grad():
        for stage in model.layers:
            for blk in stage.blocks:
                if blk.sifa_norm is not None:
                    blk.sifa_norm.weight.fill_(1.0)
                if blk.conv_t is not None:
                    blk.conv_t.weight.normal_(0, 0.1)
    assert not torch.allclose(model(x), before, atol=1e-4)


def _conv3d_block_forward(self: SifaSwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Reference: the block with its temporal path on channels-first ``(B, C, T', H, W)`` copies of the tokens,
    through ``SIFA.forward`` and the ``nn.Conv3d`` module (the layout of the official code)."""
    B, T, H, W, C = x.shape
    x = x.reshape(B * T, H, W, C)
    x = x + self.drop_path1(self._attn(self.norm1(x)))
    x_cf = x.view(B, T, H, W, C).permute(0, 4, 1, 2, 3)
    if self.temporal_mode == "sifa":
        y = self.sifa(x_cf.contiguous())
        x = x + self.sifa_norm(y.permute(0, 2, 3, 4, 1).reshape(B * T, H, W, C))
    elif self.temporal_mode == "conv":
        x = x + self.conv_t(x_cf.contiguous()).permute(0, 2, 3, 4, 1).reshape(B * T, H, W, C)
    x = x.reshape(B * T, H * W, C)
    x = x + self.drop_path2(self.mlp(self.norm2(x)))
    return x.reshape(B, T, H, W, C)


def _randomise_temporal_path(model: SifaSwinTransformer) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SifaSwinBlock) and m.sifa_norm is not None:
                m.sifa_norm.weight.normal_(1.0, 0.2)
                m.sifa_norm.bias.normal_(0.0, 0.1)
            if isinstance(m, SifaSwinBlock) and m.conv_t is not None:
                m.conv_t.weight.normal_(0.0, 0.1)


@pytest.mark.parametrize("batch, frames", [(2, 8), (1, 4), (2, 2)])  # T' = 4, 2, 1
def test_temporal_conv_gemms_equal_conv3d(batch, frames):
    """``temporal_conv_residual`` (GEMMs on channels-last tokens) is ``x + conv_t(x)``, values and gradients."""
    t = frames // 2
    gen = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv3d(6, 6, (3, 1, 1), padding=(1, 0, 0), bias=False).double()
    torch.nn.init.normal_(conv.weight, generator=gen)
    x = torch.randn(batch, t, 3, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    got = temporal_conv_residual(x, conv.weight)
    want = x + conv(x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
    assert got.shape == x.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grad = torch.randn(want.shape, dtype=torch.float64, generator=gen)
    got_grads = torch.autograd.grad(got, (x, conv.weight), grad)
    want_grads = torch.autograd.grad(want, (x, conv.weight), grad)
    torch.testing.assert_close(got_grads, want_grads, rtol=1e-12, atol=1e-12)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # GEMMs in bf16, summed into x's float32 like x + conv_t(x)
        got = temporal_conv_residual(x.float(), conv.weight.float())
        want = x.float() + conv.float()(x.float().permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "name, kwargs, frames",
    [
        ("sifa_swin_pico", {}, 8),  # T' = 4
        ("sifa_swin_pico", {}, 4),  # T' = 2
        ("sifa_swin_pico", {}, 2),  # T' = 1: the temporal conv only uses its centre tap, SIFA gives zero
        ("sifa_swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 4, "drop_path_rate": 0.0}, 8),
    ],
)
def test_channels_last_temporal_path_equals_the_channels_first_path(name, kwargs, frames, monkeypatch):
    """The block's channels-last temporal path (SIFA.forward_channels_last, GEMM temporal conv) gives the outputs
    and gradients of the channels-first SIFA / nn.Conv3d path, in float64."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3, **kwargs).double()
    _randomise_temporal_path(model)
    size = model.pretrained_cfg["input_size"][-1] if not kwargs else kwargs["img_size"]
    x = torch.randn(2, 3, frames, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def run() -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        clip = x.clone().requires_grad_()
        out = model(clip)
        params = [p for n, p in model.named_parameters() if ".sifa_norm." in n or ".conv_t." in n]
        grads = torch.autograd.grad(out.square().sum(), [clip, *params])
        return out, grads

    out, grads = run()
    monkeypatch.setattr(SifaSwinBlock, "forward", _conv3d_block_forward)
    want, want_grads = run()
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads, want_grads, rtol=1e-10, atol=1e-12)


def test_blocks_see_contiguous_channels_last_tokens():
    """The tubelet embedding hands the stages contiguous (B, T', H, W, C) tokens and every block keeps them so:
    a channels-first memory order would make each LayerNorm, Linear and temporal GEMM copy its input."""
    model = _pico().eval()
    seen = []
    for blk in model.modules():
        if isinstance(blk, SifaSwinBlock):
            blk.register_forward_hook(lambda m, args, out: seen.append((args[0].is_contiguous(), out.is_contiguous())))
    with torch.no_grad():
        model(_clip(b=1))  # batch 1: the block's reshape of a permuted view would not copy it either
    assert seen == [(True, True)] * 4


def test_head_api_reset_classifier_and_pre_logits():
    model = _pico().eval()
    x = _clip()
    feats = model.forward_features(x)
    assert feats.shape == (2, 64, 4, 8, 8)  # (B, C, T', H', W')
    logits = model.forward_head(feats)
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, model.num_features)
    torch.testing.assert_close(model.get_classifier()(pooled), logits)
    model.reset_classifier(0)
    assert model(x).shape == (2, 64)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    model.reset_classifier(0, "")
    torch.testing.assert_close(model(x), feats)  # no pooling: (B, C, T', H', W')

    backbone = timm.create_model("sifa_swin_pico", num_classes=0)
    backbone.load_state_dict(checkpoint_filter_fn(_pico().state_dict(), backbone))  # head dropped
    assert backbone(x).shape == (2, 64)


def test_grad_checkpointing_gives_the_same_output_and_grads():
    model = _pico().eval()
    x = _clip()
    ref = model(x)
    ref.sum().backward()
    ref_grad = model.patch_embed.proj.weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(model.patch_embed.proj.weight.grad, ref_grad)


def test_wrong_inputs_are_refused_with_clear_errors():
    model = _pico()
    clip = _clip()
    with pytest.raises(ValueError, match=r"looks like \(B, T, C, H, W\)"):
        model(clip.transpose(1, 2))
    with pytest.raises(ValueError, match="multiple of early_stride=2"):
        model(torch.randn(1, 3, 7, 32, 32))
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(1, 3, 8, 48, 48))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(TypeError):
        model([clip])
    with pytest.raises(ValueError, match="patch_size"):
        SifaSwinTransformer(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="early_stride"):
        SifaSwinTransformer(num_frames=6, early_stride=4)


def test_intermediates_features_only_and_optimizer_hooks():
    model = _pico().eval()
    x = _clip()
    final, inter = model.forward_intermediates(x)
    assert [f.shape for f in inter] == [(2, 32, 4, 16, 16), (2, 64, 4, 8, 8)]
    torch.testing.assert_close(final, model.forward_features(x))
    last = model.forward_intermediates(x, indices=1, intermediates_only=True)
    assert [f.shape for f in last] == [(2, 64, 4, 8, 8)]
    assert last[0].transpose(1, 2).flatten(0, 1).shape == (8, 64, 8, 8)  # per-tubelet image maps, if wanted
    for fmt in ("NHWC", "NCHW"):
        with pytest.raises(ValueError, match="output_fmt='NCTHW'"):
            model.forward_intermediates(x, output_fmt=fmt)

    features = timm.create_model("sifa_swin_pico", features_only=True, out_indices=(0, 1))
    assert features.feature_info.channels() == [32, 64] and features.feature_info.reduction() == [2, 4]
    assert [f.shape for f in features(x)] == [(2, 32, 4, 16, 16), (2, 64, 4, 8, 8)]  # video maps, as SIFA-Net

    nwd = model.no_weight_decay()
    assert nwd and all("relative_position_bias_table" in n for n in nwd)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    assert len(opt.param_groups) > 2  # group_matcher drives layer-wise decay


def test_learned_offsets_variant_starts_equal_to_reference_mode():
    ref = _pico().eval()
    learn = _pico(learn_offsets=True).eval()
    offset_keys = [k for k in learn.state_dict() if "conv_offset" in k]
    assert len(offset_keys) == 2  # only the unshifted (SIFA) blocks predict offsets
    learn.load_state_dict(checkpoint_filter_fn(ref.state_dict(), learn))  # offset convs start at zero
    x = _clip()
    torch.testing.assert_close(learn(x), ref(x))
    with pytest.raises(CheckpointMismatchError, match="unexpected keys"):
        checkpoint_filter_fn(learn.state_dict(), ref)  # learned offsets are never dropped silently


def test_official_golden_output_float64(fixtures_dir):
    data = load_file(str(fixtures_dir / TRANSFORMER_FIXTURE))
    state = {k[len("state.") :]: v.double() for k, v in data.items() if k.startswith("state.")}
    model = _fixture_model(fixtures_dir).double().eval()
    model.load_state_dict(checkpoint_filter_fn(state, model), strict=True)
    with torch.no_grad():
        out = model(data["input"].double())
    torch.testing.assert_close(out, data["output.0"], rtol=0, atol=1e-8)


def test_official_pth_checkpoint_through_timm_pretrained(tmp_path, fixtures_dir):
    data = load_file(str(fixtures_dir / TRANSFORMER_FIXTURE))
    state = {"module." + k[len("state.") :]: v for k, v in data.items() if k.startswith("state.")}
    path = tmp_path / "official.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = _fixture_model(fixtures_dir)
    kwargs = {k: getattr(model, k) for k in ("num_frames", "early_stride", "img_size")}
    timm_model = timm.create_model(
        "sifa_swin_tiny_patch4_window7_224",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path), "num_classes": 10},
        num_classes=10,
        embed_dim=32,
        depths=(2, 2, 2, 2),
        num_heads=(1, 2, 4, 8),
        window_size=4,
        **kwargs,
    )
    timm_model = timm_model.double().eval()
    with torch.no_grad():
        out = timm_model(data["input"].double())
    torch.testing.assert_close(out, data["output.0"], rtol=0, atol=1e-8)


TINY_64 = {"img_size": 64, "window_size": 2, "num_classes": 7}  # Swin-T at 64 px: maps 16, 8, 4, 2


@pytest.fixture(scope="module")
def inflated_tiny(tmp_path_factory):
    """A random 2D timm Swin-T, its safetensors file, and ``sifa_swin_tiny`` inflated from that file."""
    torch.manual_seed(0)
    swin2d = timm.create_model("swin_tiny_patch4_window7_224", **TINY_64).eval()
    with torch.no_grad():  # randomise the norms too, so that the check covers them
        for name, p in swin2d.named_parameters():
            if "norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    path = tmp_path_factory.mktemp("inflate") / "swin_tiny_2d.safetensors"
    save_file({k: v.contiguous() for k, v in swin2d.state_dict().items()}, str(path))
    model = timm.create_model(
        "sifa_swin_tiny_patch4_window7_224",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path), "num_classes": 7},
        patch_norm=True,  # keep the 2D patch-embedding norm so that features match exactly
        **TINY_64,
    )
    return swin2d, path, model


def test_tiny_forward_backward_small_resolution(inflated_tiny):
    model = inflated_tiny[2].train()
    out = model(_clip(b=1, t=8, size=64))
    assert out.shape == (1, 7)
    out.sum().backward()
    assert model.patch_embed.proj.weight.grad is not None
    assert model.layers[0].blocks[1].conv_t.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_inflated_imagenet_swin_reproduces_2d_features_on_a_still_clip(inflated_tiny, caplog):
    swin2d, path, model = inflated_tiny
    model.eval()
    frame = torch.randn(2, 3, 64, 64)
    still = frame[:, :, None].expand(-1, -1, 8, -1, -1)  # T'=2 identical tubelets
    with torch.no_grad():
        feats = model.forward_features(still)  # (B, C, T', H', W')
        ref = swin2d.forward_features(frame).permute(0, 3, 1, 2)  # (B, C, H', W')
        assert feats.shape == (2, 768, 2, 2, 2)
        for t in range(feats.shape[2]):
            torch.testing.assert_close(feats[:, :, t], ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model(still), swin2d(frame), rtol=1e-4, atol=1e-4)

    # As released (no patch norm) the 2D norm is dropped with a warning, a classifier that does not fit is
    # re-initialised with a warning, the patch kernel sits at tubelet index E // 2 and the temporal path is zero.
    with torch.device("meta"):
        released = timm.create_model("sifa_swin_tiny_patch4_window7_224", img_size=64, window_size=2, num_classes=4)
    with pytest.warns(UserWarning, match="patch_norm=False"), caplog.at_level(logging.WARNING):
        converted = checkpoint_filter_fn(load_file(str(path)), released, source=str(path))
    assert f"{path}: the checkpoint's classifier" in caplog.text and "(7, 768)" in caplog.text
    assert "(4, 768)" in caplog.text
    assert converted.keys() == released.state_dict().keys()
    kernel = converted["patch_embed.proj.weight"]
    assert kernel.shape == (96, 3, 4, 4, 4)
    torch.testing.assert_close(kernel[:, :, 2], swin2d.patch_embed.proj.weight)
    assert kernel[:, :, [0, 1, 3]].abs().sum() == 0
    assert all(v.is_meta for k, v in converted.items() if k.startswith("head.fc."))  # the model's own head


def test_mismatched_checkpoints_raise_a_readable_report():
    model = _pico()
    state = model.state_dict()
    extra = dict(state, **{"layers.0.blocks.0.bogus.weight": torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match="unexpected keys: layers.0.blocks.0.bogus.weight"):
        checkpoint_filter_fn(extra, model)
    missing = {k: v for k, v in state.items() if not k.startswith("layers.1.blocks.0.mlp.")}
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        checkpoint_filter_fn(missing, model)
    c2d = timm.create_model("c2d_swin_pico", num_classes=5)
    with pytest.raises(CheckpointMismatchError, match="sifa_norm"):
        checkpoint_filter_fn(state, c2d)  # a SIFA checkpoint does not fit the C2D twin
    assert checkpoint_filter_fn({"model": state}, model).keys() == state.keys()
