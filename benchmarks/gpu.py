"""Training and frame encoding at the hardware's pace: the project's code beside the bare same math.

    .venv/bin/python benchmarks/gpu.py                       # on a GPU host (issue 14's figures)
    .venv/bin/python benchmarks/gpu.py --device cpu --batches 8 16 --images 32   # a smoke run anywhere

A. `train_tower` samples/s (random features of the real shapes, the real loop: device-resident
   features, bf16 autocast on CUDA, validation excluded from the timed steps) against a bare
   forward + loss + backward + clip + AdamW step of the same tower on tensors already on the
   device; FLOPs per step from torch's FlopCounterMode give the bare step's TFLOP/s and, with
   --peak-tflops, its share of the chip's bf16 peak.
B. `visual_features` as `backbone_features` runs it on the device (mp4 files and frame folders
   decoded by every core's thread, frames resized on the GPU, batches of 256) against the bare
   backbone on a ready batch on the device, both in float32.
C. End-to-end fine-tuning (`TrainConfig.finetune`): `train_tower`'s steps, decoding JPEG frames
   and tokenising texts every step, against the bare end-to-end step (packaged EfficientNet-Lite0 +
   MiniLM + tower) on pixels and tokens already on the device.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from training_throughput import random_features  # noqa: E402  (benchmarks/ is this script's folder)

from ampere.device import resolve_device  # noqa: E402
from ampere.models.backbones import build_frame_encoder, encoders_from_ids  # noqa: E402
from ampere.models.features import ItemFeatures, visual_features  # noqa: E402
from ampere.models.tower import AmpereTower, TowerConfig, TowerOutput  # noqa: E402
from ampere.training.batches import batch_rows, product_items  # noqa: E402
from ampere.training.evaluator import embed  # noqa: E402
from ampere.training.finetune import EndToEnd, EndToEndInputs, MediaBatches, features_with, unfreeze  # noqa: E402
from ampere.training.objective import batch_loss  # noqa: E402
from ampere.training.train import TrainConfig, train_tower  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bare_step(
    model: torch.nn.Module, forward: Callable[[], TowerOutput], batch: int, device: torch.device
) -> Callable[[], None]:
    """One bare training step of ``model`` (forward, loss over the batch, backward, clip, AdamW) on ready tensors."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    products, cfg = torch.arange(batch, device=device), TrainConfig()

    def step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            out = forward()
        loss, _ = batch_loss(out, products, 0.05, torch.nn.ModuleDict(), cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def _seconds_per_step(step: Callable[[], None], device: torch.device, steps: int) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def bare_step(tower_cfg: TowerConfig, batch: int, device: torch.device, steps: int) -> tuple[float, float, float]:
    """(samples/s, FLOPs per step, seconds per step) of the bare training step on device-resident tensors."""
    torch.manual_seed(0)
    tower = AmpereTower(tower_cfg).to(device)
    frames = torch.rand(3 * batch, tower_cfg.num_frames, tower_cfg.visual_dim, device=device) * 6
    text = torch.randn(3 * batch, tower_cfg.text_tokens, tower_cfg.text_dim, device=device)
    mask = torch.ones(3 * batch, tower_cfg.text_tokens, dtype=torch.bool, device=device)
    step = _bare_step(tower, lambda: tower.encode_parts(frames, text, mask), batch, device)
    for _ in range(2):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    seconds = _seconds_per_step(step, device, steps)
    return 3 * batch / seconds, float(counter.get_total_flops()), seconds


def loop_samples_per_s(tower_cfg: TowerConfig, batch: int, device: torch.device, steps: int) -> float:
    """samples/s of `train_tower`'s steps between two validations (the first interval is warm-up)."""
    features = random_features(max(int(2.5 * batch), 20), tower_cfg)  # 4 in 5 products train
    stamps: list[float] = []

    def stamp(row: dict) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    cfg = TrainConfig(batch_size=batch, steps=3 * steps, eval_every=steps, patience=0, device=str(device))
    started = time.perf_counter()
    train_tower(features, tower_cfg, cfg, on_eval=stamp)
    # Each interval holds `steps` training steps and one validation; time the validation alone to remove it.
    validation = _validation_seconds(features, tower_cfg, device)
    intervals = np.diff([started, *stamps])[1:] - validation
    return 3 * batch * steps / float(np.median(intervals))


def _validation_seconds(features, tower_cfg: TowerConfig, device: torch.device) -> float:
    from ampere.training.evaluator import embed

    tower = AmpereTower(tower_cfg).to(device)
    val = features.only(["val"])
    embed(tower, val)
    _sync(device)
    start = time.perf_counter()
    embed(tower, val)
    _sync(device)
    return time.perf_counter() - start


def _clips(folder: str, items: int) -> list[str]:
    """``items`` clips of 8 distinct 640x360 frames: every other one an mp4 (MPEG-4, 12 frames), the others
    a folder of 8 JPEGs."""
    import av

    rng = np.random.default_rng(0)
    paths = []
    for i in range(items):
        frames = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(8 if i % 2 else 12)]
        if i % 2:
            Path(f"{folder}/clip-{i:04d}").mkdir()
            for f, frame in enumerate(frames):
                Image.fromarray(frame).save(f"{folder}/clip-{i:04d}/{f:02d}.jpg")
            paths.append(f"{folder}/clip-{i:04d}")
            continue
        with av.open(f"{folder}/clip-{i:04d}.mp4", "w") as container:
            stream = container.add_stream("mpeg4", rate=12)
            stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        paths.append(f"{folder}/clip-{i:04d}.mp4")
    return paths


def frames_per_s(device: torch.device, images: int, folder: str) -> tuple[float, float]:
    """(images/s of `visual_features` on mp4 files and frame folders, decoding included, as `backbone_features`
    runs it on this device; images/s of the bare backbone on a ready device batch, same precision)."""
    rng = np.random.default_rng(0)
    paths = _clips(folder, max(2, images // 8))
    gpu = device.type == "cuda"
    workers = (os.cpu_count() or 1) if gpu else 1
    encoder = build_frame_encoder(device=str(device), **({"batch_size": 256} if gpu else {}))
    run = lambda chosen: visual_features(  # noqa: E731
        chosen, encoder, progress=False, prefetch=max(8, 4 * workers), decode_workers=workers, flush_images=512 if gpu else 64
    )
    run(paths[:2])
    _sync(device)
    start = time.perf_counter()
    run(paths)
    _sync(device)
    pipeline = 8 * len(paths) / (time.perf_counter() - start)
    model = getattr(encoder, "network", None)
    if model is None:  # ONNX Runtime on the CPU: the session on ready pixels is the bare model
        batch = np.asarray(rng.integers(0, 255, (min(images, 64), 224, 224, 3)), dtype=np.uint8)
        start = time.perf_counter()
        encoder.encode_pixels(batch)
        return pipeline, len(batch) / (time.perf_counter() - start)
    x = torch.rand(min(images, 256), 3, 224, 224, device=device).to(memory_format=torch.channels_last)
    with torch.inference_mode():  # float32, as FrameEncoder encodes
        model.extract_features(x)
        _sync(device)
        start = time.perf_counter()
        for _ in range(5):
            model.extract_features(x).mean(dim=(2, 3))
        _sync(device)
    return pipeline, 5 * len(x) / (time.perf_counter() - start)


def _finetune_items(products: int, folder: str) -> tuple[ItemFeatures, dict[str, str], dict[str, str]]:
    """Items of ``products`` products (4 in 5 train), each domain one 360x640 JPEG (decoded as 8 frames), with texts."""
    rng = np.random.default_rng(0)
    ids, media, texts, rows = [], {}, {}, []
    for p in range(products):
        for domain in ("page", "short", "live"):
            item = f"{domain}-{p}"
            media[item] = f"{folder}/{item}.jpg"
            Image.fromarray(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)).save(media[item])
            texts[item] = f"product {p} soft cotton shirt with long sleeves, colour {p % 7}, size {p % 5}"
            ids.append(item)
            rows.append((f"p{p}", domain, "val" if p % 5 == 4 else "train"))
    n = len(ids)
    features = ItemFeatures(
        ids, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
        np.zeros((n, 8, 1)), np.zeros((n, 1, 1)), np.zeros((n, 1), dtype=bool),
    )  # fmt: skip
    return features, media, texts


def finetune_samples_per_s(device: torch.device, batch: int, steps: int, folder: str) -> tuple[float, float]:
    """(samples/s of `train_tower` with `finetune`, samples/s of the bare end-to-end step on device tensors)."""
    features, media, texts = _finetune_items(max(int(2.5 * batch), 10), folder)
    backbones = encoders_from_ids("efficientnet-lite0@224", "all-MiniLM-L6-v2", trainable=True, device=str(device))
    inputs = EndToEndInputs(*backbones, media, texts)
    val = features.only(["val"])
    stamps: list[float] = []

    def stamp(row: dict) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    cfg = TrainConfig(batch_size=batch, steps=3 * steps, eval_every=steps, patience=0, device=str(device), finetune=True)
    started = time.perf_counter()
    train_tower(features, TowerConfig(), cfg, on_eval=stamp, backbones=inputs)
    start = time.perf_counter()
    embed(AmpereTower(TowerConfig()).to(device), features_with(val, inputs))
    _sync(device)
    validation = time.perf_counter() - start
    loop = 3 * batch * steps / float(np.median(np.diff([started, *stamps])[1:] - validation))

    torch.manual_seed(0)
    model = EndToEnd(unfreeze(inputs), AmpereTower(TowerConfig()).to(device))
    train = features.only(["train"])
    _, rows = batch_rows(product_items(train), batch, seed=0, step=0)
    ready = MediaBatches(train, inputs).batch(rows)  # decoded once: the bare step reads them ready
    step = _bare_step(model, lambda: model(*ready), batch, device)
    step()
    return loop, 3 * batch / _seconds_per_step(step, device, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256, 1024, 4096], help="products per step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the chip's bf16 peak (H200: about 790)")
    parser.add_argument("--finetune-batch", type=int, default=32, help="products per fine-tuning step; 0 skips it")
    args = parser.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, {name}", flush=True)
    tower_cfg = TowerConfig()
    print("\n| products / step | train_tower samples/s | bare samples/s | ratio | bare TFLOP/s | share of peak |")
    print("|---:|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        loop = loop_samples_per_s(tower_cfg, batch, device, args.steps)
        bare, flops, seconds = bare_step(tower_cfg, batch, device, args.steps)
        tflops = flops / seconds / 1e12
        share = f"{tflops / args.peak_tflops:.3f}" if args.peak_tflops else "-"
        print(f"| {batch} | {loop:.0f} | {bare:.0f} | {loop / bare:.2f} | {tflops:.2f} | {share} |", flush=True)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        pipeline, bare_model = frames_per_s(device, args.images, folder)
    print(f"\nframes: visual_features {pipeline:.0f} img/s (mp4 and JPEG decoding included), "
          f"bare backbone {bare_model:.0f} img/s, "
          f"ratio {pipeline / bare_model:.3f}")
    if args.finetune_batch:
        with tempfile.TemporaryDirectory() as folder:
            loop, bare = finetune_samples_per_s(device, args.finetune_batch, args.steps, folder)
        print(f"\nfine-tuning, {args.finetune_batch} products/step: train_tower {loop:.1f} samples/s (JPEG decoding "
              f"included), bare end-to-end step {bare:.1f} samples/s, ratio {loop / bare:.3f}", flush=True)


if __name__ == "__main__":
    main()
