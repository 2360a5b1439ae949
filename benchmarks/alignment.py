"""Alignment variants compared on validation mR1: the terms on the fusion output tokens
(``alignment=fusion``) or on the branch outputs before fusion (``alignment=branch``).

    .venv/bin/python benchmarks/alignment.py [--features workspace/features/features] [--seeds 0 1 2]
        [--train FIELD=VALUE ...] [--curves curves.csv]

Trains the tower once per (variant, seed) on the train split of the pipeline's backbone features
(the text source of the last `ampere pipeline` run), with the default TrainConfig otherwise, and
prints each run's validation mR1 at its chosen checkpoint, the mean ± std per variant and the
paired difference. The choice is made on validation; the test split is not read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import pandas as pd  # noqa: E402

from ampere.models.features import ItemFeatures  # noqa: E402
from ampere.models.tower import TowerConfig  # noqa: E402
from ampere.training.train import ALIGNMENTS, TRAINING_SPLITS, TrainConfig, train_tower  # noqa: E402
from orchestration.cli import train_setting  # noqa: E402

DEFAULT_FEATURES = Path(__file__).resolve().parents[1] / "workspace" / "features" / "features"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=DEFAULT_FEATURES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--train", type=train_setting, action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--curves", type=Path, help="write every run's validation curve (one row per evaluation) to this CSV")
    args = parser.parse_args()

    features = ItemFeatures.load(args.features).only(TRAINING_SPLITS)
    tower_cfg = TowerConfig(
        visual_dim=features.frames.shape[-1], text_dim=features.text.shape[-1], text_tokens=features.text.shape[1]
    )
    scores: dict[str, list[float]] = {}
    curves = []
    print("| alignment | seed | val mR1 | chosen step | steps | seconds |\n|---|---:|---:|---:|---:|---:|")
    for alignment in ALIGNMENTS:
        for seed in args.seeds:
            cfg = TrainConfig(**{**TrainConfig().to_dict(), **dict(args.train), "alignment": alignment, "seed": seed})
            started = time.perf_counter()
            result = train_tower(features, tower_cfg, cfg)
            scores.setdefault(alignment, []).append(result.best_val_mR1)
            curves += [{"alignment": alignment, "seed": seed, **row} for row in result.history]
            print(
                f"| {alignment} | {seed} | {result.best_val_mR1:.1f} | {result.best_step} | {result.steps_done} | "
                f"{time.perf_counter() - started:.0f} |",
                flush=True,
            )
    if args.curves is not None:
        pd.DataFrame(curves).to_csv(args.curves, index=False)
    print("\n| alignment | val mR1 (mean ± std over seeds) |\n|---|---:|")
    for alignment, values in scores.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {alignment} | {statistics.mean(values):.1f} ± {spread:.1f} |")
    differences = [b - f for f, b in zip(scores["fusion"], scores["branch"], strict=True)]
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    print(f"\nbranch - fusion, paired by seed: {statistics.mean(differences):+.1f} ± {spread:.1f} points of validation mR1")


if __name__ == "__main__":
    main()
