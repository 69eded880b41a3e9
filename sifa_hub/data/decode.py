"""Video decoding and encoding with PyAV (its wheels bundle FFmpeg; no system FFmpeg needed).

`VideoReader` opens anything FFmpeg opens (mp4/mov, webm/VP9, mkv, avi/mpeg4, gif, grayscale, yuv444p, one-frame
and odd-sized videos) and decodes only the frames it is asked for:

* **Frame positions come from the stream, not from the container's header.** Opening a file demuxes its video
  packets once (reading, not decoding) and keeps each frame's presentation timestamp and the keyframes, so
  containers that declare no frame count (webm, mkv) have an exact one, and frame ``i`` is the ``i``-th frame in
  display order.
* **Seeking instead of decoding everything:** to reach a frame, the reader seeks to the keyframe before it (unless
  decoding on from where it is is shorter) and decodes forward to that timestamp; frames not asked for are never
  converted to RGB or kept. Memory stays flat whatever the video's length. Where timestamps are missing or a seek
  lands elsewhere, it falls back to one sequential pass (still keeping only the frames asked for).
* **Display rotation is honoured:** a display matrix (phone videos, the old ``rotate`` tag) turns the frames upright
  (multiples of 90°); mirroring in the matrix is not applied.

Every failure — a missing, non-regular, empty, truncated or corrupt file, one without a video stream, text that
FFmpeg would render as ANSI art, no decodable frame — is one `VideoDecodeError` whose message starts with the path
(``clip.webm: no video stream``), so a data loader can log it and move on.

`decode_video` reads a whole file into memory (small clips, tests); `write_video` encodes an H.264 mp4 atomically.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.io import atomic_path

__all__ = ["VideoDecodeError", "VideoReader", "decode_video", "write_video"]

_BACKENDS = ("auto", "pyav")
# FFmpeg's "tty" demuxer family turns any text file into a video of rendered characters: not a video to classify
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


class VideoDecodeError(ValueError):
    """A video file could not be decoded; the message is ``<path>: <problem>``."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class _NeedSequentialPass(Exception):
    """Seeking cannot locate a frame by timestamp in this file: decode it in one pass instead."""


def _check_backend(backend: str) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {_BACKENDS}")


def _check_file(path: str) -> None:
    """Refuse what cannot be a video file before FFmpeg sees it (a FIFO or device could block forever)."""
    if not os.path.exists(path):
        raise VideoDecodeError(path, "no such file")
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "the file is empty (0 bytes)")


def _ffmpeg_error(path: str, err: Exception) -> VideoDecodeError:
    reason = getattr(err, "strerror", None) or str(err)
    problem = f"not a readable video: truncated, corrupt or not a video ({type(err).__name__}: {reason})"
    return VideoDecodeError(path, problem)


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded ``(H, W, 3)`` image by its display rotation (degrees counter-clockwise, FFmpeg's sign)."""
    quarter_turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


class VideoReader:
    """Random access to the frames of one video file.

    Args:
        path: The video file.

    Attributes:
        path: The file, as given.
        num_frames: Frames in the video stream (counted from its packets, exact even when the container declares
            none).
        fps: Average frame rate (0.0 when the file declares none).

    Raises:
        VideoDecodeError: The file is missing, empty, not a video, truncated or corrupt (the message names it).

    Example::

        with VideoReader("clip.webm") as reader:
            frames = reader.get_frames([0, 10, 20])  # uint8 (3, H, W, 3), upright
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import av

        self._av = av
        self.path = os.fspath(path)
        _check_file(self.path)
        self._container: Any = None
        self._pts: list[int] = []  # presentation timestamps of the frames, display order
        self._keyframes: list[int] = []  # sorted timestamps of the keyframes
        self._timestamps_complete = True
        with self._open() as container:
            stream = self._video_stream(container)
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else 0.0
            self._scan(container, stream)
        self.num_frames = len(self._pts) if self._timestamps_complete else self._num_packets

    def _open(self) -> Any:
        try:
            return self._av.open(self.path, metadata_errors="ignore")
        except (self._av.error.FFmpegError, UnicodeDecodeError) as err:
            raise _ffmpeg_error(self.path, err) from err

    def _video_stream(self, container: Any) -> Any:
        if not container.streams.video:
            raise VideoDecodeError(self.path, "no video stream")
        stream = container.streams.video[0]
        if container.format.name == "tty" or stream.codec_context.name in _TEXT_CODECS:
            raise VideoDecodeError(self.path, f"not a video (FFmpeg reads it as text: {container.format.name})")
        return stream

    def _scan(self, container: Any, stream: Any) -> None:
        """Index the stream's packets; a cut or corrupt file shows up here (even under frame threading)."""
        num_packets = 0
        try:
            for packet in container.demux(stream):  # ends with an empty packet that flushes the decoder
                if packet.is_corrupt:
                    raise VideoDecodeError(self.path, f"corrupt or truncated packet after {num_packets} packets")
                if packet.size == 0:
                    continue
                num_packets += 1
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    self._timestamps_complete = False
                    continue
                self._pts.append(stamp)
                if packet.is_keyframe:
                    self._keyframes.append(stamp)
        except self._av.error.FFmpegError as err:
            raise _ffmpeg_error(self.path, err) from err
        declared = stream.frames if "mp4" in container.format.name else 0  # mp4/mov sample tables are exact
        if num_packets < declared:
            raise VideoDecodeError(
                self.path, f"truncated: the container declares {declared} frames, {num_packets} are present"
            )
        if num_packets == 0:
            raise VideoDecodeError(self.path, "the video stream holds no frame")
        self._check_duration(container, stream)
        self._num_packets = num_packets
        self._pts.sort()
        self._keyframes.sort()
        if len(set(self._pts)) != len(self._pts):
            self._timestamps_complete = False

    def _check_duration(self, container: Any, stream: Any) -> None:
        """Refuse a stream that ends well before the duration its container declares (a cut webm/mkv/avi, whose
        headers give no exact frame count): more than 10% and two frames short."""
        if not self._pts or not self.fps or stream.time_base is None:
            return
        if stream.duration:
            declared = float(stream.duration * stream.time_base)
        elif container.duration and len(container.streams) == 1:  # another stream may outlast the video
            declared = container.duration / 1_000_000  # AV_TIME_BASE
        else:
            return
        start = stream.start_time if stream.start_time is not None else min(self._pts)
        end = float((max(self._pts) - start) * stream.time_base) + 1 / self.fps
        if end < declared - max(2 / self.fps, 0.1 * declared):
            raise VideoDecodeError(
                self.path, f"truncated: the video stream ends at {end:.2f} s, the container declares {declared:.2f} s"
            )

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder (reading again reopens the file)."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:g})"

    def _rgb(self, frame: Any, size: list[tuple[int, int]]) -> np.ndarray:
        """A decoded frame as upright uint8 ``(H, W, 3)``; every frame gets the first one's size."""
        if not size:
            size.append((frame.width, frame.height))
        width, height = size[0]
        image = frame.to_ndarray(format="rgb24", width=width, height=height)  # (H, W, 3)
        return _upright(image, int(frame.rotation or 0))

    def _fresh(self) -> tuple[Any, Any]:
        self.close()
        self._container = self._open()
        return self._container, self._container.streams.video[0]

    def _decode_seeking(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Frames ``wanted`` (sorted, distinct) by timestamp, seeking to the keyframe before each when that saves
        decoding; raises `_NeedSequentialPass` when the file's timestamps do not lead to the frames."""
        container, stream = self._fresh()
        stream.thread_type = "AUTO"
        out: dict[int, np.ndarray] = {}
        size: list[tuple[int, int]] = []
        frames: Iterator[Any] | None = None
        last = None  # timestamp of the last decoded frame
        for index in wanted:
            target = self._pts[index]
            key = self._keyframes[max(bisect.bisect_right(self._keyframes, target) - 1, 0)] if self._keyframes else 0
            if frames is None or last is None or key > last:
                if frames is not None or key > self._pts[0]:
                    container.seek(key, stream=stream, backward=True, any_frame=False)
                frames = iter(container.decode(stream))
            for frame in frames:
                if frame.pts is None:
                    raise _NeedSequentialPass
                last = frame.pts
                if last >= target:
                    break
            else:
                raise _NeedSequentialPass
            if last != target:
                raise _NeedSequentialPass
            out[index] = self._rgb(frame, size)
        return out

    def _decode_sequential(self, wanted: list[int]) -> dict[int, np.ndarray]:
        """Frames ``wanted`` (sorted, distinct) by their position in one pass over the file."""
        container, stream = self._fresh()
        stream.thread_type = "AUTO"
        out: dict[int, np.ndarray] = {}
        size: list[tuple[int, int]] = []
        todo = set(wanted)
        position = -1
        for position, frame in enumerate(container.decode(stream)):
            if position in todo:
                out[position] = self._rgb(frame, size)
                if len(out) == len(todo):
                    break
        if len(out) < len(todo):
            raise VideoDecodeError(
                self.path, f"only {position + 1} of the {self.num_frames} frames could be decoded (truncated?)"
            )
        return out

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode the frames at ``indices`` (display order, any order, repeats allowed).

        Args:
            indices: Frame positions in ``[0, num_frames)``.

        Returns:
            uint8 RGB frames ``(len(indices), H, W, 3)``, upright (display rotation applied).

        Raises:
            IndexError: An index is out of range.
            VideoDecodeError: A frame could not be decoded.
        """
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError(f"{self.path}: no frame indices given")
        bad = [i for i in indices if not 0 <= i < self.num_frames]
        if bad:
            raise IndexError(f"{self.path}: frame indices {bad[:5]} out of range for {self.num_frames} frames")
        wanted = sorted(set(indices))
        try:
            try:
                if not self._timestamps_complete:
                    raise _NeedSequentialPass
                decoded = self._decode_seeking(wanted)
            except _NeedSequentialPass:
                decoded = self._decode_sequential(wanted)
        except self._av.error.FFmpegError as err:
            raise _ffmpeg_error(self.path, err) from err
        finally:
            self.close()
        return torch.from_numpy(np.stack([decoded[i] for i in indices]))  # (N, H, W, 3)

    def get_clips(self, clips: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Decode several clips at once, each distinct frame once.

        Args:
            clips: Frame indices of each clip.

        Returns:
            One uint8 ``(len(clip), H, W, 3)`` tensor per clip.
        """
        wanted = sorted({int(i) for clip in clips for i in clip})
        frames = self.get_frames(wanted)  # (N, H, W, 3)
        row = {index: k for k, index in enumerate(wanted)}
        return [frames[[row[int(i)] for i in clip]] for clip in clips]

    def read_all(self) -> torch.Tensor:
        """Every frame, uint8 ``(num_frames, H, W, 3)`` (only for short videos: it holds them all in memory)."""
        return self.get_frames(range(self.num_frames))


def decode_video(path: str | os.PathLike[str], backend: str = "auto") -> tuple[torch.Tensor, float]:
    """Decode every frame of a video file into memory (see `VideoReader` to decode only some).

    Args:
        path: Video file (any container/codec FFmpeg reads: mp4, webm, avi, mkv, gif, ...).
        backend: ``"pyav"`` or ``"auto"`` (the same: PyAV is the one decoder).

    Returns:
        ``(frames, fps)``: uint8 RGB frames ``(T, H, W, 3)``, upright, and the stream's average frame rate (0.0 when
        the file declares none).

    Raises:
        VideoDecodeError: The file is missing, not a regular file, empty, corrupt or truncated, has no video stream or
            no decodable frame; the message names the file.
        ValueError: Unknown backend.
    """
    _check_backend(backend)
    with VideoReader(path) as reader:
        return reader.read_all(), reader.fps


def write_video(
    path: str | os.PathLike[str], frames_uint8_THWC: torch.Tensor, fps: float = 25.0, *, crf: int = 18
) -> None:
    """Encode frames to an H.264 (yuv420p) mp4 with PyAV, atomically (`sifa_hub.utils.io.atomic_path`).

    Args:
        path: Destination ``.mp4`` file.
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
    array = frames.contiguous().numpy()  # (T, H, W, 3)
    with atomic_path(Path(path)) as tmp, av.open(tmp, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for image in array:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
