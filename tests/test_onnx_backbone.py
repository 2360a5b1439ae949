"""EfficientNet-Lite0 exported to ONNX and run by ONNX Runtime (ampere.models.onnx_backbone)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ampere.models import backbones, onnx_backbone
from ampere.models.backbones import FrameEncoder, build_frame_encoder
from ampere.models.onnx_backbone import OnnxFrameEncoder

SIZE = 96  # small input keeps the export and the torch reference fast
# Measured: max |onnx - torch| ~1e-5 with features up to ~6 (float32 rounding of reordered ops).
RTOL = ATOL = 1e-4


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    shapes = [(96, 96), (60, 200), (480, 640), (33, 47)]
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in shapes]
    images.append(Image.fromarray(rng.integers(0, 256, (50, 70), dtype=np.uint8)))  # greyscale ("L")
    images.append(images[1].convert("RGBA"))
    return images


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def encoder(cache_dir) -> OnnxFrameEncoder:
    return OnnxFrameEncoder(image_size=SIZE, batch_size=64, cache_dir=cache_dir)


def test_onnx_matches_torch_frame_encoder(encoder):
    images = _images()
    torch_encoder = FrameEncoder(image_size=SIZE)
    got, ref = encoder.encode(images), torch_encoder.encode(images)
    assert got.shape == (len(images), 1280) and got.dtype == np.float32
    assert np.allclose(got, ref, rtol=RTOL, atol=ATOL), np.abs(got - ref).max()
    assert (got >= 0).all()
    # Same function, so the same feature-cache id and dimension.
    assert encoder.id == torch_encoder.id == f"efficientnet-lite0@{SIZE}" and encoder.dim == torch_encoder.dim


def test_batch_size_independence(encoder, cache_dir):
    images = _images()
    whole = encoder.encode(images)
    small = OnnxFrameEncoder(image_size=SIZE, batch_size=2, cache_dir=cache_dir).encode(images)
    np.testing.assert_allclose(small, whole, rtol=0, atol=1e-5)
    one_by_one = np.concatenate([encoder.encode([im]) for im in images])
    np.testing.assert_allclose(one_by_one, whole, rtol=0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 1280)


def test_export_cache_reused(encoder, cache_dir):
    files = list(cache_dir.glob("*.onnx"))
    assert files == [encoder.model_path]
    assert not [p for p in cache_dir.iterdir() if p.suffix != ".onnx"]  # no temporary left behind
    mtime, exports = encoder.model_path.stat().st_mtime_ns, onnx_backbone._export_count
    again = OnnxFrameEncoder(image_size=SIZE, cache_dir=cache_dir)
    assert again.model_path == encoder.model_path
    assert onnx_backbone._export_count == exports
    assert encoder.model_path.stat().st_mtime_ns == mtime
    # The key covers the export settings: another input size is another file.
    assert onnx_backbone.export_key(SIZE) != onnx_backbone.export_key(SIZE + 32)
    assert onnx_backbone.export_key(SIZE)[:20] in encoder.model_path.name


def test_registry_picks_onnx_on_cpu_and_torch_when_asked(encoder, cache_dir, monkeypatch):
    default = build_frame_encoder("efficientnet-lite0", image_size=SIZE, cache_dir=cache_dir)
    assert isinstance(default, OnnxFrameEncoder) and default.model_path == encoder.model_path
    forced = build_frame_encoder("efficientnet-lite0", image_size=SIZE, runtime="onnx", cache_dir=cache_dir)
    assert isinstance(forced, OnnxFrameEncoder)
    assert type(build_frame_encoder("efficientnet-lite0", image_size=SIZE, runtime="torch")) is FrameEncoder

    built = []

    class FakeTorchEncoder:
        def __init__(self, **kw):
            built.append(kw)

    monkeypatch.setattr(backbones, "FrameEncoder", FakeTorchEncoder)
    # GPU: torch (this machine may have no GPU, hence the stand-in class).
    assert isinstance(build_frame_encoder("efficientnet-lite0", image_size=SIZE, device="cuda"), FakeTorchEncoder)
    assert built[-1] == {"device": "cuda", "image_size": SIZE}
    with pytest.raises(ValueError, match="CPU only"):
        build_frame_encoder("efficientnet-lite0", runtime="onnx", device="cuda")
    with pytest.raises(ValueError, match="unknown runtime"):
        build_frame_encoder("efficientnet-lite0", runtime="tensorrt")
    # No onnxruntime: torch on CPU, ONNX-only options dropped.
    monkeypatch.setattr(onnx_backbone, "onnxruntime_available", lambda: False)
    assert isinstance(build_frame_encoder("efficientnet-lite0", image_size=SIZE, cache_dir=cache_dir), FakeTorchEncoder)
    assert built[-1] == {"device": "cpu", "image_size": SIZE}
