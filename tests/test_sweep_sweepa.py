"""Adversarial new-user inputs to the video doors: the video processor's array/PIL inputs, list files with bad
lines, and evaluation over folders holding unreadable files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sifa_hub.data import VideoFolderDataset, VideoListDataset
from sifa_hub.data.decode import write_video
from sifa_hub.evaluation import ClassSubset
from sifa_hub.hf.video_processing_sifa import SifaVideoProcessor


@pytest.fixture(scope="module")
def processor() -> SifaVideoProcessor:
    return SifaVideoProcessor(num_frames=4, size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """uint8 ``(8, 40, 50, 3)`` random RGB frames."""
    return np.random.default_rng(0).integers(0, 256, (8, 40, 50, 3), dtype=np.uint8)


def _pixels(processor: SifaVideoProcessor, video, **kwargs) -> torch.Tensor:
    return processor(video, return_tensors="pt", **kwargs)["pixel_values"]


def test_grey_pil_frames_are_sampled_and_made_rgb(processor, frames):
    grey = frames[..., 0]
    out = _pixels(processor, [Image.fromarray(f) for f in grey])
    assert out.shape == (1, 4, 3, 32, 32)  # num_frames honoured (it was silently 8 frames)
    expected = _pixels(processor, np.repeat(grey[..., None], 3, axis=-1))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(_pixels(processor, grey[..., None]), expected)  # (T, H, W, 1)


def test_rgba_frames_drop_alpha(processor, frames):
    rgba = np.concatenate([frames, np.full(frames.shape[:-1] + (1,), 7, np.uint8)], axis=-1)
    expected = _pixels(processor, frames)
    torch.testing.assert_close(_pixels(processor, rgba), expected)
    torch.testing.assert_close(_pixels(processor, [Image.fromarray(f) for f in rgba]), expected)


def test_bool_and_ambiguous_arrays_are_refused_by_name(processor, frames):
    with pytest.raises(TypeError, match="integers or floats, got torch.bool"):
        _pixels(processor, frames > 128)
    with pytest.raises(ValueError, match=r"cannot tell the channel axis .*\(1, 8, 40, 50\)"):
        _pixels(processor, frames[..., 0])  # (T, H, W) array: no channel axis


def test_float_pixels_in_unit_range_warn_before_double_rescaling(processor, frames):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _pixels(processor, frames.astype(np.float32))  # [0, 255] floats: no warning
    with pytest.warns(UserWarning, match=r"already in \[0, 1\]"):
        _pixels(processor, torch.from_numpy(frames).float() / 255)
    unit = _pixels(processor, torch.from_numpy(frames).float() / 255, do_rescale=False)
    torch.testing.assert_close(unit, _pixels(processor, frames), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kwargs", [{"num_frames": 0}, {"num_frames": -1}, {"frame_stride": 0}])
def test_bad_sampling_arguments_name_the_argument(processor, frames, kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=f"{name} must be a positive int, got {value}"):
        _pixels(processor, frames, frame_sampling="dense", **kwargs)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "a clip é.mp4"
    write_video(path, torch.zeros(3, 16, 16, 3, dtype=torch.uint8), fps=4.0)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a clip é.mp4\n", r":1: no label after the path"),
        ("a clip é.mp4 -1\n", r":1: label -1 is negative"),
    ],
)
def test_list_file_bad_lines(tmp_path, clip, content, message):
    listing = clip.parent / f"list_{abs(hash(content))}.txt"
    listing.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        VideoListDataset(listing, num_frames=2)


def test_list_file_not_utf8_names_the_file(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xff\xfe\x00garbage 0\n")
    with pytest.raises(ValueError, match=r"list\.txt' is not UTF-8 text"):
        VideoListDataset(listing, num_frames=2)


def test_list_file_with_spaces_in_path(clip):
    listing = clip.parent / "good.txt"
    listing.write_text(f"{clip.name} 1\n", encoding="utf-8")
    data = VideoListDataset(listing, num_frames=2, train=False)
    assert data.samples == [(clip, 1)] and data.classes == ["0", "1"]
    assert data[0][0].shape == (3, 2, 16, 16)


def test_eval_subset_leaves_out_unreadable_files(tmp_path):
    """A bad file must not be replaced by another video (counted twice, or from a class the model lacks)."""
    for name in ("known", "unknown"):
        (tmp_path / name).mkdir()
    (tmp_path / "empty_class").mkdir()
    write_video(tmp_path / "known" / "a.mp4", torch.zeros(2, 16, 16, 3, dtype=torch.uint8), fps=4.0)
    (tmp_path / "known" / "b.mp4").write_text("not a video")
    (tmp_path / "known" / "notes.txt").write_text("not listed")
    write_video(tmp_path / "unknown" / "c.mp4", torch.zeros(2, 16, 16, 3, dtype=torch.uint8), fps=4.0)
    data = VideoFolderDataset(tmp_path, num_frames=2, train=False)
    assert data.classes == ["empty_class", "known", "unknown"] and len(data) == 3
    labels = [label for _, label in data.samples]
    subset = ClassSubset(data, labels, data.classes, ["other", "known"])
    assert len(subset) == 2
    assert subset.drop_unreadable() == [str(tmp_path / "known" / "b.mp4")]
    assert len(subset) == 1 and subset[0][1] == 1 and subset[0][0].shape == (3, 2, 16, 16)


def test_pipeline_top_k_is_checked(tmp_path, frames):
    from transformers import pipeline

    from sifa_hub.hf import SifaConfig, SifaForVideoClassification

    labels = {0: "left", 1: "right", 2: "up"}
    config = SifaConfig(architecture="sifa_resnet_pico", num_frames=4, image_size=32, id2label=labels)
    model = SifaForVideoClassification(config).eval()
    model.save_pretrained(tmp_path)
    SifaVideoProcessor.from_sifa_config(config).save_pretrained(tmp_path)
    video = tmp_path / "clip.mp4"
    write_video(video, torch.from_numpy(frames[:, :32, :32].copy()), fps=8.0)
    classifier = pipeline("video-classification", model=str(tmp_path))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"top_k must be a positive int .*got {bad!r}"):
            classifier(str(video), top_k=bad)
    assert sorted(r["label"] for r in classifier(str(video), top_k=100)) == sorted(labels.values())  # capped
    assert len(classifier(str(video), top_k=1)) == 1


@pytest.mark.parametrize("extensions", ["mp4", ".MP4", ["mp4"], ("MP4", ".webm")])
def test_folder_extensions_without_dot_or_as_one_string(tmp_path, extensions):
    (tmp_path / "a").mkdir()
    write_video(tmp_path / "a" / "x.mp4", torch.zeros(2, 16, 16, 3, dtype=torch.uint8), fps=4.0)
    (tmp_path / "a" / "m.p4").write_text("a suffix made of the letters of 'mp4'")
    data = VideoFolderDataset(tmp_path, num_frames=2, extensions=extensions)
    assert [path.name for path, _ in data.samples] == ["x.mp4"]


def test_folder_extensions_refuse_empty(tmp_path):
    (tmp_path / "a").mkdir()
    for bad in ([], "", ["."]):
        with pytest.raises(ValueError, match="extensions must be file suffixes"):
            VideoFolderDataset(tmp_path, num_frames=2, extensions=bad)


def test_data_config_img_size_as_timm_input_size():
    from sifa_hub.data.pipeline import ClipTransform

    config = {"img_size": (3, 16, 16), "crop_pct": 1.0, "mean": (0.5,) * 3, "std": (0.5,) * 3}
    assert ClipTransform.from_data_config(config).crop == (16, 16)  # was (3, 16): channels read as the height
    with pytest.raises(ValueError, match=r"img_size must be s, \(h, w\) or \(3, h, w\)"):
        ClipTransform.from_data_config({**config, "img_size": (1, 2, 16, 16)})


def test_predict_paths_as_bytes_and_refuses_non_paths(clip):
    from sifa_hub.predict import _check_videos

    assert _check_videos(bytes(clip)) == [str(clip)]  # was iterated byte by byte
    assert _check_videos([clip, str(clip)]) == [str(clip)] * 2
    with pytest.raises(TypeError, match="video paths .*got int: 3"):
        _check_videos([clip, 3])


def test_explain_refuses_a_query_outside_the_input_and_a_folder_as_out(tmp_path, clip):
    import timm

    from sifa_hub.explain import explain_video

    model = timm.create_model("sifa_resnet_pico", num_classes=3, num_frames=4, img_size=16)
    with pytest.raises(ValueError, match=r"query \(1000.0, 3.0\) is outside the model input: rows 0..15"):
        explain_video(clip, model, out=tmp_path / "x.png", query=(1000.0, 3.0))
    with pytest.raises(ValueError, match="is a folder; give the PNG file"):
        explain_video(clip, model, out=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left
    out = explain_video(clip, model, out=tmp_path / "ok.png", query=(15.0, 0.0))
    assert Path(out).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_folder_warns_about_class_folders_without_videos(tmp_path, caplog):
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    write_video(tmp_path / "a" / "x.mp4", torch.zeros(2, 16, 16, 3, dtype=torch.uint8), fps=4.0)
    (tmp_path / "b" / "readme.txt").write_text("no video here")
    write_video(tmp_path / "c" / "y.mp4", torch.zeros(2, 16, 16, 3, dtype=torch.uint8), fps=4.0)
    with caplog.at_level("WARNING", logger="sifa_hub.data.datasets"):
        data = VideoFolderDataset(tmp_path, num_frames=2)
    assert data.classes == ["a", "b", "c"] and [label for _, label in data.samples] == [0, 2]
    assert "['b'] hold no video file" in caplog.text


@pytest.fixture(scope="module")
def named_model(tmp_path_factory) -> str:
    import timm

    from sifa_hub.publish import export_model

    torch.manual_seed(0)
    model = timm.create_model("sifa_resnet_pico", num_classes=3, num_frames=4, img_size=16)
    return str(export_model(model, tmp_path_factory.mktemp("named") / "pico", labels=["left", "right", "up"]))


def test_eval_integer_list_labels_index_the_model_classes(named_model, clip):
    from sifa_hub.evaluation import evaluate_model

    (clip.parent / "bad.mp4").write_text("not a video")
    listing = clip.parent / "ints.txt"
    listing.write_text(f"{clip.name} 2\n{clip.name} 0\nbad.mp4 1\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="fewer than the 4"):
        metrics = evaluate_model(named_model, str(listing), device="cpu")
    assert metrics["classes"] == ["left", "right", "up"]  # was "share none": '0', '1', '2' against the names
    assert metrics["num_samples"] == 2 and metrics["skipped_videos"] == [str(clip.parent / "bad.mp4")]
    listing.write_text(f"{clip.name} 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="integer labels up to 3 but the model has 3 classes"):
        evaluate_model(named_model, str(listing), device="cpu")


def test_pixels_outside_the_rescale_range(processor, frames):
    wide = frames.astype(np.uint16) * 257  # 16-bit pixels
    with pytest.raises(ValueError, match=r"torch.uint16 pixels span \[0, 65535\]; do_rescale expects \[0, 255\]"):
        _pixels(processor, wide)
    torch.testing.assert_close(_pixels(processor, wide, rescale_factor=1 / 65535), _pixels(processor, frames))
    with pytest.warns(UserWarning, match=r"span \[-2.*not \[0, 255\]"):
        _pixels(processor, torch.from_numpy(frames).float() / 64 - 2)  # normalised already


def test_processor_takes_pathlib_paths(processor, clip):
    from_path = _pixels(processor, clip)
    assert from_path.shape == (1, 4, 3, 32, 32)
    torch.testing.assert_close(_pixels(processor, [clip, str(clip)]), torch.cat([from_path, from_path]))


def test_list_file_with_bom_and_crlf(clip):
    listing = clip.parent / "windows.txt"
    listing.write_bytes(f"\ufeff{clip.name} 0\r\n{clip.name} 1\r\n".encode())
    data = VideoListDataset(listing, num_frames=2)
    assert data.samples == [(clip, 0), (clip, 1)]
