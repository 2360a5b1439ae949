"""Peak memory (RSS) of features -> training -> embeddings -> index at 10k, 100k and 1M items.

    .venv/bin/python benchmarks/memory.py                          # 10k, 100k, 1M (about 30 min, 65 GiB of disk at 1M)
    .venv/bin/python benchmarks/memory.py --sizes 10000 100000 --embed-seconds 60

Each stage runs in its own process over one generated catalogue (a third each page, short and live
items; 1,200 validation products, the rest train) and reports its peak RSS (the kernel's VmHWM):

- features: the `backbone_features` write path (``FeatureWriter``, batches of 2,048 items) with
  features of the real shapes (8 x 1280 float32 frames, 33 x 384 float16 token states) drawn at
  random: the encoders are excluded (their memory is one batch's; their time is ``benchmarks/scale.py``'s);
- training: ``train_tower`` with the pipeline's config at fixed steps (``--steps``) over the features
  folder: resident up to ``resident_features_gib``, read from disk per batch above it;
- embeddings: the ``embed`` path over the folder, batch after batch into the vectors of every item;
  at 2 cores a full pass costs about 10 ms per item (3 h at 1M), so each size embeds for at most
  ``--embed-seconds`` and reports the batches done (memory is per batch plus the output vectors,
  allocated and touched for every item up front);
- index: ``build_indexes`` (the default config, recall gate included) over every item's vector.

The last column is what the index itself needs (the vectors, float32): the bound the stages are held to.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ampere.models.feature_store import FeatureWriter  # noqa: E402
from ampere.models.features import ItemFeatures  # noqa: E402
from ampere.models.tower import AmpereTower  # noqa: E402
from ampere.retrieval.index import build_indexes  # noqa: E402
from ampere.training.evaluator import embed  # noqa: E402
from ampere.training.train import TRAINING_SPLITS, TrainConfig, tower_config, train_tower  # noqa: E402

STAGES = ("features", "training", "embeddings", "index")
DOMAINS = ("page", "short", "live")
VAL_PRODUCTS = 1200
BATCH = 2048
FRAMES, FRAME_DIM, TOKENS, TOKEN_DIM = 8, 1280, 33, 384


def peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_features(folder: Path, n: int) -> str:
    rng = np.random.default_rng(0)
    writer = FeatureWriter(folder)
    for start in range(0, n, BATCH):
        rows = np.arange(start, min(n, start + BATCH))
        products = rows // 3
        ids = {
            "item_ids": [f"i{r}" for r in rows],
            "product_ids": [f"p{p}" for p in products],
            "domains": [DOMAINS[r % 3] for r in rows],
            "splits": ["val" if p < VAL_PRODUCTS else "train" for p in products],
        }
        frames = rng.random((len(rows), FRAMES, FRAME_DIM), dtype=np.float32) * 6
        text = rng.random((len(rows), TOKENS, TOKEN_DIM), dtype=np.float32).astype(np.float16)
        mask = np.arange(TOKENS)[None, :] < rng.integers(1, TOKENS, len(rows))[:, None]
        writer.add(ids, frames, text, mask)
    writer.close()
    return f"{n * (FRAMES * FRAME_DIM * 4 + TOKENS * TOKEN_DIM * 2 + TOKENS) / 2**30:.1f} GiB on disk"


def train(folder: Path, steps: int) -> str:
    features = ItemFeatures.load(folder, training=True).only(TRAINING_SPLITS)
    cfg = TrainConfig(steps=steps, eval_every=steps, patience=0, device="cpu")
    mode = "resident" if features.only(["train"]).nbytes <= cfg.resident_features_gib * 2**30 else "streamed"
    result = train_tower(features, tower_config(features, cfg), cfg)
    return f"{result.steps_done} steps, {mode}"


def embed_all(folder: Path, seconds: float) -> str:
    features = ItemFeatures.load(folder)
    torch.manual_seed(0)
    tower = AmpereTower(tower_config(features, TrainConfig())).eval()
    vectors = np.ones((len(features), tower.cfg.out_dim), dtype=np.float32)  # every item's vector, touched
    started, done = time.perf_counter(), 0
    while done < len(features) and time.perf_counter() - started < seconds:
        rows = np.arange(done, min(len(features), done + BATCH))
        vectors[rows] = embed(tower, features.subset(rows))
        done += len(rows)
    return f"{done:,} of {len(features):,} items embedded in {time.perf_counter() - started:.0f} s"


def index(folder: Path, n: int) -> str:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    frame = pd.DataFrame(
        {
            "item_id": [f"i{r}" for r in range(n)],
            "product_id": [f"p{r // 3}" for r in range(n)],
            "domain": [DOMAINS[r % 3] for r in range(n)],
            "embedding": list(vectors),
        }
    )
    del vectors
    built = build_indexes(frame, folder.parent / "index")
    return ", ".join(f"{domain} {entry['index_type']}" for domain, entry in built.items())


def stage(name: str, folder: Path, n: int, args: argparse.Namespace) -> None:
    """One stage in this process; prints its figures as one JSON line."""
    started = time.perf_counter()
    note = {
        "features": lambda: write_features(folder, n),
        "training": lambda: train(folder, args.steps),
        "embeddings": lambda: embed_all(folder, args.embed_seconds),
        "index": lambda: index(folder, n),
    }[name]()
    print(json.dumps({"stage": name, "seconds": time.perf_counter() - started, "peak_rss": peak_rss(), "note": note}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=20, help="training steps (fixed)")
    parser.add_argument("--embed-seconds", type=float, default=120.0)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        stage(args.stage, args.folder, args.items, args)
        return
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="ampere-memory-", dir=os.environ.get("AMPERE_BENCH_TMP")) as tmp:
            folder = Path(tmp) / "features"
            for name in STAGES:
                command = [sys.executable, __file__, "--stage", name, "--folder", str(folder), "--items", str(n)]
                command += ["--steps", str(args.steps), "--embed-seconds", str(args.embed_seconds)]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
                rows.append({"items": n, **json.loads(out)})
                print(f"{n:>9,} {name:<10} {rows[-1]['peak_rss'] / 2**30:6.2f} GiB  {rows[-1]['seconds']:7.0f} s  "
                      f"{rows[-1]['note']}", flush=True)  # fmt: skip
            shutil.rmtree(folder, ignore_errors=True)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print(f"\npeak RSS per stage in GiB (this machine: {os.cpu_count()} cores, {ram / 2**30:.0f} GiB)\n")
    print("| items | " + " | ".join(STAGES) + " | the index's vectors |")
    print("|---:|" + "---:|" * (len(STAGES) + 1))
    for n in args.sizes:
        cells = [next(r for r in rows if r["items"] == n and r["stage"] == s)["peak_rss"] / 2**30 for s in STAGES]
        print(f"| {n:,} | " + " | ".join(f"{c:.2f}" for c in cells) + f" | {n * 128 * 4 / 2**30:.3f} |")


if __name__ == "__main__":
    main()
