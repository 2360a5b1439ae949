"""Frame sampling and media loading (ampere.data.frames)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from ampere.data.frames import NUM_FRAMES, DecodeLimits, MediaError, load_frames, segment_midpoints

GREY_STEP = 12


def grey(level: int, size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), (level, level, level))


def mean_level(image: Image.Image) -> float:
    return float(np.asarray(image, dtype=np.float32).mean())


def write_grey_mp4(path: Path, count: int) -> None:
    """`count` frames, frame i filled with grey level 10 + 12 i (nearly lossless)."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0"} if codec == "libx264" else {"qscale": "1"}
        for i in range(count):
            for packet in stream.encode(av.VideoFrame.from_image(grey(10 + GREY_STEP * i))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize(
    ("num_frames", "expected"),
    [
        (16, [1, 3, 5, 7, 9, 11, 13, 15]),
        (8, [0, 1, 2, 3, 4, 5, 6, 7]),
        (20, [1, 3, 6, 8, 11, 13, 16, 18]),
        (3, [0, 1, 2, 2, 2, 2, 2, 2]),
        (1, [0] * 8),
    ],
)
def test_segment_midpoints(num_frames: int, expected: list[int]) -> None:
    assert segment_midpoints(num_frames) == expected
    assert segment_midpoints(num_frames, NUM_FRAMES) == expected


def test_segment_midpoints_other_segment_count() -> None:
    assert segment_midpoints(10, 4) == [1, 3, 6, 8]


@pytest.mark.parametrize("num_frames", [0, -3])
def test_segment_midpoints_rejects_empty(num_frames: int) -> None:
    with pytest.raises(ValueError):
        segment_midpoints(num_frames)


def test_load_frames_from_mp4_picks_segment_midpoints(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_grey_mp4(path, 20)
    frames = load_frames(path)
    assert len(frames) == 8
    assert all(f.mode == "RGB" and f.size == (32, 32) for f in frames)
    picked = [round((mean_level(f) - 10) / GREY_STEP) for f in frames]
    assert picked == [1, 3, 6, 8, 11, 13, 16, 18]


def test_load_frames_pads_short_video(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    write_grey_mp4(path, 3)
    picked = [round((mean_level(f) - 10) / GREY_STEP) for f in load_frames(path)]
    assert picked == [0, 1, 2, 2, 2, 2, 2, 2]


def test_load_frames_from_folder_sorted_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in reversed(range(5)):  # written out of order on purpose
        grey(10 + GREY_STEP * i).save(folder / f"frame_{i:03d}.png")
    (folder / "notes.txt").write_text("not a frame")
    frames = load_frames(folder)
    assert [round((mean_level(f) - 10) / GREY_STEP) for f in frames] == [0, 1, 2, 3, 4, 4, 4, 4]


def test_load_frames_from_image_repeats_it(tmp_path: Path) -> None:
    path = tmp_path / "page.png"
    Image.new("L", (20, 10), 77).save(path)
    frames = load_frames(path)
    assert len(frames) == 8
    assert all(f.mode == "RGB" and f.size == (20, 10) and mean_level(f) == 77 for f in frames)
    assert len(load_frames(path, num_segments=3)) == 3


def _corrupt_image(tmp_path: Path) -> Path:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return path


def _truncated_mp4(tmp_path: Path) -> Path:
    good = tmp_path / "good.mp4"
    write_grey_mp4(good, 20)
    path = tmp_path / "truncated.mp4"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    return path


def _empty_folder(tmp_path: Path) -> Path:
    path = tmp_path / "empty"
    path.mkdir()
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "nowhere.mp4"


def _unsupported(tmp_path: Path) -> Path:
    path = tmp_path / "clip.txt"
    path.write_text("hello")
    return path


@pytest.mark.parametrize("make", [_corrupt_image, _truncated_mp4, _empty_folder, _missing, _unsupported])
def test_bad_media_raises_media_error_naming_path(tmp_path: Path, make) -> None:
    path = make(tmp_path)
    with pytest.raises(MediaError, match=str(path.name)) as error:
        load_frames(path)
    assert error.value.path == str(path)


def test_folder_with_corrupt_selected_frame(tmp_path: Path) -> None:
    folder = _empty_folder(tmp_path)
    grey(10).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"garbage")
    with pytest.raises(MediaError, match="b.png"):
        load_frames(folder)


def test_decoding_limits_refuse_media_over_a_bound_before_or_while_decoding(tmp_path):
    """A query's media is held to pixels per frame, frames, seconds of video and wall time, and the
    refusal names the bound; within the bounds the frames are those of an unbounded decode."""
    clip = tmp_path / "clip.mp4"
    write_grey_mp4(clip, 30)  # 3 s at 10 frames/s
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(big)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        grey(10 + i).save(folder / f"{i:03d}.png")
    cases = {
        "pixels of an image": (big, DecodeLimits(max_pixels=300 * 199), "300x200 pixels per frame, over the limit of 59,700"),
        "pixels of a video": (clip, DecodeLimits(max_pixels=32 * 31), "32x32 pixels per frame"),
        "frames of a video": (clip, DecodeLimits(max_frames=20), "frames, over the limit of 20"),
        "seconds of video": (clip, DecodeLimits(max_video_s=2.0), "s of video, over the limit of 2 s"),
        "frames of a folder": (folder, DecodeLimits(max_frames=10), "12 frames, over the limit of 10"),
        "wall time": (clip, DecodeLimits(max_wall_s=0.0), "decoding took longer than the limit of 0 s"),
    }
    for name, (path, limits, message) in cases.items():
        with pytest.raises(MediaError) as error:
            load_frames(path, limits=limits)
        assert message in str(error.value), (name, str(error.value))
    within = DecodeLimits(max_pixels=32 * 32, max_frames=30, max_video_s=3.0)
    bounded, free = load_frames(clip, limits=within), load_frames(clip)
    assert [mean_level(a) for a in bounded] == [mean_level(b) for b in free]
