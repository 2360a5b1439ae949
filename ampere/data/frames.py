"""Frame sampling and media decoding: every item becomes exactly `NUM_FRAMES` RGB frames.

A product-page image is repeated; a video file (decoded with PyAV) or a folder of frame images
(sorted by name) is sampled at the middle of `num_segments` equal segments, short clips padded
by repeating their last frame (DESIGN.md §1).
"""

from __future__ import annotations

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


def load_frames(path: str | Path, num_segments: int = NUM_FRAMES) -> list[Image.Image]:
    """`num_segments` RGB frames of an image, a video file or a folder of frame images."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        return [_open_image(files[i]) for i in segment_midpoints(len(files), num_segments)]
    if not path.exists():
        raise MediaError(path, "file not found")
    if is_image(path):
        return [_open_image(path)] * num_segments
    if is_video(path):
        return _video_frames(path, num_segments)
    raise MediaError(path, f"unsupported media type {path.suffix!r}")


def frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder, sorted by name; MediaError when there are none."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and is_image(p)), key=lambda p: p.name)
    if not files:
        raise MediaError(folder, "folder holds no frame images")
    return files


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
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


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(_video_stream(path, container)))


def _video_frames(path: Path, num_segments: int) -> list[Image.Image]:
    """Frames at the segment midpoints of a video, converting only the selected ones (bounded memory).

    One decoding pass when the stream's frame count (container metadata) is right, which is checked
    against the frames really decoded; a file holding fewer packets than its index lists is
    truncated (MediaError); otherwise two passes: count the frames, then convert.
    """
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(path, container)
            hint = stream.frames
            if hint > 0:
                wanted = segment_midpoints(hint, num_segments)
                selected, count = _decode_selected(container.decode(stream), set(wanted))
                if count == hint:
                    return [selected[i] for i in wanted]
        stored = _count_packets(path)
        if 0 < stored < hint:
            raise MediaError(path, f"truncated: its index lists {hint} frames, the file holds {stored}")
        count = _count_frames(path)
        if count == 0:
            raise MediaError(path, "no video frames")
        wanted = segment_midpoints(count, num_segments)
        with av.open(str(path)) as container:
            selected, _ = _decode_selected(container.decode(_video_stream(path, container)), set(wanted), stop=wanted[-1])
    except (av.FFmpegError, OSError, EOFError) as error:
        raise MediaError(path, f"cannot decode video: {error}") from error
    if len(selected) != len(set(wanted)):
        raise MediaError(path, "video decoded differently on the second pass")
    return [selected[i] for i in wanted]


def _decode_selected(frames, wanted: set[int], stop: int | None = None) -> tuple[dict[int, Image.Image], int]:
    """RGB images of the ``wanted`` frame indices and the number of frames decoded (all of them, or
    up to index ``stop`` included)."""
    selected: dict[int, Image.Image] = {}
    count = 0
    for index, frame in enumerate(frames):
        count = index + 1
        if index in wanted:
            image = frame.to_image()  # a fresh RGB copy, independent of the decoder's buffers
            selected[index] = image if image.mode == "RGB" else image.convert("RGB")
        if stop is not None and index >= stop:
            break
    return selected, count
