"""Frame-encoding throughput: the feature pipeline (decoding included) vs the bare ONNX Runtime session.

    .venv/bin/python benchmarks/frame_encoding.py --data data --items 40 --rounds 3

On the same N short/live items (8 sampled frames each; page images are skipped because the
pipeline encodes a repeated page image once) it measures, interleaved in each round:

- bare:      ``session.run`` of a fresh ONNX Runtime session (same graph and options) on
             pre-decoded, pre-resized uint8 frames: pure inference;
- pipeline:  ``visual_features(media_paths, OnnxFrameEncoder, cache_dir=None)``: decoding,
             preprocessing and inference;
- torch eager / channels-last: ``FrameEncoder``'s model on pre-decoded frames (a subset, for
             reference; they are slow).

Both bare and pipeline are rated on the frames the pipeline really encodes (identical frames of an
item are encoded once, so this is <= 8 N); the ratio pipeline / bare is taken per round (both
measured back to back) and summarised by its median. Other jobs on the machine make single timings
noisy: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from ampere.data.frames import load_frames  # noqa: E402
from ampere.models.backbones import FrameEncoder  # noqa: E402
from ampere.models.features import unique_frames, visual_features  # noqa: E402
from ampere.models.onnx_backbone import OnnxFrameEncoder, cpu_cores, frames_to_pixels, session_options  # noqa: E402
from ampere.settings import Settings


def _media(data: Path, n: int) -> list[Path]:
    """The first n short/live items, alternating domains as far as both have items."""
    items = [json.loads(line) for line in (data / "items.jsonl").read_text().splitlines() if line.strip()]
    by_domain = {d: [data / i["media"] for i in items if i["domain"] == d] for d in ("short", "live")}
    chosen: list[Path] = []
    for pair in zip(by_domain["short"], by_domain["live"], strict=False):
        chosen.extend(pair)
    rest = by_domain["short"][len(chosen) // 2 :] + by_domain["live"][len(chosen) // 2 :]
    return (chosen + rest)[:n]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Settings.resolve().dataset)
    parser.add_argument("--items", type=int, default=40, help="short/live items (8 frames each)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--torch-frames", type=int, default=64, help="frames per round for the torch references (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    parser.add_argument("--prefetch", type=int, default=8, help="items decoded ahead by visual_features' worker thread")
    parser.add_argument("--compare-inline", action="store_true", help="also time the pipeline with decoding inline (prefetch 0)")
    args = parser.parse_args()

    paths = _media(args.data, args.items)
    encoder = OnnxFrameEncoder(args.image_size, batch_size=args.batch_size, intra_op_threads=args.threads)
    # The frames the pipeline encodes: per item its distinct sampled frames.
    frames = [im for p in paths for im in unique_frames(load_frames(p))[0]]
    pixels = frames_to_pixels(frames, args.image_size)
    n_frames = len(pixels)
    print(
        f"{len(paths)} items ({8 * len(paths)} sampled frames, {n_frames} distinct encoded) from {args.data}; "
        f"{cpu_cores()} cores, onnxruntime {ort.__version__}, torch {torch.__version__}, batch {args.batch_size}"
    )

    bare = ort.InferenceSession(str(encoder.model_path), session_options(args.threads), providers=["CPUExecutionProvider"])

    def run_bare() -> None:
        for start in range(0, n_frames, args.batch_size):
            bare.run(None, {"pixels": pixels[start : start + args.batch_size]})

    def run_pipeline(prefetch: int = args.prefetch) -> None:
        feats, failures = visual_features(paths, encoder, cache_dir=None, prefetch=prefetch)
        assert not failures, failures

    torch_eager = torch_cl = None
    if args.torch_frames:
        torch_eager = FrameEncoder(args.image_size, batch_size=32)
        torch_eager.network = torch_eager.network.to(memory_format=torch.contiguous_format)
        torch_cl = FrameEncoder(args.image_size, batch_size=32)  # channels-last (FrameEncoder's default)
        sub = torch.from_numpy(pixels[: args.torch_frames]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        sub_eager, sub_cl = sub.contiguous(), sub.contiguous(memory_format=torch.channels_last)

    def run_torch(enc: FrameEncoder, x: torch.Tensor) -> None:
        with torch.inference_mode():
            for start in range(0, len(x), enc.batch_size):
                enc.network.extract_features(x[start : start + enc.batch_size]).mean(dim=(2, 3))

    # Warm-up (allocations, first-run graph work, file cache) and a correctness check.
    run_bare()
    run_pipeline()
    check = bare.run(None, {"pixels": pixels[:8]})[0]
    np.testing.assert_allclose(encoder.encode(frames[:8]), check, rtol=0, atol=1e-5)
    if args.torch_frames:
        run_torch(torch_eager, sub_eager[:8])
        run_torch(torch_cl, sub_cl[:8])

    names = ("bare", "pipeline", "pipeline inline", "torch eager", "torch channels-last")
    rates: dict[str, list[float]] = {name: [] for name in names}
    ratios = []
    for r in range(args.rounds):
        # Alternate the order of bare and pipeline so that neither always runs first.
        order = ("bare", "pipeline") if r % 2 == 0 else ("pipeline", "bare")
        seconds = {name: _timed(run_bare if name == "bare" else run_pipeline) for name in order}
        rates["bare"].append(n_frames / seconds["bare"])
        rates["pipeline"].append(n_frames / seconds["pipeline"])
        ratios.append(seconds["bare"] / seconds["pipeline"])
        if args.compare_inline:
            rates["pipeline inline"].append(n_frames / _timed(lambda: run_pipeline(prefetch=0)))
        if args.torch_frames:
            rates["torch eager"].append(len(sub) / _timed(lambda: run_torch(torch_eager, sub_eager)))
            rates["torch channels-last"].append(len(sub) / _timed(lambda: run_torch(torch_cl, sub_cl)))
        measured = ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items() if v)
        print(f"round {r + 1}: {measured} frames/s; ratio {ratios[-1]:.3f}")

    print(f"\n{'method':<22}{'median frames/s':>16}{'min':>8}{'max':>8}")
    for name, values in rates.items():
        if values:
            print(f"{name:<22}{statistics.median(values):>16.1f}{min(values):>8.1f}{max(values):>8.1f}")
    print(f"\npipeline / bare (per round, median): {statistics.median(ratios):.3f}  [{', '.join(f'{x:.3f}' for x in ratios)}]")
    print(f"target >= 0.8: {'met' if statistics.median(ratios) >= 0.8 else 'NOT met'}")


if __name__ == "__main__":
    main()
