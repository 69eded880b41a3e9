"""Adversarial new-user cases for the models and weights (sweep "sweepb"): each was a raw or silent failure."""

from __future__ import annotations

import pytest
import timm
import torch

import sifa_hub  # noqa: F401  (registers the variants)

PICOS = ["sifa_resnet_pico", "sifa_swin_pico", "c2d_resnet_pico", "c2d_swin_pico"]


@pytest.mark.parametrize("variant", PICOS)
@pytest.mark.parametrize(("field", "value"), [("in_chans", 0), ("num_classes", -1), ("in_chans", 2.0)])
def test_bad_channel_and_class_counts_are_refused(variant: str, field: str, value: object) -> None:
    # in_chans=0 built a model that could take no clip; num_classes=-1 silently built an Identity head
    with pytest.raises(ValueError, match=rf"{variant}: {field} must be an int"):
        timm.create_model(variant, **{field: value})


@pytest.mark.parametrize("variant", PICOS)
def test_features_only_with_empty_out_indices_names_the_field(variant: str) -> None:
    with pytest.raises(ValueError, match="out_indices is empty"):  # was "max() arg is an empty sequence"
        timm.create_model(variant, features_only=True, out_indices=())


@pytest.mark.parametrize("variant", ["sifa_swin_pico", "c2d_swin_pico"])
def test_swin_unpooled_head_with_a_classifier_is_refused(variant: str) -> None:
    # was a RuntimeError "mat1 and mat2 shapes cannot be multiplied" at the first forward
    with pytest.raises(ValueError, match="global_pool='' .* needs num_classes=0"):
        timm.create_model(variant, global_pool="", num_classes=5)
    model = timm.create_model(variant, num_classes=0, global_pool="")
    assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 64, 4, 8, 8)
    with pytest.raises(ValueError, match="needs num_classes=0"):
        model.reset_classifier(5)


@pytest.mark.parametrize("pool", ["token", "bogus"])
def test_swin_unknown_global_pool_is_a_value_error(pool: str) -> None:
    with pytest.raises(ValueError, match=f"global_pool must be one of .*{pool!r}"):  # was AssertionError
        timm.create_model("sifa_swin_pico", global_pool=pool)
    model = timm.create_model("sifa_swin_pico")
    with pytest.raises(ValueError, match="global_pool must be one of"):
        model.reset_classifier(3, pool)
    assert model.num_classes == 400  # the refused reset changed nothing


@pytest.mark.parametrize("pool", ["max", "avgmax", "catavgmax"])
def test_swin_timm_pool_types_still_work(pool: str) -> None:
    model = timm.create_model("sifa_swin_pico", global_pool=pool, num_classes=5)
    assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize("variant", ["sifa_resnet_pico", "c2d_resnet_pico"])
def test_resnet_num_frames_not_a_multiple_of_early_stride_is_refused_at_build(variant: str) -> None:
    # built, then refused its own nominal clip (T=8, early_stride=3) at the first forward
    with pytest.raises(ValueError, match="num_frames=8, early_stride=3"):
        timm.create_model(variant, early_stride=3)
    model = timm.create_model(variant, early_stride=3, num_frames=9)
    assert model(torch.randn(1, 3, 9, 32, 32)).shape[0] == 1


def _pico_state() -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in timm.create_model("sifa_resnet_pico").state_dict().items()}


def test_checkpoint_with_nan_weights_is_refused_naming_the_tensor(tmp_path) -> None:
    from safetensors.torch import save_file

    state = _pico_state()
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))  # a diverged run's export
    path = tmp_path / "diverged.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"diverged\.safetensors: .*'fc\.weight' holds NaN/Inf"):
        timm.create_model("sifa_resnet_pico", pretrained=True, pretrained_cfg_overlay={"file": str(path)})


def test_a_file_that_is_no_checkpoint_is_not_called_unsafe(tmp_path) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(b"<html>404 Not Found</html>")  # a failed download saved under the checkpoint's name
    with pytest.raises(ValueError, match=r"weights\.pth: not a valid checkpoint \(neither a safetensors file nor"):
        timm.create_model("sifa_resnet_pico", pretrained=True, pretrained_cfg_overlay={"file": str(path)})


def test_legacy_torch_save_files_still_load(tmp_path) -> None:
    state = _pico_state()
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=False)
    model = timm.create_model("sifa_resnet_pico", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


@pytest.fixture(scope="module")
def hf_pico_dir(tmp_path_factory: pytest.TempPathFactory):
    from sifa_hub.hf import SifaForVideoClassification

    folder = tmp_path_factory.mktemp("hf_pico")
    model = SifaForVideoClassification.from_timm(timm.create_model("sifa_resnet_pico"), labels=["a", "b", "c", "d"])
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("cut", [b"garbage!" * 8, None])
def test_hf_corrupt_or_truncated_weights_name_the_folder(hf_pico_dir, tmp_path, cut: bytes | None) -> None:
    import shutil

    from sifa_hub.hf import SifaForVideoClassification

    folder = tmp_path / "copy"
    shutil.copytree(hf_pico_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(cut if cut is not None else weights.read_bytes()[:5000])
    with pytest.raises(ValueError, match=f"{folder}: the weights file is not a valid safetensors file"):  # was
        SifaForVideoClassification.from_pretrained(folder)  # a raw SafetensorError


def test_hf_unknown_weight_tag_is_refused_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from sifa_hub.hf import SifaForVideoClassification

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # was: five retries against huggingface.co, then an OSError
    with pytest.raises(ValueError, match=r"unknown weight tag 'sifa_resnet_pico\.bogus'.*sifa_resnet_pico\.motion4"):
        SifaForVideoClassification.from_pretrained("sifa_resnet_pico.bogus")


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        (torch.tensor([0, 9]), ValueError, r"class index 9, outside \[0, 4\)"),
        (torch.tensor([-1, 0]), ValueError, r"class index -1, outside \[0, 4\)"),
        (torch.tensor([0.0, 1.0]), TypeError, "integer class indices"),
        (torch.tensor([0]), ValueError, r"labels of shape \(1,\) do not match the batch of 2 clips"),
        ([0, 1], TypeError, "labels must be a torch.Tensor"),
    ],
)
def test_hf_bad_labels_are_refused_before_the_loss(hf_pico_dir, labels, error, message) -> None:
    from sifa_hub.hf import SifaForVideoClassification

    model = SifaForVideoClassification.from_pretrained(hf_pico_dir).eval()
    with pytest.raises(error, match=message):  # were IndexError / RuntimeError from inside torch's cross-entropy
        model(pixel_values=torch.randn(2, 8, 3, 32, 32), labels=labels)
    out = model(pixel_values=torch.randn(2, 8, 3, 32, 32), labels=torch.tensor([0, 3]))
    assert torch.isfinite(out.loss)


def test_hub_unknown_tag_lists_the_tags() -> None:
    import os

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with pytest.raises(ValueError, match=r"unknown weight tag 'bogus' for sifa_resnet_pico; its tags: motion4"):
        torch.hub.load(repo, "sifa_resnet_pico", source="local", tag="bogus")  # was timm's RuntimeError


def test_export_target_symlink_and_path_under_a_file_are_named(tmp_path) -> None:
    from sifa_hub.publish.export import check_export_target

    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ValueError, match="is a symbolic link"):  # was "exists and is not a directory"
        check_export_target(tmp_path / "link")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"afile' is a file, not a directory"):  # was a raw FileExistsError
        check_export_target(tmp_path / "afile" / "sub" / "out")
    assert check_export_target(tmp_path / "new" / "out") == str(tmp_path / "new" / "out")


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"num_classes": 5}])
def test_export_of_a_model_with_a_new_head_does_not_inherit_the_weights_class_names(tmp_path, kwargs) -> None:
    import json

    from sifa_hub.publish import export_model

    model = timm.create_model("sifa_resnet_pico", **kwargs)  # its pretrained_cfg names the 4 motion4 classes
    out = export_model(model, tmp_path / "out")  # was "4 labels given for a model with N classes"
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert out == str(tmp_path / "out")
    assert config["num_classes"] == kwargs["num_classes"]
    stored = model.pretrained_cfg["label_names"]
    assert len(stored) == 4 and not set(stored) & set(config.get("label_names") or [])  # no motion4 name reused


def test_export_of_a_float64_model_verifies_and_loads(tmp_path) -> None:
    from sifa_hub.loading import load_model
    from sifa_hub.publish import export_model

    model = timm.create_model("sifa_resnet_pico").double().eval()
    export_model(model, tmp_path / "out")  # the check fed a float32 clip to the float64 model and failed
    loaded = load_model(f"local-dir:{tmp_path / 'out'}").model.eval()
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clip.to(next(loaded.parameters()).dtype)).double(), model(clip.double()),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip


def test_load_model_unknown_tag_lists_the_tags() -> None:
    from sifa_hub.loading import load_model

    with pytest.raises(ValueError, match=r"unknown weight tag 'sifa_resnet_pico\.nope'.*sifa_resnet_pico\.motion4"):
        load_model("sifa_resnet_pico.nope")  # was timm's RuntimeError "Invalid pretrained tag (nope)"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_load_model_on_a_missing_gpu_is_one_clear_error() -> None:
    from sifa_hub.loading import load_model

    with pytest.raises(ValueError, match="'cuda:1' requested but CUDA is not available"):  # was torch's "Found no
        load_model("sifa_resnet_pico", device="cuda:1")  # NVIDIA driver" RuntimeError, after building the model
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        load_model("sifa_resnet_pico", device="gpu")


@pytest.mark.parametrize("dtype", [123, "float99"])
def test_hf_config_with_a_bad_dtype_names_the_file_and_field(hf_pico_dir, tmp_path, dtype) -> None:
    import json
    import shutil

    from sifa_hub.hf import SifaForVideoClassification

    folder = tmp_path / "copy"
    shutil.copytree(hf_pico_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = dtype
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{folder / 'config.json'}: dtype must be a torch dtype name"):
        SifaForVideoClassification.from_pretrained(folder)  # was AttributeError ('int' / module 'torch' ...)
    config["dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(config))
    assert SifaForVideoClassification.from_pretrained(folder).dtype == torch.bfloat16


def test_export_of_a_one_channel_model_says_how_to_fix_its_stats_then_round_trips(tmp_path) -> None:
    from sifa_hub.loading import load_model
    from sifa_hub.publish import export_model

    model = timm.create_model("sifa_swin_pico", in_chans=1, num_classes=3)
    with pytest.raises(ValueError, match=r"1-channel clips but its pretrained_cfg 'mean' has 3 values.*set model"):
        export_model(model, tmp_path / "a")  # was "SifaConfig: image_mean has 3 values but num_channels=1"
    assert not (tmp_path / "a").exists()
    model.pretrained_cfg = dict(model.pretrained_cfg, mean=(0.45,), std=(0.225,))
    export_model(model, tmp_path / "b")  # the check clip had 3 channels whatever the model's in_chans
    loaded = load_model(tmp_path / "b")
    assert loaded.model.in_chans == 1 and loaded.data_config["mean"] == (0.45,)


def test_onnx_export_refuses_bad_clips_outputs_and_paths_before_torch_export(tmp_path) -> None:
    from sifa_hub.deploy import export_onnx, export_program

    swin = timm.create_model("sifa_swin_pico").eval()
    with pytest.raises(ValueError, match="clip length T=5 must be a positive multiple of early_stride=2"):
        export_onnx(swin, tmp_path / "s.onnx", num_frames=5, img_size=32)  # was a TorchExportError
    with pytest.raises(ValueError, match="clip length T=5"):
        export_program(swin, num_frames=5, img_size=32)
    features = timm.create_model("sifa_resnet_pico", features_only=True).eval()
    with pytest.raises(TypeError, match="returns a list, not one"):  # was AttributeError: 'list' ... 'float'
        export_onnx(features, tmp_path / "f.onnx", num_frames=8, img_size=32)
    with pytest.raises(ValueError, match="is a directory; pass the .onnx file"):  # was IsADirectoryError
        export_onnx(swin, tmp_path, num_frames=8, img_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
