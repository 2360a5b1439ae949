"""Media a server shows: one representative frame of an item (a page's image, a clip's middle
frame) as a JPEG, and where an uploaded query's bytes go while it is embedded."""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

from PIL import Image

from ampere.data.frames import IMAGE_SUFFIXES, VIDEO_SUFFIXES, load_frames

THUMBNAIL_SIZE = 192


def representative_jpeg(path: str, size: int | None = THUMBNAIL_SIZE) -> bytes:
    """JPEG bytes of the media's middle frame (a page's image), fitted in ``size`` pixels (None: full size)."""
    return jpeg(load_frames(path, num_segments=1)[0], size)


def item_jpeg(path: str, size: int | None = THUMBNAIL_SIZE) -> bytes:
    """`representative_jpeg` of an indexed item's media, cached until the file (or folder) changes."""
    return _cached_jpeg(path, os.stat(path).st_mtime_ns, size)


@functools.lru_cache(maxsize=4096)
def _cached_jpeg(path: str, mtime_ns: int, size: int | None) -> bytes:
    return representative_jpeg(path, size)


def jpeg(image: Image.Image, size: int | None = THUMBNAIL_SIZE) -> bytes:
    """JPEG bytes of an RGB image, fitted in ``size`` pixels (None: full size)."""
    image = image.copy()
    if size is not None:
        image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def upload_suffix(filename: str, content_type: str) -> str | None:
    """The file suffix an upload is decoded by: its name's, else its content type's; None when neither is media."""
    suffix = Path(filename or "").suffix.lower()
    if suffix in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        return suffix
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind.startswith("image/"):
        return ".png"  # PIL reads images by their bytes, whatever the suffix says
    if kind.startswith("video/"):
        return ".mp4"  # PyAV probes the container from its bytes
    return None
