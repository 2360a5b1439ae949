"""Frame sampling and media decoding: every item becomes exactly `NUM_FRAMES` RGB frames.

A product-page image is repeated; a video file (decoded with PyAV) or a folder of frame images
(sorted by name) is sampled at the middle of `num_segments` equal segments, short clips padded
by repeating their last frame (DESIGN.md §1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image

NUM_FRAMES = 8
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi")


class MediaError(ValueError):
    """A media file or folder that cannot be read; the message names the path and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds on one media item's decoding, checked before decoding (the file's own header) and
    during it (each frame): pixels per frame, frames, seconds of video and wall-clock seconds.
    A media item over a bound is a `MediaError` naming the bound."""

    max_pixels: int = 4096 * 4096
    max_frames: int = 10_000
    max_video_s: float = 600.0
    max_wall_s: float = 10.0

    def deadline(self) -> float:
        return time.monotonic() + self.max_wall_s

    def check_pixels(self, path: Path, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise MediaError(path, f"{width}x{height} pixels per frame, over the limit of {self.max_pixels:,}")

    def check_frames(self, path: Path, frames: int) -> None:
        if frames > self.max_frames:
            raise MediaError(path, f"{frames:,} frames, over the limit of {self.max_frames:,}")

    def check_time(self, path: Path, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise MediaError(path, f"decoding took longer than the limit of {self.max_wall_s:g} s")


def is_image(path: Path) -> bool:
    """True when the file name has an image suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path) -> bool:
    """True when the file name has a video suffix."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def segment_midpoints(num_frames: int, num_segments: int = NUM_FRAMES) -> list[int]:
    """Indices of the middle frame of `num_segments` equal segments; pads with the last frame."""
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if num_segments <= 0:
        raise ValueError(f"num_segments must be positive, got {num_segments}")
    if num_frames < num_segments:
        return list(range(num_frames)) + [num_frames - 1] * (num_segments - num_frames)
    # floor((i + 0.5) * n / s) in exact integer arithmetic.
    return [(2 * i + 1) * num_frames // (2 * num_segments) for i in range(num_segments)]


def load_frames(path: str | Path, num_segments: int = NUM_FRAMES, limits: DecodeLimits | None = None) -> list[Image.Image]:
    """`num_segments` RGB frames of an image, a video file or a folder of frame images, within
    ``limits`` when given (a query's media; the pipeline's own data is checked by its validation)."""
    path = Path(path)
    deadline = None if limits is None else limits.deadline()
    if path.is_dir():
        files = frame_files(path)
        if limits is not None:
            limits.check_frames(path, len(files))
        return [_open_image(files[i], limits, deadline) for i in segment_midpoints(len(files), num_segments)]
    if not path.exists():
        raise MediaError(path, "file not found")
    if is_image(path):
        return [_open_image(path, limits, deadline)] * num_segments
    if is_video(path):
        return _video_frames(path, num_segments, limits, deadline)
    raise MediaError(path, f"unsupported media type {path.suffix!r}")


def frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder, sorted by name; MediaError when there are none."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and is_image(p)), key=lambda p: p.name)
    if not files:
        raise MediaError(folder, "folder holds no frame images")
    return files


def _open_image(path: Path, limits: DecodeLimits | None = None, deadline: float = 0.0) -> Image.Image:
    try:
        with Image.open(path) as image:  # reads the header only: the size is known before any pixel is decoded
            if limits is not None:
                limits.check_pixels(path, *image.size)
                limits.check_time(path, deadline)
            return image.convert("RGB")
    except MediaError:
        raise
    except FileNotFoundError as error:
        raise MediaError(path, "file not found") from error
    except Exception as error:  # PIL raises many types for bad files
        raise MediaError(path, f"cannot read image: {error}") from error


def _video_stream(path: Path, container: av.container.InputContainer) -> av.VideoStream:
    if not container.streams.video:
        raise MediaError(path, "no video stream")
    return container.streams.video[0]


def _count_packets(path: Path) -> int:
    """Video packets the file really holds (demuxed, not decoded)."""
    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(_video_stream(path, container)) if packet.size)


def _count_frames(path: Path, watch=None) -> int:
    count = 0
    with av.open(str(path)) as container:
        for frame in container.decode(_video_stream(path, container)):
            if watch is not None:
                watch(frame, count)
            count += 1
    return count


def _within(path: Path, frame: av.VideoFrame, index: int, limits: DecodeLimits, deadline: float) -> None:
    """The bounds a decoded frame may break: its size, the frame count, the wall-clock deadline."""
    limits.check_pixels(path, frame.width, frame.height)
    limits.check_frames(path, index + 1)
    limits.check_time(path, deadline)


def _check_stream(path: Path, stream: av.VideoStream, limits: DecodeLimits) -> None:
    """The bounds the container's header already shows: frame size, frame count, duration."""
    limits.check_pixels(path, stream.codec_context.width, stream.codec_context.height)
    limits.check_frames(path, stream.frames)
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
        if seconds > limits.max_video_s:
            raise MediaError(path, f"{seconds:.0f} s of video, over the limit of {limits.max_video_s:g} s")


def _video_frames(
    path: Path, num_segments: int, limits: DecodeLimits | None = None, deadline: float = 0.0
) -> list[Image.Image]:
    """Frames at the segment midpoints of a video, converting only the selected ones (bounded memory).

    One decoding pass when the stream's frame count (container metadata) is right, which is checked
    against the frames really decoded; a file holding fewer packets than its index lists is
    truncated (MediaError); otherwise two passes: count the frames, then convert.
    """
    watch = None if limits is None else (lambda frame, index: _within(path, frame, index, limits, deadline))
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(path, container)
            if limits is not None:
                _check_stream(path, stream, limits)
            hint = stream.frames
            if hint > 0:
                wanted = segment_midpoints(hint, num_segments)
                selected, count = _decode_selected(container.decode(stream), set(wanted), watch=watch)
                if count == hint:
                    return [selected[i] for i in wanted]
        stored = _count_packets(path)
        if 0 < stored < hint:
            raise MediaError(path, f"truncated: its index lists {hint} frames, the file holds {stored}")
        count = _count_frames(path, watch)
        if count == 0:
            raise MediaError(path, "no video frames")
        wanted = segment_midpoints(count, num_segments)
        with av.open(str(path)) as container:
            frames = container.decode(_video_stream(path, container))
            selected, _ = _decode_selected(frames, set(wanted), stop=wanted[-1], watch=watch)
    except (av.FFmpegError, OSError, EOFError) as error:
        raise MediaError(path, f"cannot decode video: {error}") from error
    if len(selected) != len(set(wanted)):
        raise MediaError(path, "video decoded differently on the second pass")
    return [selected[i] for i in wanted]


def _decode_selected(
    frames, wanted: set[int], stop: int | None = None, watch=None
) -> tuple[dict[int, Image.Image], int]:
    """RGB images of the ``wanted`` frame indices and the number of frames decoded (all of them, or
    up to index ``stop`` included); ``watch(frame, index)`` sees each frame first (bounds)."""
    selected: dict[int, Image.Image] = {}
    count = 0
    for index, frame in enumerate(frames):
        if watch is not None:
            watch(frame, index)
        count = index + 1
        if index in wanted:
            image = frame.to_image()  # a fresh RGB copy, independent of the decoder's buffers
            selected[index] = image if image.mode == "RGB" else image.convert("RGB")
        if stop is not None and index >= stop:
            break
    return selected, count
