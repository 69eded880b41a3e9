"""Weight tags: ImageNet initialisations served by the (offline) Hub, inflated to video; the shipped pico model.

The local Hub server serves randomly initialised timm 2D models under the real repo ids (``timm/resnet50.a1_in1k``,
``timm/swin_tiny_patch4_window7_224.ms_in1k``). A static clip (one frame repeated) through the inflated C2D twin
must reproduce the 2D network on that frame wherever the architecture is the 2D network's. Parts that differ by
design, and how the official recipe initialises them (checked below):

* SIFA-Net: the global-context blocks (even blocks of layers 2-4: ``fc1``/``fc2``, default ``nn.Linear`` init, so
  they add a per-channel constant), the dual branch ``layer4_dual`` (a copy of ``layer4`` where shapes agree) and
  its head ``fc_dual`` (a copy of ``fc``), SIFA offset convs (zero);
* SIFA-Transformer: the temporal path (``conv_t``, ``sifa_norm``, offset convs), zero, so it adds nothing; the
  released design has no patch-embedding LayerNorm (``patch_norm=False``: the 2D one is dropped with a warning), so
  the comparison builds the model with ``patch_norm=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from hub_server import HubServer
from huggingface_hub import HfApi
from safetensors.torch import save_file

import sifa_hub  # noqa: F401  (registers the variants)
from sifa_hub.models._pretrained import IMAGENET_TAGS

ATOL = 1e-5


def serve_2d(hub: HubServer, tmp_path: Path, arch: str, tag: str) -> torch.nn.Module:
    """Put a randomly initialised timm ``arch`` under ``timm/<arch>.<tag>``; return the 2D model (eval)."""
    hub.orgs.setdefault("timm", set()).add(hub.user)
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False).eval()
    folder = tmp_path / f"{arch}.{tag}"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architecture": arch, "num_classes": model.num_classes}))
    api = HfApi()
    api.create_repo(f"timm/{arch}.{tag}")
    api.upload_folder(repo_id=f"timm/{arch}.{tag}", folder_path=folder)
    return model


def _downloads(hub: HubServer, repo: str) -> int:
    return sum(1 for method, path, status in hub.log if method == "GET" and path.startswith(f"/{repo}/resolve/"))


def test_every_variant_lists_its_tags() -> None:
    tagged = set(timm.list_models("sifa*", pretrained=True)) | set(timm.list_models("c2d*", pretrained=True))
    for arch, tags in IMAGENET_TAGS.items():
        family = "resnet" if arch.startswith("resnet") else "swin"
        suffix = arch[len("resnet") :] if family == "resnet" else arch[len("swin") :]
        for prefix in ("sifa", "c2d"):
            for tag in tags:
                name = f"{prefix}_{family}{suffix}.{tag}"
                assert name in tagged, name
                cfg = timm.get_pretrained_cfg(name)
                assert cfg.hf_hub_id == f"timm/{arch}.{tag}"
                assert "initialisation" in cfg.notes[0] and "no video accuracy" in cfg.notes[0]
    assert "sifa_resnet_pico.motion4" in tagged


def test_resnet_tag_downloads_once_inflates_and_matches_2d(hub_server: HubServer, tmp_path: Path) -> None:
    net2d = serve_2d(hub_server, tmp_path, "resnet50", "a1_in1k")
    repo = "timm/resnet50.a1_in1k"
    model = timm.create_model("c2d_resnet50.a1_in1k", pretrained=True, num_frames=8, num_classes=1000).eval()
    first = _downloads(hub_server, repo)
    assert first >= 1
    sifa = timm.create_model("sifa_resnet50.a1_in1k", pretrained=True, num_frames=8, num_classes=1000).eval()
    assert _downloads(hub_server, repo) == first  # the second model came from the cache
    assert model.num_classes == sifa.num_classes == 1000  # the ImageNet classifier fits, so it is kept

    own2d = net2d.state_dict()
    for name, net in (("c2d", model), ("sifa", sifa)):
        state = net.state_dict()
        torch.testing.assert_close(state["fc_dual.weight"], own2d["fc.weight"], msg=f"{name}: fc_dual = fc")
        dual = [k for k in state if k.startswith("layer4_dual.")]
        shared = [k for k in dual if ("layer4." + k[len("layer4_dual.") :]) in own2d]
        shared = [k for k in shared if own2d["layer4." + k[len("layer4_dual.") :]].numel() == state[k].numel()]
        assert shared, "layer4_dual shares no tensor with layer4"
        for k in shared:
            src = own2d["layer4." + k[len("layer4_dual.") :]]
            torch.testing.assert_close(state[k].reshape(src.shape), src, msg=f"{name}: {k} = layer4 copy")
        for k, v in state.items():
            if k.endswith("sifa.conv_offset.weight"):
                assert not v.any(), f"{name}: {k} must start at zero"
        gc = [k for k in state if k.endswith(".fc1.weight")]
        assert gc and all(state[k].std() > 0 for k in gc), "global-context blocks keep nn.Linear's init"

    frame = torch.randn(1, 3, 64, 64)
    clip = frame[:, :, None].expand(1, 3, 8, 64, 64).contiguous()  # (B, C, T, H, W), one frame repeated
    with torch.no_grad():
        ref = net2d.layer1(net2d.maxpool(net2d.act1(net2d.bn1(net2d.conv1(frame)))))
        got = model.forward_intermediates(clip, indices=[1], intermediates_only=True)[0]  # after layer1
        for t in range(got.shape[2]):
            torch.testing.assert_close(got[:, :, t], ref, rtol=0, atol=ATOL)
        # the global-context blocks add fc2(...): with fc2 zeroed the whole C2D trunk is the 2D network
        for module in model.modules():
            if hasattr(module, "fc2") and isinstance(module.fc2, torch.nn.Linear):
                torch.nn.init.zeros_(module.fc2.weight)
                torch.nn.init.zeros_(module.fc2.bias)
        ref4 = net2d.forward_features(frame)
        got4 = model.forward_intermediates(clip, indices=[4], intermediates_only=True)[0]
        for t in range(got4.shape[2]):
            torch.testing.assert_close(got4[:, :, t], ref4, rtol=0, atol=ATOL)
        # the main head is the 2D classifier on those features (the dual head sees the dual branch: by design)
        torch.testing.assert_close(model.forward_heads(clip)[0], net2d(frame), rtol=0, atol=1e-4)


def test_swin_tag_inflates_and_matches_2d(hub_server: HubServer, tmp_path: Path) -> None:
    net2d = serve_2d(hub_server, tmp_path, "swin_tiny_patch4_window7_224", "ms_in1k")
    name = "sifa_swin_tiny_patch4_window7_224.ms_in1k"
    with pytest.warns(UserWarning, match="patch_norm=False"):  # the released design drops the 2D patch norm
        timm.create_model(name, pretrained=True, num_frames=4)
    model = timm.create_model(name, pretrained=True, num_frames=4, patch_norm=True, num_classes=1000).eval()
    state = model.state_dict()
    temporal = [k for k in state if ".conv_t." in k or ".sifa_norm." in k or "conv_offset" in k]
    assert temporal and all(not state[k].any() for k in temporal), "the temporal path starts at zero"
    frame = torch.randn(1, 3, 224, 224)
    clip = frame[:, :, None].expand(1, 3, 4, 224, 224).contiguous()  # early stride 4: one tubelet
    with torch.no_grad():
        ref = net2d.forward_features(frame)  # (B, H, W, C)
        got = model.forward_features(clip)  # (B, C, T', H, W)
        torch.testing.assert_close(got[:, :, 0].permute(0, 2, 3, 1), ref, rtol=0, atol=ATOL)
        torch.testing.assert_close(model(clip), net2d(frame), rtol=0, atol=1e-4)


def test_offline_with_warm_cache_and_missing_repo(hub_server: HubServer, tmp_path: Path, monkeypatch) -> None:
    serve_2d(hub_server, tmp_path, "resnet50", "a1_in1k")
    warm = timm.create_model("c2d_resnet50.a1_in1k", pretrained=True, num_frames=8)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    before = len(hub_server.log)
    offline = timm.create_model("c2d_resnet50.a1_in1k", pretrained=True, num_frames=8)
    assert len(hub_server.log) == before  # no request at all
    torch.testing.assert_close(offline.state_dict()["conv1.weight"], warm.state_dict()["conv1.weight"])
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(Exception, match=r"timm/resnet101\.a1h_in1k") as info:
        timm.create_model("c2d_resnet101.a1h_in1k", pretrained=True, num_frames=8)
    assert len(str(info.value).splitlines()) <= 3


def test_pico_motion_tag_loads_offline_and_classifies_motion(monkeypatch) -> None:
    import huggingface_hub.constants as hub_constants

    from sifa_hub.training_data import MotionClips

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    model = timm.create_model("sifa_resnet_pico.motion4", pretrained=True).eval()
    assert model.pretrained_cfg["label_names"] == ("left", "right", "up", "down")
    cfg = model.pretrained_cfg
    clips = MotionClips(
        96, num_frames=model.num_frames, size=cfg["input_size"][-1], seed=4242, mean=cfg["mean"],
        std=cfg["std"], num_classes=model.num_classes,
    )
    videos, labels = zip(*(clips[i] for i in range(len(clips))))
    with torch.no_grad():
        accuracy = (model(torch.stack(videos)).argmax(-1) == torch.tensor(labels)).float().mean().item()
    assert accuracy >= 0.9, f"sifa_resnet_pico.motion4: top-1 {accuracy:.2%} on fresh motion clips"


def test_timm_torch_hub_and_transformers_reach_the_same_weights(hub_server: HubServer, tmp_path: Path) -> None:
    from sifa_hub.hf import SifaForVideoClassification

    serve_2d(hub_server, tmp_path, "resnet50", "a1_in1k")
    args = dict(num_frames=8, num_classes=1000)
    # the seed makes the tensors a 2D network lacks (global-context fc1/fc2) start equal too
    torch.manual_seed(1)
    via_timm = timm.create_model("sifa_resnet50.a1_in1k", pretrained=True, **args).state_dict()
    repo = str(Path(__file__).resolve().parents[1])
    torch.manual_seed(1)
    via_hub = torch.hub.load(repo, "sifa_resnet50", source="local", tag="a1_in1k", pretrained=True, **args)
    torch.manual_seed(1)
    via_hf = SifaForVideoClassification.from_pretrained("sifa_resnet50.a1_in1k", num_labels=1000, num_frames=8)
    for state in (via_hub.state_dict(), via_hf.to_timm().state_dict()):
        assert state.keys() == via_timm.keys()
        assert all(torch.equal(state[k], via_timm[k]) for k in state)
    # the shipped pico: its class names travel into the transformers config
    pico = SifaForVideoClassification.from_pretrained("sifa_resnet_pico.motion4")
    assert pico.config.id2label == {0: "left", 1: "right", 2: "up", 3: "down"}


def test_export_of_a_tag_writes_a_validated_card(tmp_path: Path) -> None:
    from sifa_hub.publish import export_model, validate_card

    out = export_model("sifa_resnet_pico.motion4", tmp_path / "pico", verify=False)
    card = validate_card(Path(out) / "README.md")
    assert "sifa_resnet_pico.motion4" in card.text and "top-1 100.0%" in card.text
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    shipped = timm.create_model("sifa_resnet_pico.motion4", pretrained=True)
    assert reloaded.pretrained_cfg["label_names"] == ["left", "right", "up", "down"]
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), shipped.state_dict().values()))
