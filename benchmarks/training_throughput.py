"""Training throughput of the AMPere tower (samples/s; a sample is one item, 3 per product per step).

    .venv/bin/python benchmarks/training_throughput.py [--features workspace/features/features]

Runs the real training loop (``ampere.training.train.train_tower``: batch gathering, forward, losses,
backward, clipping, AdamW, scheduler, validation) with the default TowerConfig / TrainConfig,
except for the step budget and the evaluation interval. The first interval is warm-up; each later
one is timed (its validation embedding included). Without the features file, random features of
the same shape are used (frames [N, 8, 1280] float32, text [N, 33, 384] float16; 80% train, 20%
val products). The frame backbone is not involved: features are precomputed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ampere.device import resolve_device  # noqa: E402
from ampere.models.features import ItemFeatures  # noqa: E402
from ampere.models.tower import TowerConfig  # noqa: E402
from ampere.settings import Settings
from ampere.training.batches import product_items  # noqa: E402
from ampere.training.train import TRAINING_SPLITS, TrainConfig, train_tower  # noqa: E402

DEFAULT_FEATURES = Settings.resolve().local_workspace / "features" / "features"


def random_features(products: int, tower: TowerConfig, seed: int = 0) -> ItemFeatures:
    """One page, short and live item per product, every fifth product in the val split, random features."""
    rng = np.random.default_rng(seed)
    n = 3 * products
    mask = np.zeros((n, tower.text_tokens), dtype=bool)
    lengths = rng.integers(1, tower.text_tokens + 1, n)
    mask[np.arange(tower.text_tokens)[None, :] < lengths[:, None]] = True
    return ItemFeatures(
        item_ids=[f"p{p:05d}-{d}" for p in range(products) for d in ("page", "short", "live")],
        product_ids=[f"p{p:05d}" for p in range(products) for _ in range(3)],
        domains=["page", "short", "live"] * products,
        splits=["val" if p % 5 == 0 else "train" for p in range(products) for _ in range(3)],
        frames=rng.uniform(0, 6, (n, tower.num_frames, tower.visual_dim)).astype(np.float32),
        text=(rng.normal(size=(n, tower.text_tokens, tower.text_dim)) * mask[..., None]).astype(np.float16),
        text_mask=mask,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=DEFAULT_FEATURES)
    parser.add_argument("--random-products", type=int, default=100, help="products when the features file is missing")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed interval (between validations)")
    parser.add_argument("--rounds", type=int, default=3, help="timed intervals (after one warm-up interval)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (cuda trains with AMP)")
    args = parser.parse_args()

    tower_cfg = TowerConfig()
    if args.features.exists():
        features, source = ItemFeatures.load(args.features).only(TRAINING_SPLITS), str(args.features)
    else:
        features, source = random_features(args.random_products, tower_cfg), f"random ({args.random_products} products)"
    defaults = TrainConfig()
    train_products = len(product_items(features.only(["train"])))
    batch = min(defaults.batch_size, train_products)
    cfg = TrainConfig(steps=(1 + args.rounds) * args.steps, eval_every=args.steps, patience=0, device=args.device)
    device = resolve_device(cfg.device)

    stamps = [time.perf_counter()]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def stamp(row: dict) -> None:
        sync()
        stamps.append(time.perf_counter())

    history = train_tower(features, tower_cfg, cfg, on_eval=stamp).history
    per_interval = np.diff(stamps)[1:]  # drop the warm-up interval
    samples = args.steps * batch * 3
    rates = [samples / s for s in per_interval]
    print(
        f"features: {source} frames {features.frames.shape}; {train_products} train products, batch {batch} products "
        f"({3 * batch} samples/step); device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("per interval: " + ", ".join(f"{r:.1f}" for r in rates) + " samples/s")
    rate = statistics.median(rates)
    step_ms = 1000 * statistics.median(per_interval) / args.steps
    losses = [row["loss"] for row in history]
    print("loss per interval: " + ", ".join(f"{value:.4f}" for value in losses))
    print(f"training throughput: {rate:.1f} samples/s (median), {rate / 3:.1f} products/s, {step_ms:.0f} ms/step")


if __name__ == "__main__":
    main()
