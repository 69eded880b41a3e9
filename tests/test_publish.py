"""Publishing: export one directory, push it to the offline Hub, load it back with timm / torch.hub / transformers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from hub_server import HubServer
from huggingface_hub import ModelCard, model_info, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import sifa_hub
from sifa_hub import publish
from sifa_hub.publish import export as publish_export

ARCH = "sifa_resnet_pico"
LABELS = ["left", "right", "up", "down"]
REPO = f"{HubServer.org}/sifa-pico-motion"
METRICS = {
    "top1": 93.5,
    "top5": 100.0,
    "num_samples": 400,
    "dataset": {"name": "sifa_hub synthetic motion clips", "type": "sifa_hub-motion", "split": "validation"},
}
MODEL_CARDS = Path(__file__).resolve().parents[1] / "model_cards"


def _model(arch: str = ARCH) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, num_classes=len(LABELS)).eval()


def _clip(model: torch.nn.Module) -> torch.Tensor:
    size = model.pretrained_cfg["input_size"][1:]
    return torch.randn(2, 3, model.num_frames, *size, generator=torch.Generator().manual_seed(1))  # (B, C, T, H, W)


def _logits(model: torch.nn.Module, clip: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(clip)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = _model()
    out = publish.export_model(
        model, tmp_path_factory.mktemp("export") / "pico", labels=LABELS, metrics=METRICS, repo_id=REPO
    )
    return model, Path(out)


def test_export_layout(exported: tuple[torch.nn.Module, Path]) -> None:
    model, out = exported
    assert {p.name for p in out.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "README.md",
        "hubconf.py",
        "video_preprocessor_config.json",
    }
    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt", "variant": ARCH, "sifa_hub_version": sifa_hub.__version__}
        assert set(f.keys()) == set(model.state_dict())  # timm-native names
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == ARCH and config["model_type"] == "sifa"
    assert config["num_classes"] == 4 and config["label_names"] == LABELS
    assert config["model_args"]["num_frames"] == model.num_frames
    from timm.models import PretrainedCfg

    PretrainedCfg(**config["pretrained_cfg"])  # timm accepts every key

    card = publish.validate_card(out / "README.md")
    assert card.data.pipeline_tag == "video-classification"
    assert card.data.library_name == "transformers" and "timm" in card.data.tags  # the Hub snippet needs no sifa_hub
    assert f'"{REPO}", trust_remote_code=True' in card.text
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results == {"top-1 accuracy (%)": 93.5, "top-5 accuracy (%)": 100.0}  # measured, from METRICS
    assert all(r.source_url is None for r in card.data.eval_results)  # paper number not in this card's index
    assert "83.1%" in card.text and "not measured by us" in card.text
    assert f'"hf-hub:{REPO}"' in card.text and "@inproceedings{Long_2022_CVPR" in card.text

    # local loads: timm local-dir and torch.hub, same logits as the exported model
    clip = _clip(model)
    expected = _logits(model, clip)
    torch.testing.assert_close(_logits(timm.create_model(f"local-dir:{out}", pretrained=True), clip), expected)
    hub_model = torch.hub.load(str(out), "model", source="local")
    torch.testing.assert_close(_logits(hub_model, clip), expected)

    # transformers: the model (pixel_values (B, T, C, H, W)) and the video processor
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    hf_model = AutoModelForVideoClassification.from_pretrained(out).eval()
    assert hf_model.config.id2label == dict(enumerate(LABELS))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(pixel_values=clip.transpose(1, 2)).logits, expected)
    processor = AutoVideoProcessor.from_pretrained(out)
    video = torch.randint(0, 256, (20, 48, 64, 3), dtype=torch.uint8)  # (frames, H, W, C)
    assert processor(video, return_tensors="pt")["pixel_values"].shape == (1, model.num_frames, 3, 32, 32)


def test_push_then_load_from_hub(hub_server: HubServer, exported: tuple[torch.nn.Module, Path]) -> None:
    model, out = exported
    info = publish.push_to_hub(out, REPO, commit_message="pico motion model")
    history = hub_server.commit_history(REPO)
    assert [c.title for c in history] == ["pico motion model", "initial commit"]  # one commit
    assert info.oid == history[0].oid
    assert hub_server.read_file(REPO, "model.safetensors") == (out / "model.safetensors").read_bytes()
    meta = model_info(REPO)
    assert meta.pipeline_tag == "video-classification" and "sifa_hub" in meta.tags

    clip = _clip(model)
    expected = _logits(model, clip)
    torch.testing.assert_close(_logits(timm.create_model(f"hf-hub:{REPO}", pretrained=True), clip), expected)

    from transformers import AutoModelForVideoClassification

    hf_model = AutoModelForVideoClassification.from_pretrained(REPO).eval()  # classes registered by sifa_hub
    with torch.no_grad():
        torch.testing.assert_close(hf_model(pixel_values=clip.transpose(1, 2)).logits, expected)

    # the card's snippets run as written against the Hub
    snippets = dict(
        re.findall(r"### (\w[\w.]*)\n\n```python\n(.*?)```", ModelCard.load(out / "README.md").text, flags=re.DOTALL)
    )
    assert {"timm", "transformers", "torch.hub"} <= set(snippets)
    for name in ("timm", "transformers", "torch.hub"):
        scope: dict = {}
        exec(compile(snippets[name], f"<card snippet {name}>", "exec"), scope)
        assert scope["logits"].shape == (1, len(LABELS)), name

    # a second push to a new branch leaves main alone
    again = publish.push_to_hub(out, REPO, revision="v2", commit_message="branch copy")
    assert hub_server.commit_history(REPO, "v2")[0].oid == again.oid
    assert hub_server.commit_history(REPO)[0].oid == info.oid


@pytest.mark.slow  # a fresh interpreter importing torch + transformers: ~10-20 s
def test_transformers_remote_code_from_hub(
    hub_server: HubServer, exported: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    """A fresh process where sifa_hub cannot be imported finds the Hub through HF_ENDPOINT (as a user would) and
    loads the pushed model with transformers' remote code only."""
    model, out = exported
    publish.push_to_hub(out, REPO)
    clip = _clip(model)
    expected = _logits(model, clip)
    blocker = tmp_path / "blocked" / "sifa_hub"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('sifa_hub is hidden: remote code must suffice')\n")
    save_file({"clip": clip.transpose(1, 2).contiguous()}, tmp_path / "clip.safetensors")
    script = f"""
import sys, torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForVideoClassification
model = AutoModelForVideoClassification.from_pretrained({REPO!r}, trust_remote_code=True).eval()
assert "sifa_hub" not in sys.modules
with torch.no_grad():
    logits = model(pixel_values=load_file(sys.argv[1])["clip"]).logits
save_file({{"logits": logits}}, sys.argv[2])
"""
    env = {
        **os.environ,
        **hub_server.env(tmp_path / "fresh-cache"),
        "PYTHONPATH": str(blocker.parent),
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    args = [sys.executable, "-c", script, str(tmp_path / "clip.safetensors"), str(tmp_path / "logits.safetensors")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    torch.testing.assert_close(load_file(tmp_path / "logits.safetensors")["logits"], expected)


def test_push_private_and_errors(
    hub_server: HubServer, exported: tuple[torch.nn.Module, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, out = exported
    publish.push_to_hub(out, REPO, private=True)
    assert model_info(REPO).private
    with pytest.raises(RepositoryNotFoundError):
        model_info(REPO, token=False)

    # a card exported without repo_id names a placeholder; the uploaded copy names the target repo
    unnamed = tmp_path / "unnamed"
    unnamed.mkdir()
    for p in out.iterdir():
        (unnamed / p.name).write_bytes(p.read_bytes())
    (unnamed / "README.md").write_text((out / "README.md").read_text().replace(REPO, publish.REPO_ID_PLACEHOLDER))
    publish.push_to_hub(unnamed, f"{HubServer.org}/renamed")
    assert (
        f'"hf-hub:{HubServer.org}/renamed"' in hub_server.read_file(f"{HubServer.org}/renamed", "README.md").decode()
    )
    assert publish.REPO_ID_PLACEHOLDER in (unnamed / "README.md").read_text()  # the local folder is untouched

    with pytest.raises(ValueError, match="ORG/NAME"):
        publish.push_to_hub(out, "no-namespace")
    with pytest.raises(ValueError, match="another repo"):
        publish.push_to_hub(out, f"{HubServer.org}/other-name")

    monkeypatch.delenv("HF_TOKEN")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(ValueError, match="no Hugging Face token"):
        publish.push_to_hub(out, REPO)
    with pytest.raises(HfHubHTTPError) as err:  # a wrong token reaches the Hub and is refused there
        publish.push_to_hub(out, REPO, token="hf_wrong")
    assert err.value.response.status_code == 401

    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="model.safetensors, README.md"):
        publish.push_to_hub(incomplete, REPO, token=HubServer.write_token)

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.safetensors", "config.json"):
        (broken / name).write_bytes((out / name).read_bytes())
    card = (out / "README.md").read_text().replace("pipeline_tag: video-classification", "pipeline_tag: other")
    (broken / "README.md").write_text(card)
    with pytest.raises(ValueError, match="pipeline_tag"):
        publish.push_to_hub(broken, REPO, token=HubServer.write_token)
    assert len(hub_server.commit_history(REPO)) == 2  # nothing was uploaded by the failures


def test_export_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    target = tmp_path / "out"

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(publish_export, "model_complexity", explode)  # fails after weights and config are written
    with pytest.raises(RuntimeError, match="injected"):
        publish.export_model(model, target, labels=LABELS)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder

    monkeypatch.undo()
    publish.export_model(model, target, labels=LABELS)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setattr(publish_export, "_verify_export", explode)  # fails just before the swap
    with pytest.raises(RuntimeError, match="injected"):
        publish.export_model(_model(), target, labels=["a", "b", "c", "d"])
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # the previous export is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_export_rejects_bad_inputs(tmp_path: Path) -> None:
    model = _model()
    with pytest.raises(ValueError, match="3 labels"):
        publish.export_model(model, tmp_path / "a", labels=LABELS[:3])
    with pytest.raises(ValueError, match="unique"):
        publish.export_model(model, tmp_path / "a", labels=["x", "x", "y", "z"])
    with pytest.raises(ValueError, match="top1"):
        publish.export_model(model, tmp_path / "a", metrics={"accuracy": 0.9})
    with pytest.raises(ValueError, match="percentage"):
        publish.export_model(model, tmp_path / "a", metrics={"top1": 0.9, "top5": 250})
    with pytest.raises(ValueError, match="gives no weights"):
        publish.export_model(ARCH, tmp_path / "a")
    with pytest.raises(ValueError, match="unknown model architecture"):
        publish.export_model("not_a_model", tmp_path / "a", official_checkpoint=__file__)
    with pytest.raises(ValueError, match="ORG/NAME"):
        publish.export_model(model, tmp_path / "a", repo_id="bad")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a model export"):
        publish.export_model(model, tmp_path / "precious")
    with pytest.raises(TypeError):
        publish.export_model(42, tmp_path / "a")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_export_sources(tmp_path: Path) -> None:
    arch = "sifa_swin_pico"  # the other family
    model = _model(arch)
    clip = _clip(model)
    expected = _logits(model, clip)

    # an official-style .pth: DataParallel prefix, loaded weights_only through the family's checkpoint_filter_fn
    pth = tmp_path / "official.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, pth)
    out = publish.export_model(
        arch, tmp_path / "from_pth", official_checkpoint=pth, num_classes=4, labels=LABELS, verify=False
    )
    torch.testing.assert_close(_logits(timm.create_model(f"local-dir:{out}", pretrained=True), clip), expected)
    assert "official SIFA release" in (Path(out) / "README.md").read_text()

    # a training checkpoint as sifa_hub.train writes it (model.safetensors + trainer_state.json)
    ckpt = tmp_path / "checkpoints" / "step-00000010"
    ckpt.mkdir(parents=True)
    save_file(model.state_dict(), ckpt / "model.safetensors")
    state = {"global_step": 10, "classes": LABELS, "config": {"model": arch, "num_frames": 8, "img_size": 32}}
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": ckpt.name}))
    # the run's output folder stands for its newest checkpoint
    out = publish.export_model(tmp_path, tmp_path / "from_ckpt", metrics={"top1": 50.0}, verify=False)
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    torch.testing.assert_close(_logits(reloaded, clip), expected)
    assert reloaded.pretrained_cfg["label_names"] == LABELS
    card = publish.validate_card(Path(out) / "README.md")
    assert card.data.eval_results is None  # evaluation set not described: in the body only, not in model-index
    assert "| evaluation set not described | validation | top-1 accuracy (%) | 50.00 |" in card.text

    # an exported directory re-exports to identical weights
    again = publish.export_model(out, tmp_path / "re_export", verify=False)
    first, second = load_file(Path(out) / "model.safetensors"), load_file(Path(again) / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_export_imagenet_inflated(tmp_path: Path) -> None:
    """2D ImageNet-style weights (a 2D ResNet's keys, 1000 classes) become an inflated initialisation."""
    model = _model()
    state_2d = {}
    for k, v in model.state_dict().items():
        if k.startswith(("layer4_dual.", "fc_dual.")) or re.search(r"\.(fc1|fc2|sifa)\.", k):
            continue  # keys a 2D ResNet does not have
        state_2d[k] = v[:, :, 0] if v.dim() == 5 else v  # (O, I, 1, kh, kw) -> (O, I, kh, kw)
    state_2d["fc.weight"], state_2d["fc.bias"] = torch.randn(1000, state_2d["fc.weight"].shape[1]), torch.zeros(1000)
    torch.save(state_2d, tmp_path / "imagenet_2d.pth")
    out = publish.export_model(
        ARCH, tmp_path / "inflated", imagenet_checkpoint=tmp_path / "imagenet_2d.pth", num_classes=4, verify=False
    )
    inflated = timm.create_model(f"local-dir:{out}", pretrained=True).state_dict()
    assert torch.equal(inflated["conv1.weight"][:, :, 0], state_2d["conv1.weight"])
    assert torch.equal(inflated["layer4_dual.0.conv1.weight"], inflated["layer4.0.conv1.weight"])
    card = publish.validate_card(Path(out) / "README.md")
    assert "inflated to 3D" in card.text and "not a video classifier" in card.text


def test_paper_number_only_for_official_swin_b() -> None:
    with torch.device("meta"):  # the card reads the architecture's metadata only: no need for 88M real weights
        model = timm.create_model(publish.PAPER_RESULT["architecture"])
    official = publish.build_model_card(model, weights_kind="official", complexity=(0, None))
    (result,) = official.data.eval_results
    assert (result.metric_value, result.dataset_name, result.source_url) == (83.1, "Kinetics-400", publish.PAPER_URL)
    other = publish.build_model_card(model, weights_kind="imagenet-inflated", complexity=(0, None))
    assert other.data.eval_results is None and "83.1" not in other.text.split("---")[1]


def test_export_card_only_and_push_options(
    hub_server: HubServer, exported: tuple[torch.nn.Module, Path], tmp_path: Path
) -> None:
    """What ``sifa-hub export`` / ``sifa-hub push`` call (the parsers live in cli.py): a labels file, a card only,
    a private push with a commit message."""
    _, out = exported
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["a", "b", "", "c", "d"]) + "\n")
    assert publish.read_labels_file(labels) == ["a", "b", "c", "d"]
    cli_out = publish.export_model(
        str(out), tmp_path / "cli", labels=publish.read_labels_file(labels), repo_id=f"{HubServer.org}/cli-pico",
        verify=False,
    )
    assert json.loads((Path(cli_out) / "config.json").read_text())["label_names"] == ["a", "b", "c", "d"]
    info = publish.push_to_hub(
        cli_out, f"{HubServer.org}/cli-pico", private=True, revision=None, commit_message="from the CLI"
    )
    assert info.commit_url
    assert hub_server.commit_history(f"{HubServer.org}/cli-pico")[0].title == "from the CLI"
    card = publish.write_model_card(
        str(out), tmp_path / "card.md", repo_id=f"{HubServer.org}/cli-pico", weights_description="trained by a test"
    )
    assert "trained by a test" in publish.validate_card(card).text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.md", "cli", "labels.txt"]  # no temporaries
    assert model_info(f"{HubServer.org}/cli-pico").private
    snapshot = Path(snapshot_download(f"{HubServer.org}/cli-pico"))
    assert (snapshot / "model.safetensors").read_bytes() == (tmp_path / "cli" / "model.safetensors").read_bytes()
    assert not (snapshot / publish.MANIFEST_NAME).exists()  # the hidden manifest stays local

    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt: no class names"):
        publish.read_labels_file(empty)


def test_model_cards_validate() -> None:
    cards = sorted(MODEL_CARDS.glob("*.md"))
    assert cards, f"no model cards in {MODEL_CARDS}"
    for card in cards:
        publish.validate_card(card)


def test_processor_resizes_like_the_clip_pipeline(tmp_path: Path) -> None:
    """The exported processor's short side is ``floor(crop / crop_pct)`` (the clip pipeline's rule), not rounded."""
    torch.manual_seed(0)
    model = timm.create_model("c2d_resnet_pico", num_classes=4, pretrained_cfg_overlay=dict(crop_pct=0.875))
    out = Path(publish.export_model(model, tmp_path / "c2d", verify=False))
    processor = json.loads((out / "video_preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 36}  # 32 / 0.875 = 36.57: floor, where rounding gave 37
    assert processor["crop_size"] == {"height": 32, "width": 32}
    assert "crop_pct 0.875" in (out / "README.md").read_text()


def test_exported_hubconf_works_without_sifa_hub(tmp_path: Path) -> None:
    """torch.hub.load of an export in a process where sifa_hub and transformers cannot be imported: the folder's
    bundled model code registers the architecture; logits equal the exported model's."""
    import subprocess
    import sys

    model = _model()
    clip = _clip(model)
    out = publish.export_model(model, tmp_path / "export", labels=LABELS, verify=False)
    torch.save(clip, tmp_path / "clip.pt")
    script = f"""
import sys
sys.modules["sifa_hub"] = None
sys.modules["transformers"] = None
import torch
model = torch.hub.load({str(out)!r}, "model", source="local").eval()
with torch.no_grad():
    logits = model(torch.load({str(tmp_path / 'clip.pt')!r}))
torch.save({{"logits": logits, "module": type(model).__module__}}, {str(tmp_path / 'out.pt')!r})
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    assert not got["module"].startswith("sifa_hub")  # the bundled copy, not the package
    torch.testing.assert_close(got["logits"], _logits(model, clip))
