"""Media crafted to strain a server, shared by the tests and `benchmarks/serve_soak.py`."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def slow_clip(path: Path) -> Path:
    """A crafted clip just under the upload limit that takes about half a second to decode here:
    600 frames of 1080p, cheap to store (a moving gradient at low quality)."""
    base = (np.add.outer(np.arange(1080) // 5, np.arange(1920) // 8) % 256).astype(np.uint8)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt, stream.options = 1920, 1080, "yuv420p", {"qscale": "31"}
        for i in range(600):
            frame = av.VideoFrame.from_ndarray(np.stack([np.roll(base, i, axis=1)] * 3, -1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
