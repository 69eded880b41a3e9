"""Tests for sifa_hub.data: decoding, sampling, transforms, datasets and the embedded motion set."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sifa_hub.data import (
    MOTION_CLASSES,
    MOTION_PAIRS,
    TRANSLATION_CLASSES,
    ClipTransform,
    MotionDataset,
    ShortVideoWarning,
    VideoDecodeError,
    VideoFolderDataset,
    VideoListDataset,
    build_transform,
    decode_video,
    dense_indices,
    multi_clip_indices,
    multi_crop_views,
    multi_uniform_indices,
    render_motion_clips,
    uniform_indices,
    write_motion_dataset,
    write_video,
)


def moving_bar(num_frames: int = 12, height: int = 32, width: int = 48, step: int = 3) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)``: a white vertical bar moving right by ``step`` px per frame over a dark gradient."""
    video = torch.zeros(num_frames, height, width, 3, dtype=torch.uint8)
    video[..., 2] = torch.linspace(0, 80, width).to(torch.uint8)  # a blue gradient, so frames are not flat
    for t in range(num_frames):
        video[t, :, t * step : t * step + 6] = 255
    return video


@pytest.fixture(scope="module")
def bar_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "bar.mp4"
    write_video(path, moving_bar(), fps=24.0)
    return path


# --------------------------------------------------------------------------------------------------------------------
# decoding


def test_write_and_decode_roundtrip(bar_mp4: Path) -> None:
    frames, fps = decode_video(bar_mp4)
    expected = moving_bar()
    assert frames.dtype == torch.uint8 and frames.shape == expected.shape
    assert fps == pytest.approx(24.0)
    assert (frames.float() - expected.float()).abs().mean() < 4.0  # lossy H.264 at crf 18
    # The bar is where it was drawn in every frame: its column profile peaks at the bar's centre.
    profile = frames.float().mean(dim=(1, 3))  # (T, W)
    assert profile.argmax(dim=1).sub(torch.arange(12) * 3 + 2.5).abs().max() <= 3


def test_write_video_is_atomic_and_validates(tmp_path: Path) -> None:
    write_video(tmp_path / "a.mp4", moving_bar(4))
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temporary file left
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "b.mp4", torch.zeros(2, 31, 32, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        write_video(tmp_path / "b.mp4", torch.zeros(2, 32, 32, 3))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        write_video(tmp_path / "b.mp4", torch.zeros(2, 32, 32, dtype=torch.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


def make_bad_files(folder: Path, good_mp4: Path) -> dict[str, Path]:
    """Missing, empty, random-bytes and half-cut video files."""
    data = good_mp4.read_bytes()
    files = {
        "missing": folder / "missing.mp4",
        "empty": folder / "empty.mp4",
        "corrupt": folder / "corrupt.mp4",
        "truncated": folder / "truncated.mp4",
    }
    files["empty"].write_bytes(b"")
    files["corrupt"].write_bytes(np.random.default_rng(0).bytes(4000))
    files["truncated"].write_bytes(data[: len(data) // 2])
    return files


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "truncated"])
def test_bad_files_raise_video_decode_error(tmp_path: Path, bar_mp4: Path, kind: str) -> None:
    path = make_bad_files(tmp_path, bar_mp4)[kind]
    with pytest.raises(VideoDecodeError, match=path.name) as info:
        decode_video(path)
    assert isinstance(info.value, ValueError) and info.value.path == str(path)


def test_truncated_faststart_mp4_detected(tmp_path: Path) -> None:
    """moov at the front: the file opens, and the cut shows up while demuxing (even under frame threading)."""
    import av

    path = tmp_path / "faststart.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(24):
            image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    assert decode_video(path)[0].shape[0] == 24
    data = path.read_bytes()
    for fraction in (0.3, 0.6, 0.95):
        cut = tmp_path / f"cut{fraction}.mp4"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(VideoDecodeError, match=cut.name):
            decode_video(cut)


def test_decode_backend_validation(bar_mp4: Path) -> None:
    with pytest.raises(ValueError, match="unknown video backend"):
        decode_video(bar_mp4, backend="opencv")
    assert decode_video(bar_mp4, backend="pyav")[0].shape[0] == 12


# --------------------------------------------------------------------------------------------------------------------
# sampling


def test_dense_indices_long_and_short_videos() -> None:
    assert dense_indices(100, 8, 4, mode="center") == [35 + 4 * i for i in range(8)]
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(50):
        idx = dense_indices(40, 4, 3, mode="random", generator=gen)
        assert np.all(np.diff(idx) == 3) and idx[0] >= 0 and idx[-1] < 40
        starts.add(idx[0])
    assert len(starts) > 10  # random starts spread over [0, 30]
    # Too short: start at 0 and pad with the last frame (never loop back).
    assert dense_indices(10, 8, 4, mode="random") == [0, 4, 8, 9, 9, 9, 9, 9]
    assert dense_indices(1, 3, 1, mode="center") == [0, 0, 0]
    with pytest.raises(ValueError, match="num_video_frames"):
        dense_indices(0, 8, 1, mode="center")
    with pytest.raises(ValueError, match="mode"):
        dense_indices(10, 8, 1, mode="middle")


def test_uniform_indices() -> None:
    assert uniform_indices(80, 8, mode="center") == [5 + 10 * i for i in range(8)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        idx = uniform_indices(80, 8, mode="random", generator=gen)
        assert all(10 * i <= j < 10 * (i + 1) for i, j in enumerate(idx))
    short = uniform_indices(5, 8, mode="random", generator=gen)
    assert len(short) == 8 and min(short) >= 0 and max(short) <= 4 and np.all(np.diff(short) >= 0)
    with pytest.raises(ValueError, match="num_segments"):
        uniform_indices(10, 0, mode="center")


def test_multi_clip_indices() -> None:
    clips = multi_clip_indices(100, 8, 4, 3)
    assert [c[0] for c in clips] == [0, 36, 71] and clips[-1][-1] == 99
    assert multi_clip_indices(100, 8, 4, 1) == [dense_indices(100, 8, 4, mode="center")]
    assert multi_clip_indices(5, 4, 2, 2) == [[0, 2, 4, 4]] * 2  # short video: identical padded clips
    views = multi_uniform_indices(80, 4, 2)
    assert views == [[5, 25, 45, 65], [15, 35, 55, 75]]
    with pytest.raises(ValueError, match="num_clips"):
        multi_clip_indices(100, 8, 4, 0)


# --------------------------------------------------------------------------------------------------------------------
# transforms


def test_build_transform_shapes_and_normalisation() -> None:
    video = moving_bar(6, 40, 60)  # (T, H, W, 3)
    train = build_transform(train=True, size=32, short_side=36)
    out = train(video)
    assert out.shape == (3, 6, 32, 32) and out.dtype == torch.float32
    evaluate = build_transform(train=False, size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out_thwc = evaluate(video)
    out_tchw = evaluate(video.permute(0, 3, 1, 2))
    assert torch.equal(out_thwc, out_tchw) and out_thwc.shape == (3, 6, 32, 32)
    assert out_thwc.min() >= 0.0 and out_thwc.max() <= 1.0
    # No resize needed and a centred crop: the result is the centre of the input, scaled to [0, 1].
    same = build_transform(train=False, size=40, mean=(0.0,) * 3, std=(1.0,) * 3)(video)
    expected = video[:, :, 10:50].permute(3, 0, 1, 2).float() / 255
    assert torch.allclose(same, expected, atol=1e-6)
    with pytest.raises(ValueError, match="short_side"):
        build_transform(train=True, size=32, short_side=16)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        train(torch.zeros(4, 5, 6, dtype=torch.uint8))


def test_eval_transform_is_the_clip_pipeline() -> None:
    """``build_transform(train=False)`` is `ClipTransform`: short side ``floor(size / crop_pct)``, one crop rule."""
    evaluate = build_transform(train=False, size=32, crop_pct=0.875)
    assert isinstance(evaluate, ClipTransform) and evaluate.short_side == 36 and evaluate.crop == (32, 32)
    video = moving_bar(4, 40, 60)
    assert torch.equal(evaluate(video), ClipTransform((32, 32), 36, evaluate.mean, evaluate.std)(video))
    with pytest.raises(ValueError, match="not both"):
        build_transform(train=False, size=32, short_side=40, crop_pct=0.875)
    with pytest.raises(TypeError, match="uint8"):
        evaluate(video.float())


def test_datasets_warn_about_short_videos(tmp_path: Path, bar_mp4: Path) -> None:
    list_file = tmp_path / "list.txt"
    list_file.write_text(f"{bar_mp4} 0\n")
    for train in (False, True):
        dataset = VideoListDataset(list_file, num_frames=16, train=train, skip_bad=False)
        with pytest.warns(ShortVideoWarning, match=rf"{bar_mp4.name}: 12 frame\(s\), fewer than the 16"):
            video, _ = dataset[0]
        assert video.shape == (3, 16, 32, 48) and torch.equal(video[:, -1], video[:, -2])  # last frame repeated


def test_train_transform_shares_crop_and_flip_across_frames() -> None:
    """A static clip stays static: random crop/flip parameters are drawn once per clip."""
    frame = torch.randint(0, 256, (1, 40, 52, 3), dtype=torch.uint8)
    out = build_transform(train=True, size=32)(frame.expand(5, -1, -1, -1))
    assert torch.equal(out, out[:, :1].expand_as(out))


def test_multi_crop_views() -> None:
    video = torch.arange(2 * 3 * 4 * 10, dtype=torch.float32).view(2, 3, 4, 10)  # (C, T, H, W)
    views = multi_crop_views(video, 4, num_crops=3)
    assert [v.shape for v in views] == [(2, 3, 4, 4)] * 3
    assert [int(v[0, 0, 0, 0]) for v in views] == [0, 3, 6]  # left / centre / right
    tall = multi_crop_views(video.transpose(-1, -2), 4, num_crops=2)
    assert torch.equal(tall[1], video.transpose(-1, -2)[..., 6:10, :])
    with pytest.raises(ValueError, match="size"):
        multi_crop_views(video, 5)


# --------------------------------------------------------------------------------------------------------------------
# datasets over files


@pytest.fixture(scope="module")
def motion_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("motion")
    list_file = write_motion_dataset(root, 16, seed=3, split_name="val", classes=TRANSLATION_CLASSES)
    return root, list_file


def test_write_motion_dataset_and_list_dataset(motion_root: tuple[Path, Path]) -> None:
    root, list_file = motion_root
    assert list_file == root / "val.txt"
    lines = list_file.read_text().splitlines()
    assert len(lines) == 16 and lines[0] == "val/left/000000.mp4 0" and lines[5] == "val/right/000005.mp4 1"
    assert (root / "classes.txt").read_text().split() == list(TRANSLATION_CLASSES)
    reference = MotionDataset(16, seed=3, classes=4)
    frames, _ = decode_video(root / "val/up/000002.mp4")
    assert frames.shape == (8, 32, 32, 3)
    # H.264 yuv420p drops the pixel-level chroma grain; at 4x4 blocks the decoded clip matches the rendered one.
    decoded, same, other = (
        torch.nn.functional.avg_pool2d(x.float().permute(0, 3, 1, 2), 4)
        for x in (frames, reference.clip_uint8(2), reference.clip_uint8(3))
    )
    assert (decoded - same).abs().mean() < 6 < 12 < (other - same).abs().mean()
    dataset = VideoListDataset(list_file, num_frames=8, classes=TRANSLATION_CLASSES, train=False)
    assert len(dataset) == 16 and dataset.classes == list(TRANSLATION_CLASSES)
    video, label = dataset[6]
    assert video.shape == (3, 8, 32, 32) and label == 2 and video.min() >= 0 and video.max() <= 1


def test_list_dataset_label_names_and_errors(tmp_path: Path, bar_mp4: Path) -> None:
    list_file = tmp_path / "list.txt"
    list_file.write_text(f"# comment\n{bar_mp4} walking\n\n{bar_mp4} jumping\n")
    dataset = VideoListDataset(list_file, num_frames=4, stride=2)
    assert dataset.classes == ["jumping", "walking"] and [s[1] for s in dataset.samples] == [1, 0]
    list_file.write_text(f"{bar_mp4} 7\n")
    with pytest.raises(ValueError, match="out of range"):
        VideoListDataset(list_file, num_frames=4, classes=["a", "b"])
    list_file.write_text(f"{bar_mp4}\n")
    with pytest.raises(ValueError, match=r"list.txt:1"):
        VideoListDataset(list_file, num_frames=4)


def test_folder_dataset_multi_clip_uniform(motion_root: tuple[Path, Path]) -> None:
    root, _ = motion_root
    dataset = VideoFolderDataset(root / "val", num_frames=4, sampling="uniform", train=False, num_clips=2)
    assert dataset.classes == sorted(TRANSLATION_CLASSES) and len(dataset) == 16
    video, label = dataset[0]
    assert video.shape == (2, 3, 4, 32, 32) and dataset.classes[label] == "down"
    with pytest.raises(ValueError, match="num_clips"):
        VideoFolderDataset(root / "val", num_frames=4, train=True, num_clips=2)
    with pytest.raises(ValueError, match="not a folder"):
        VideoFolderDataset(root / "nope", num_frames=4)


def test_skip_bad_counts_and_never_crashes(tmp_path: Path, bar_mp4: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "a.mp4").write_bytes(bar_mp4.read_bytes())
    bad = make_bad_files(tmp_path / "good", bar_mp4)
    assert sum(p.exists() for p in bad.values()) == 3  # the missing one is only listed
    list_file = tmp_path / "list.txt"
    list_file.write_text("".join(f"{p} 0\n" for p in [*bad.values(), tmp_path / "good" / "a.mp4"]))
    transform = build_transform(train=True, size=24, flip=False)
    dataset = VideoListDataset(list_file, num_frames=4, stride=2, transform=transform)
    with caplog.at_level(logging.WARNING, logger="sifa_hub.data.datasets"):
        batch = [dataset[i] for i in range(len(dataset))]
    assert all(video.shape == (3, 4, 24, 24) for video, _ in batch)
    assert len(dataset.bad_paths) == 4 and sum("skipping a bad video" in r.message for r in caplog.records) == 4
    assert dataset.num_skipped == 4 + 3 + 2 + 1  # every replacement walks over the known bad files
    loader = torch.utils.data.DataLoader(dataset, batch_size=5)
    videos, labels = next(iter(loader))
    assert videos.shape == (5, 3, 4, 24, 24) and labels.tolist() == [0] * 5
    strict = VideoListDataset(list_file, num_frames=4, skip_bad=False)
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        strict[0]
    folder = VideoFolderDataset(tmp_path, num_frames=4)  # class "good": a, corrupt, empty, truncated
    assert len(folder) == 4 and all(folder[i][0].shape == (3, 4, 32, 48) for i in range(4))
    assert folder.num_skipped == 3 + 2 + 1


def test_skip_bad_all_bad_raises(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.mp4").write_bytes(b"")
    dataset = VideoFolderDataset(tmp_path, num_frames=2)
    with pytest.raises(VideoDecodeError, match="no decodable video"):
        dataset[0]


# --------------------------------------------------------------------------------------------------------------------
# the motion dataset


def test_motion_classes_are_time_reversal_pairs() -> None:
    assert len(MOTION_CLASSES) == 8 and tuple(c for pair in MOTION_PAIRS for c in pair) == MOTION_CLASSES
    assert TRANSLATION_CLASSES == ("left", "right", "up", "down")
    assert MotionDataset(8).pairs == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert MotionDataset(8, classes=TRANSLATION_CLASSES).pairs == [(0, 1), (2, 3)]


def test_motion_dataset_deterministic_and_balanced() -> None:
    a = MotionDataset(24, seed=5)
    b = MotionDataset(24, seed=5)
    c = MotionDataset(24, seed=6)
    video, label = a[9]
    assert video.shape == (3, 8, 32, 32) and video.dtype == torch.float32 and label == 1
    assert torch.equal(video, b[9][0]) and not torch.equal(a.clip_uint8(9), c.clip_uint8(9))
    assert torch.equal(a.clips_uint8([3, 9, 17])[1], a.clip_uint8(9))  # batched == one by one
    assert np.bincount([a[i][1] for i in range(24)]).tolist() == [3] * 8
    assert a.num_classes == 8 and a.classes == list(MOTION_CLASSES)
    assert np.bincount([MotionDataset(24, classes=4).label(i) for i in range(24)]).tolist() == [6] * 4
    # Normalisation with the dataset's mean / std.
    raw = MotionDataset(24, seed=5, normalize=False)[9][0]
    mean, std = torch.tensor(a.mean).view(3, 1, 1, 1), torch.tensor(a.std).view(3, 1, 1, 1)
    assert torch.allclose(video, (raw - mean) / std, atol=1e-5)
    assert torch.equal(a[-1][0], a[23][0])
    with pytest.raises(IndexError):
        a[24]


def test_motion_statistics_match_declared_mean_std() -> None:
    dataset = MotionDataset(256, seed=11)
    pixels = dataset.clips_uint8(range(256)).float().div(255).reshape(-1, 3)
    assert torch.allclose(pixels.mean(0), torch.tensor(dataset.mean), atol=0.03)
    assert torch.allclose(pixels.std(0), torch.tensor(dataset.std), atol=0.03)


def test_motion_class_subsets() -> None:
    assert MotionDataset(4, classes=4).classes == ["left", "right", "up", "down"]
    subset = MotionDataset(4, classes=("clockwise", "anticlockwise", "left"))
    assert subset.num_classes == 3 and subset.pairs == [(0, 1)]
    with pytest.raises(ValueError, match="unknown motion classes"):
        MotionDataset(4, classes=("left", "sideways"))
    with pytest.raises(ValueError, match="count"):
        MotionDataset(4, classes=9)
    with pytest.raises(ValueError, match="num_frames"):
        MotionDataset(4, num_frames=1)


@pytest.mark.parametrize("pair", MOTION_PAIRS)
def test_motion_pair_clips_are_exact_time_reversals(pair: tuple[str, str]) -> None:
    """Same random state: the second class of a pair renders the first one's clip played backwards."""
    rngs = [np.random.default_rng([7, 1]), np.random.default_rng([7, 1])]
    first, second = render_motion_clips(list(pair), rngs, num_frames=6, size=24)
    assert torch.equal(second, first.flip(0))
    assert not torch.equal(first, first.flip(0))  # the motion is visible: the clip is not its own reversal


def test_motion_frame_sets_match_within_pairs() -> None:
    """Frame-set statistics (time-pooled) of the two classes of a pair have the same distribution."""
    dataset = MotionDataset(8 * 48, seed=2, normalize=False)
    clips = dataset.clips_uint8(range(len(dataset))).float()  # (N, T, S, S, 3)
    labels = torch.arange(len(dataset)) % 8
    # A time-pooled, frame-wise statistic: mean over frames of each frame's per-channel spatial std.
    stat = clips.std(dim=(2, 3)).mean(dim=1)  # (N, 3)
    for a, b in dataset.pairs:
        diff = (stat[labels == a].mean(0) - stat[labels == b].mean(0)).abs()
        assert (diff < 4 * stat.std(0) / 48**0.5).all()
    # The motion itself differs: the centroid of what moves drifts left / right / up / down as labelled.
    gray = clips.mean(-1)  # (N, T, S, S)
    moving = (gray - gray.median(dim=1).values[:, None]).abs()  # (N, T, S, S), distance from the static background
    mass = moving.sum((2, 3)).clamp_min(1e-6)  # (N, T)
    coords = torch.arange(32.0)
    cx = (moving.sum(2) * coords).sum(-1) / mass  # (N, T)
    cy = (moving.sum(3) * coords).sum(-1) / mass
    dx, dy = cx[:, -1] - cx[:, 0], cy[:, -1] - cy[:, 0]  # (N,)
    assert (dx[labels == 0] < 0).all() and (dx[labels == 1] > 0).all()  # left, right
    assert (dy[labels == 2] < 0).all() and (dy[labels == 3] > 0).all()  # up, down (y points down)
