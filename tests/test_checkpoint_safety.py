"""Every checkpoint and exported config the models open goes through one safe, explicit loader (issue 14).

Also the classifier rule of issue 13: a checkpoint's classifier that fits the requested ``num_classes`` loads,
whatever the variant's registered default; one that does not fit gives a WARNING naming the file and both shapes.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import save_file

import sifa_hub  # noqa: F401  (registers the models)
from sifa_hub.models._validation import load_weights_file, read_model_config, validate_model_config

PICOS = ["sifa_resnet_pico", "sifa_swin_pico"]


class _Payload:
    """A pickle payload: unpickling it creates ``marker`` (what an attacker's file would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _evil_pth(tmp_path: Path, name: str = "evil.pth") -> tuple[Path, Path]:
    """An official-looking ``.pth`` whose container also holds the payload; returns ``(file, marker)``."""
    marker = tmp_path / "pwned"
    path = tmp_path / name
    state = timm.create_model("sifa_resnet_pico", num_classes=3).state_dict()
    torch.save({"state_dict": state, "hook": _Payload(marker)}, path)
    return path, marker


@pytest.fixture
def no_timm_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make timm's own weight loaders fail: the models must never call them (their safety differs by version)."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("timm's weight loader was called for a SIFA model")

    import timm.models._builder as builder
    import timm.models._helpers as helpers

    for module, name in ((builder, "load_pretrained"), (builder, "load_state_dict"), (helpers, "load_state_dict")):
        monkeypatch.setattr(module, name, forbidden)


# ---------------------------------------------------------------------------------------------------------------
# unsafe and broken weight files
# ---------------------------------------------------------------------------------------------------------------


def test_malicious_pickle_is_refused_by_the_loader(tmp_path: Path) -> None:
    path, marker = _evil_pth(tmp_path)
    with pytest.raises(ValueError, match=rf"^{path}: not a valid checkpoint \(.*weights_only=True"):
        load_weights_file(path)
    assert not marker.exists()


@pytest.mark.usefixtures("no_timm_loader")
def test_malicious_pickle_is_refused_through_the_timm_overlay(tmp_path: Path) -> None:
    path, marker = _evil_pth(tmp_path)
    with pytest.raises(ValueError, match=f"{path}: not a valid checkpoint"):
        timm.create_model("sifa_resnet_pico", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert not marker.exists()


@pytest.mark.usefixtures("no_timm_loader")
def test_malicious_pickle_is_refused_in_a_local_dir(tmp_path: Path) -> None:
    """``timm.create_model("local-dir:...")`` with a pickled ``pytorch_model.bin`` (and no safetensors)."""
    folder = tmp_path / "export"
    folder.mkdir()
    _, marker = _evil_pth(folder, "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({"architecture": "sifa_resnet_pico", "num_classes": 3}))
    with pytest.raises(ValueError, match="pytorch_model.bin: not a valid checkpoint"):
        timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert not marker.exists()


def test_malicious_pickle_is_refused_by_the_official_converter(tmp_path: Path) -> None:
    """``sifa-hub export --from-official evil.pth`` (``export_model(official_checkpoint=...)``)."""
    from sifa_hub.publish import export_model

    path, marker = _evil_pth(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=f"{path}: not a valid checkpoint"):
        export_model("sifa_resnet_pico", out, num_classes=3, official_checkpoint=path)
    assert not marker.exists() and not out.exists()


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.randn(64, 64)}, str(good))
    data = good.read_bytes()
    files = {
        "zero-byte": b"",
        "truncated header": data[:20],
        "truncated data": data[: len(data) // 2],
        "garbage": b"\x00\x01not a checkpoint" * 10,
        "bad header json": (12).to_bytes(8, "little") + b"{not json!!}" + b"\x00" * 16,
    }
    out = {}
    for name, content in files.items():
        path = tmp_path / (name.replace(" ", "_") + ".safetensors")
        path.write_bytes(content)
        out[name] = path
    truncated_pth = tmp_path / "truncated.pth"
    torch.save({"w": torch.randn(64, 64)}, truncated_pth)
    truncated_pth.write_bytes(truncated_pth.read_bytes()[:200])
    out["truncated pth"] = truncated_pth
    return out


def test_corrupt_truncated_and_empty_files_name_the_file(tmp_path: Path) -> None:
    for kind, path in _corrupt_files(tmp_path).items():
        with pytest.raises(ValueError, match=rf"^{path}: not a valid checkpoint \(") as err:
            load_weights_file(path)
        assert "Error" not in str(err.value).split("(")[0], kind  # one sentence, not a raw library error first
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_weights_file(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="a directory"):
        load_weights_file(tmp_path)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        load_weights_file(not_a_dict)


@pytest.mark.usefixtures("no_timm_loader")
def test_corrupt_safetensors_through_timm(tmp_path: Path) -> None:
    path = _corrupt_files(tmp_path)["truncated data"]
    with pytest.raises(ValueError, match=f"{path}: not a valid checkpoint"):
        timm.create_model("sifa_swin_pico", pretrained=True, pretrained_cfg_overlay={"file": str(path)})


def test_safe_torch_files_and_containers_load(tmp_path: Path) -> None:
    state = {"a.weight": torch.randn(2, 3), "b": torch.arange(4)}
    path = tmp_path / "ok.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, path)
    loaded = load_weights_file(path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], v) for k, v in state.items())
    renamed = tmp_path / "weights.bin"  # a safetensors file under another extension is recognised
    save_file(state, str(renamed))
    assert torch.equal(load_weights_file(renamed)["b"], state["b"])


def test_no_weights_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="no pretrained weights exist for c2d_resnet_pico"):
        timm.create_model("c2d_resnet_pico", pretrained=True)


# ---------------------------------------------------------------------------------------------------------------
# classifier handling
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_timm_loader")
@pytest.mark.parametrize("name", PICOS)
def test_trained_head_is_kept_with_the_requested_num_classes(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """README recipe ``pretrained_cfg_overlay=dict(file=...)`` + ``num_classes=N``: logits equal the saved model's."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=6).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with caplog.at_level(logging.WARNING):
        loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, num_classes=6)
    assert "classifier" not in caplog.text
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x), rtol=0, atol=0)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        other = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, num_classes=4)
    assert other.num_classes == 4
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and warning[0].startswith(f"{path}: the checkpoint's classifier")
    assert "(6, " in warning[0] and "(4, " in warning[0]


@pytest.mark.parametrize("name", PICOS)
def test_three_channel_checkpoint_loads_into_one_channel_model(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    rgb = timm.create_model(name, num_classes=3).eval()
    path = tmp_path / "rgb.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    overlay = {"file": str(path)}
    gray = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=3, in_chans=1)
    stem = rgb.pretrained_cfg["first_conv"] + ".weight"
    torch.testing.assert_close(gray.state_dict()[stem], rgb.state_dict()[stem].sum(1, keepdim=True))
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():  # a gray clip repeated on 3 channels gives the RGB model's output
        torch.testing.assert_close(gray.eval()(x), rgb(x.expand(-1, 3, -1, -1, -1)), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# exported config.json
# ---------------------------------------------------------------------------------------------------------------

GOOD = {
    "architecture": "sifa_resnet_pico",
    "num_classes": 3,
    "num_frames": 8,
    "image_size": 32,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "label_names": ["a", "b", "c"],
    "model_args": {"num_frames": 8, "in_chans": 3},
    "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "num_classes": 3},
}

BAD_CONFIGS = [
    ({"architecture": None}, "missing field 'architecture'"),
    ({"architecture": "resnet50"}, "unknown architecture 'resnet50'"),
    ({"model_args": {"early_stride": 3}}, r"num_frames must be a positive int multiple of early_stride \(3\), got 8"),
    ({"architecture": "sifa_swin_pico", "num_frames": 7, "model_args": {}}, r"multiple of early_stride \(2\), got 7"),
    ({"num_frames": "16"}, "num_frames must be a positive int multiple"),
    ({"model_args": {"num_frames": "8"}}, "model_args.num_frames must be an int"),
    ({"model_args": {"bogus": 1}}, "do not build sifa_resnet_pico"),
    ({"image_size": 0}, "image_size must be a positive int"),
    ({"image_std": [0.2, 0.0, 0.2]}, "image_std must be positive"),
    ({"image_std": [0.2, 0.2]}, "image_std must be 3 finite numbers"),
    ({"pretrained_cfg": {"std": [0, 0, 0]}}, "pretrained_cfg.std must be positive"),
    ({"label_names": ["a", "b"]}, "label_names has 2 names but num_classes is 3"),
    ({"num_classes": -1}, "num_classes must be a non-negative int"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "message"), BAD_CONFIGS)
def test_config_errors_name_the_file_and_the_field(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    cfg = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    source = os.path.join(tmp_path, "config.json")
    with pytest.raises(ValueError, match=f"^{source}: .*{message}"):
        read_model_config(tmp_path)
    with pytest.raises(ValueError, match=message):
        validate_model_config(cfg, "cfg")


def test_config_json_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    cases = [("", "the file is empty"), ("{'a': 1}", "invalid JSON at line 1 column 2"), ("[1]", "expected a JSON")]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(ValueError, match=f"^{path}: {message}"):
            read_model_config(path)
    with pytest.raises(FileNotFoundError, match="config file not found"):
        read_model_config(tmp_path / "nothing")
    path.write_text(json.dumps(GOOD))
    assert read_model_config(tmp_path) == GOOD


def test_local_dir_with_an_invalid_config_is_refused(tmp_path: Path) -> None:
    model = timm.create_model("sifa_resnet_pico", num_classes=3)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({**GOOD, "label_names": ["a"]}))
    with pytest.raises(ValueError, match="config.json: label_names has 1 names but num_classes is 3"):
        timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    (tmp_path / "config.json").write_text(json.dumps(GOOD))
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert torch.equal(loaded.fc.weight, model.fc.weight)
