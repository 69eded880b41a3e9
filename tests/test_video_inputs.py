"""Real-world video inputs (issue 14): every container/codec PyAV writes, rotation, tiny and odd sizes, one frame,
and broken files — through `VideoReader`, ``sifa-hub predict``'s `predict` and ``pipeline("video-classification")``.

Every clip is encoded here with PyAV into a temporary folder; the models are small random C2D/SIFA picos (what is
tested is decoding and the doors, not accuracy).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import timm
import torch

import sifa_hub  # noqa: F401  (registers the models and the transformers integration)
from sifa_hub.data import ShortVideoWarning, VideoDecodeError, VideoReader
from sifa_hub.data import decode as decode_module
from sifa_hub.hf import SifaForVideoClassification, SifaVideoProcessor
from sifa_hub.hf.pipeline_sifa import SifaVideoClassificationPipeline
from sifa_hub.loading import data_config
from sifa_hub.predict import predict

LABELS = ["left", "right", "up", "down"]


def moving_square(num_frames: int, height: int, width: int) -> np.ndarray:
    """uint8 ``(T, H, W, 3)``: a white square moving right over a red ramp, a green marker in the top-left corner."""
    video = np.zeros((num_frames, height, width, 3), np.uint8)
    video[..., 0] = np.linspace(40, 200, width, dtype=np.uint8)
    side = max(2, min(height, width) // 4)
    for t in range(num_frames):
        x = (t * 2) % max(width - side, 1)
        video[t, height // 2 : height // 2 + side, x : x + side] = 255
    video[:, :side, :side] = (0, 255, 0)
    return video


def encode(
    path: Path,
    frames: np.ndarray,
    *,
    fmt: str,
    codec: str,
    pix_fmt: str,
    rate: int = 25,
    rotation: int | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode uint8 RGB frames ``(T, H, W, 3)`` with PyAV; ``rotation`` writes a display matrix (degrees, CCW)."""
    height, width = frames.shape[1:3]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.options = options
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


# name: (file name, container, codec, pixel format, frames, height, width)
GOOD = {
    "webm_vp9": ("clip.webm", "webm", "libvpx-vp9", "yuv420p", 20, 48, 64),
    "mkv_gray": ("gray.mkv", "matroska", "ffv1", "gray", 20, 48, 64),
    "mkv_h264": ("h264.mkv", "matroska", "libx264", "yuv420p", 20, 48, 64),
    "avi_mpeg4": ("clip.avi", "avi", "mpeg4", "yuv420p", 20, 48, 64),
    "gif": ("clip.gif", "gif", "gif", "rgb8", 12, 48, 64),
    "mp4_yuv444p": ("yuv444.mp4", "mp4", "libx264", "yuv444p", 20, 48, 64),
    "mp4_8x8": ("tiny.mp4", "mp4", "libx264", "yuv444p", 10, 8, 8),
    "mkv_odd_9x7": ("odd.mkv", "matroska", "ffv1", "yuv444p", 10, 7, 9),
    "mp4_one_frame": ("one.mp4", "mp4", "libx264", "yuv420p", 1, 48, 64),
}


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, np.ndarray]]:
    folder = tmp_path_factory.mktemp("good")
    out = {}
    for name, (file, fmt, codec, pix_fmt, t, h, w) in GOOD.items():
        frames = moving_square(t, h, w)
        out[name] = (encode(folder / file, frames, fmt=fmt, codec=codec, pix_fmt=pix_fmt), frames)
    return out


@pytest.fixture(scope="module")
def rotated_mp4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A phone-style clip: stored 64 wide × 48 high, with a display matrix saying "turn 90° clockwise"."""
    frames = moving_square(12, 48, 64)
    path = tmp_path_factory.mktemp("rotated") / "phone.mp4"
    return encode(path, frames, fmt="mp4", codec="libx264", pix_fmt="yuv420p", rotation=-90), frames


@pytest.fixture(scope="module")
def c2d_model() -> torch.nn.Module:
    """A random ``c2d_resnet_pico`` (no SIFA op, so no kernel build) with 4 named classes."""
    torch.manual_seed(0)
    model = timm.create_model("c2d_resnet_pico", num_classes=4)
    model.pretrained_cfg = dict(model.pretrained_cfg, label_names=LABELS)
    return model.eval()


@pytest.fixture(scope="module")
def classifier(c2d_model: torch.nn.Module) -> SifaVideoClassificationPipeline:
    """``pipeline("video-classification")`` over the same model and its processor."""
    from transformers import pipeline

    hf_model = SifaForVideoClassification.from_timm(c2d_model, labels=LABELS).eval()
    processor = SifaVideoProcessor.from_data_config(data_config(c2d_model))
    return pipeline("video-classification", model=hf_model, video_processor=processor)


# ------------------------------------------------------------------------------------------------ decoding


@pytest.mark.parametrize("name", list(GOOD))
def test_reader_opens_every_container(good_videos: dict[str, tuple[Path, np.ndarray]], name: str) -> None:
    path, source = good_videos[name]
    with VideoReader(path) as reader:
        assert reader.num_frames == source.shape[0]
        everything = reader.read_all()
        assert everything.dtype == torch.uint8 and everything.shape == source.shape
        # frames fetched one by one (seeking) equal the same frames of a full decode
        for index in sorted({0, reader.num_frames // 2, reader.num_frames - 1}):
            assert torch.equal(reader.get_frames([index])[0], everything[index])
    expected = torch.from_numpy(source).float()
    if name == "mkv_gray":  # the luma of the RGB source, replicated to 3 channels
        assert torch.equal(everything[..., 0], everything[..., 2])
        expected = expected.mul(torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True).expand_as(expected)
    error = (everything.float() - expected).abs().mean()
    assert error < (40 if name in ("gif", "mp4_8x8", "mkv_odd_9x7") else 12), f"{name}: mean error {error:.1f}"


def test_frame_count_without_container_metadata(good_videos: dict[str, tuple[Path, np.ndarray]]) -> None:
    """webm and mkv declare no frame count (transformers' own loader saw 0 frames); the reader counts packets."""
    for name in ("webm_vp9", "mkv_gray", "mkv_h264"):
        path, source = good_videos[name]
        with av.open(str(path)) as container:
            assert container.streams.video[0].frames == 0
        assert VideoReader(path).num_frames == source.shape[0] == 20


@pytest.mark.parametrize("rotation", [-90, 90, 180])
def test_display_rotation_is_applied(tmp_path: Path, rotation: int) -> None:
    frames = moving_square(6, 48, 64)
    path = encode(tmp_path / "rot.mp4", frames, fmt="mp4", codec="libx264", pix_fmt="yuv420p", rotation=rotation)
    decoded = VideoReader(path).read_all().float()
    upright = torch.from_numpy(np.ascontiguousarray(np.rot90(frames, rotation // 90, axes=(1, 2)))).float()
    assert decoded.shape == upright.shape  # (6, 64, 48, 3) for ±90°
    assert (decoded - upright).abs().mean() < 12


def test_phone_clip_comes_out_upright(rotated_mp4: tuple[Path, np.ndarray]) -> None:
    path, frames = rotated_mp4
    decoded = VideoReader(path).get_frames([0])[0]  # (64, 48, 3): portrait
    assert decoded.shape == (64, 48, 3)
    green = decoded[..., 1].float() - decoded[..., 0].float()
    assert green[:12, -12:].mean() > 150  # the top-left marker of the stored frame, turned 90° clockwise
    assert green[:12, :12].mean() < 50


@pytest.mark.parametrize("fmt,codec,file", [("mp4", "libx264", "long.mp4"), ("webm", "libvpx-vp9", "long.webm")])
def test_reader_seeks_and_decodes_only_requested_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, codec: str, file: str
) -> None:
    frames = moving_square(120, 32, 48)
    frames[..., 2] = np.arange(120, dtype=np.uint8)[:, None, None] * 2  # blue encodes the frame number
    path = encode(tmp_path / file, frames, fmt=fmt, codec=codec, pix_fmt="yuv420p", options={"g": "10"})

    def no_full_pass(self: VideoReader, wanted: list[int]) -> dict[int, np.ndarray]:
        raise AssertionError("fell back to a sequential pass over the file")

    converted: list[int] = []
    rgb = VideoReader._rgb

    def counting_rgb(self: VideoReader, frame: av.VideoFrame, size: list[tuple[int, int]]) -> np.ndarray:
        converted.append(frame.pts)
        return rgb(self, frame, size)

    monkeypatch.setattr(VideoReader, "_decode_sequential", no_full_pass)
    monkeypatch.setattr(VideoReader, "_rgb", counting_rgb)
    wanted = [105, 3, 64, 64]
    got = VideoReader(path).get_frames(wanted)
    assert len(converted) == 3  # distinct frames only, nothing else converted or kept
    blue = got[..., 2].float().mean(dim=(1, 2))
    assert (blue - torch.tensor([210.0, 6.0, 128.0, 128.0])).abs().max() < 8


def bad_files(folder: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """name: (file, the problem its error must state)."""
    data = good.read_bytes()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.txt").write_text("hello\nthis is a text file, not a video\n" * 40)
    (folder / "notes.mp4").write_text("hello\nthis is a text file, not a video\n" * 40)
    (folder / "noise.webm").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "folder.mp4").mkdir()
    os.mkfifo(folder / "pipe.mp4")  # opening a FIFO for reading would block until a writer comes: never open it
    with av.open(str(folder / "audio.m4a"), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    (folder / "head.mp4").write_bytes(data[:200])
    return {
        "missing": (folder / "missing.mp4", "no such file"),
        "zero_bytes": (folder / "empty.mp4", "empty"),
        "text": (folder / "notes.txt", "not a video"),
        "text_named_mp4": (folder / "notes.mp4", "not a readable video: truncated, corrupt or not a video"),
        "random_bytes": (folder / "noise.webm", "not a readable video"),
        "directory": (folder / "folder.mp4", "not a regular file"),
        "fifo": (folder / "pipe.mp4", "not a regular file"),
        "audio_only": (folder / "audio.m4a", "no video stream"),
        "first_200_bytes": (folder / "head.mp4", "not a readable video"),
    }


def test_bad_files_give_one_clear_error(tmp_path: Path, good_videos: dict[str, tuple[Path, np.ndarray]]) -> None:
    for name, (path, problem) in bad_files(tmp_path, good_videos["mp4_yuv444p"][0]).items():
        with pytest.raises(VideoDecodeError) as info:
            VideoReader(path).read_all()
        message = str(info.value)
        assert message.startswith(f"{path}: ") and problem in message, f"{name}: {message}"


@pytest.mark.parametrize("name", ["mp4_yuv444p", "webm_vp9", "mkv_h264", "avi_mpeg4"])
@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_truncated_files_are_refused(
    tmp_path: Path, good_videos: dict[str, tuple[Path, np.ndarray]], name: str, fraction: float
) -> None:
    """A cut file fails with one error naming it, whether the cut hits the header, the index or the frames (webm,
    mkv and avi declare no exact frame count: the stream ending before the declared duration gives them away)."""
    path, _ = good_videos[name]
    cut = tmp_path / f"cut_{path.name}"
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(VideoDecodeError) as info:
        VideoReader(cut).read_all()
    message = str(info.value)
    assert message.startswith(f"{cut}: ") and any(w in message for w in ("truncated", "no frame")), message


# ------------------------------------------------------------------------------------------------ the doors


def test_predict_and_pipeline_classify_every_container(
    good_videos: dict[str, tuple[Path, np.ndarray]],
    rotated_mp4: tuple[Path, np.ndarray],
    c2d_model: torch.nn.Module,
    classifier: SifaVideoClassificationPipeline,
) -> None:
    paths = [str(p) for p, _ in good_videos.values()] + [str(rotated_mp4[0])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShortVideoWarning)  # the short clips (tested below)
        results = predict(paths, c2d_model, top_k=4, device="cpu")
        piped = [classifier(path, top_k=4) for path in paths]
    assert [r["video"] for r in results] == paths
    for result, door in zip(results, piped):
        scores = [p["score"] for p in result["predictions"]]
        assert sorted(p["label"] for p in result["predictions"]) == sorted(LABELS)
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-5
        # the same clip through the transformers door: the same probabilities
        assert [d["label"] for d in door] == [p["label"] for p in result["predictions"]]
        assert np.allclose([d["score"] for d in door], scores, atol=1e-5)


def test_doors_refuse_bad_files_naming_them(
    tmp_path: Path,
    good_videos: dict[str, tuple[Path, np.ndarray]],
    c2d_model: torch.nn.Module,
    classifier: SifaVideoClassificationPipeline,
) -> None:
    files = bad_files(tmp_path, good_videos["mp4_yuv444p"][0])
    for name in ("zero_bytes", "text", "audio_only", "random_bytes"):
        path, problem = files[name]
        door: Callable[[], object]
        for door in (lambda: predict(path, c2d_model, device="cpu"), lambda: classifier(str(path))):
            with pytest.raises(VideoDecodeError, match=problem) as info:
                door()
            assert str(path) in str(info.value)


def test_short_videos_warn_naming_the_file(
    good_videos: dict[str, tuple[Path, np.ndarray]], c2d_model: torch.nn.Module
) -> None:
    path = good_videos["mp4_one_frame"][0]
    with pytest.warns(ShortVideoWarning, match=rf"{path.name}: 1 frame\(s\), fewer than the 8"):
        result = predict(path, c2d_model, device="cpu")
    assert len(result[0]["predictions"]) == 4
    processor = SifaVideoProcessor.from_data_config(data_config(c2d_model))
    with pytest.warns(ShortVideoWarning, match=path.name):
        pixels = processor(str(path), return_tensors="pt")["pixel_values"]  # (1, 8, 3, 32, 32): one frame, 8 times
    assert pixels.shape == (1, 8, 3, 32, 32) and torch.equal(pixels[0, 0], pixels[0, 7])


def test_pipeline_honours_frame_sampling_rate(
    good_videos: dict[str, tuple[Path, np.ndarray]], classifier: SifaVideoClassificationPipeline
) -> None:
    path = str(good_videos["webm_vp9"][0])  # 20 frames: rate 2 spans 15 of them, rate 1 only the middle 8
    processor = classifier.video_processor
    for rate in (1, 2):
        inputs = processor(path, return_tensors="pt", frame_sampling="dense", frame_stride=rate)
        with torch.no_grad():
            expected = classifier.model(**inputs).logits.softmax(-1)[0]
        got = {d["label"]: d["score"] for d in classifier(path, top_k=4, frame_sampling_rate=rate)}
        assert np.allclose([got[label] for label in LABELS], expected.tolist(), atol=1e-6)
    default = processor(path, return_tensors="pt")["pixel_values"]  # uniform sampling
    dense = processor(path, return_tensors="pt", frame_sampling="dense", frame_stride=2)["pixel_values"]
    assert not torch.equal(default, dense)  # so the rate reaches the frames
    for bad in (0, -3, 1.5, "4"):
        with pytest.raises(ValueError, match="frame_sampling_rate must be a positive int"):
            classifier(path, frame_sampling_rate=bad)


def test_pipeline_task_builds_the_sifa_class(c2d_model: torch.nn.Module) -> None:
    from transformers import pipeline

    hf_model = SifaForVideoClassification.from_timm(c2d_model, labels=LABELS)
    processor = SifaVideoProcessor.from_data_config(data_config(c2d_model))
    built = pipeline("video-classification", model=hf_model, video_processor=processor)
    assert type(built) is SifaVideoClassificationPipeline


def test_decode_video_matches_the_reader(good_videos: dict[str, tuple[Path, np.ndarray]]) -> None:
    """`decode_video` (whole file) and the reader agree, and the reader reports what it opened."""
    path, source = good_videos["avi_mpeg4"]
    frames, fps = decode_module.decode_video(path)
    reader = VideoReader(path)
    assert fps == reader.fps == 25.0 and torch.equal(frames, reader.read_all())
    assert repr(reader) == f"VideoReader({str(path)!r}, num_frames={source.shape[0]}, fps=25)"
    with pytest.raises(IndexError, match="out of range"):
        reader.get_frames([source.shape[0]])
