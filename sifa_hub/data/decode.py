"""Video decoding and encoding.

`decode_video` reads every frame of a file into a ``(T, H, W, 3)`` uint8 tensor with PyAV (bundled FFmpeg, the
default) or torchcodec (needs a system FFmpeg; used when requested, or by ``"auto"`` when PyAV is missing). Every
failure — missing, empty, corrupt or truncated file, no video stream, zero frames — becomes one `VideoDecodeError`
that names the file and the problem, so a data loader can log it and move on.

`write_video` encodes frames to an H.264 mp4 with PyAV, atomically (a temporary file, then `os.replace`).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

__all__ = ["VideoDecodeError", "decode_video", "write_video"]

_BACKENDS = ("auto", "pyav", "torchcodec")


class VideoDecodeError(ValueError):
    """A video file could not be decoded; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"cannot decode video {self.path!r}: {problem}")


def _resolve_backend(backend: str) -> str:
    """Map ``"auto"`` to an installed backend and check that a requested one is installed."""
    if backend not in _BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {_BACKENDS}")
    have_pyav = importlib.util.find_spec("av") is not None
    have_torchcodec = importlib.util.find_spec("torchcodec") is not None
    if backend == "auto":
        if have_pyav:
            return "pyav"
        if have_torchcodec:
            return "torchcodec"
        raise ValueError("no video backend installed: install PyAV (`pip install av`) or torchcodec")
    if backend == "pyav" and not have_pyav:
        raise ValueError("video backend 'pyav' requested but PyAV is not installed (`pip install av`)")
    if backend == "torchcodec" and not have_torchcodec:
        raise ValueError("video backend 'torchcodec' requested but torchcodec is not installed")
    return backend


def _decode_pyav(path: str) -> tuple[torch.Tensor, float]:
    """Decode with PyAV; FFmpeg errors become `VideoDecodeError`.

    A truncated file can decode "cleanly" to fewer frames under FFmpeg's frame threading, so truncation is detected
    at the demuxer: a packet flagged corrupt (cut short by the end of the file), or, for mp4/mov whose sample tables
    are exact, fewer packets than the container declares.
    """
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            declared = stream.frames if "mp4" in container.format.name else 0
            frames: list[np.ndarray] = []
            num_packets = 0
            for packet in container.demux(stream):  # ends with an empty packet that flushes the decoder
                if packet.is_corrupt:
                    raise VideoDecodeError(path, f"corrupt or truncated packet after {num_packets} packets")
                num_packets += packet.size > 0
                frames.extend(frame.to_ndarray(format="rgb24") for frame in packet.decode())  # each (H, W, 3)
    except av.error.FFmpegError as err:
        raise VideoDecodeError(path, f"{type(err).__name__}: {err.strerror or err}") from err
    if num_packets < declared:
        raise VideoDecodeError(path, f"truncated: the container declares {declared} frames, {num_packets} are present")
    if not frames:
        raise VideoDecodeError(path, "the video stream holds no decodable frame")
    fps = float(rate) if rate else 0.0
    return torch.from_numpy(np.stack(frames)), fps  # (T, H, W, 3)


def _decode_torchcodec(path: str) -> tuple[torch.Tensor, float]:
    """Decode with torchcodec; its errors become `VideoDecodeError`."""
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(path, dimension_order="NHWC")
        frames = decoder[:]  # (T, H, W, 3) uint8
        fps = decoder.metadata.average_fps
    except (RuntimeError, ValueError) as err:
        raise VideoDecodeError(path, f"{type(err).__name__}: {err}") from err
    if frames.shape[0] == 0:
        raise VideoDecodeError(path, "the video stream holds no decodable frame")
    return frames.contiguous(), float(fps or 0.0)


def decode_video(path: str | os.PathLike, backend: str = "auto") -> tuple[torch.Tensor, float]:
    """Decode every frame of a video file.

    Args:
        path: Video file (any container/codec FFmpeg reads: mp4, webm, avi, mkv, ...).
        backend: ``"pyav"``, ``"torchcodec"`` or ``"auto"`` (PyAV when installed, else torchcodec).

    Returns:
        ``(frames, fps)``: uint8 RGB frames ``(T, H, W, 3)`` and the stream's average frame rate (0.0 when the file
        declares none).

    Raises:
        VideoDecodeError: The file is missing, not a regular file, empty, corrupt or truncated, has no video stream or
            no decodable frame; the message names the file.
        ValueError: Unknown or uninstalled backend.
    """
    backend = _resolve_backend(backend)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoDecodeError(path, "no such file")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "the file is empty (0 bytes)")
    if backend == "pyav":
        return _decode_pyav(path)
    return _decode_torchcodec(path)


def write_video(path: str | os.PathLike, frames_uint8_THWC: torch.Tensor, fps: float = 25.0, *, crf: int = 18) -> None:
    """Encode frames to an H.264 (yuv420p) mp4 with PyAV, atomically.

    The file is written to a temporary name in the destination folder and moved into place with `os.replace`, so
    readers never see a half-written video.

    Args:
        path: Destination ``.mp4`` file; its parent folder must exist.
        frames_uint8_THWC: uint8 RGB frames ``(T, H, W, 3)``; ``H`` and ``W`` must be even (yuv420p chroma).
        fps: Frame rate, > 0.
        crf: x264 constant rate factor (0 = lossless luma, 18 ≈ visually lossless, 51 = worst).
    """
    import av

    frames = frames_uint8_THWC
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '')}"
        raise TypeError(f"frames must be a uint8 torch.Tensor, got {got}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must have shape (T, H, W, 3) with T >= 1, got {tuple(frames.shape)}")
    height, width = int(frames.shape[1]), int(frames.shape[2])
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got H={height}, W={width}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path)
    array = frames.contiguous().numpy()  # (T, H, W, 3)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp_name, "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf)}
            for image in array:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())  # flush the encoder
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
