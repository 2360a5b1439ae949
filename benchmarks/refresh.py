"""A catalogue refresh against a full run, at 10k and 100k items with 1 % of the products added or changed.

    .venv/bin/python benchmarks/refresh.py                    # 10k and 100k items (about 12 min on 2 cores)
    .venv/bin/python benchmarks/refresh.py --sizes 10000

Each size is a generated catalogue in the project's format (``benchmarks/scale.py``'s tiny media),
served by an index whose vectors the champion embedded before (its embedding store holds them);
then 0.5 % of the products change (title and transcripts) and 0.5 % are added. LLM time is left
out of both sides (the text source is the raw transcript; the summary cache makes an unchanged
transcript free anyway), and so is the index build (printed apart).

- refresh, measured whole with the pipeline's own code (what `catalogue_refresh` runs): `read_items`
  (every record and media file checked), content keys (record and media hash), the served index's
  items, the diff, and `vectors_for` through the champion's query path (`QueryEncoder`, frame and
  text backbones, the tower) embedding only what the store lacks;
- full run: `read_items` and the title-tagger fit measured at the size; frame features, text features
  and embedding per item measured on a sample (their work is per item); training as the pipeline
  runs it by default (`TrainConfig()`: its steps at its batch, measured, and an evaluation over the
  validation items every `eval_every` steps). A lower bound: summaries, promotion and quarantine are left out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu import loop_samples_per_s  # noqa: E402  (benchmarks/ is this script's folder)
from scale import tiny_dataset  # noqa: E402

from ampere.asr.candidates import llm_reader  # noqa: E402
from ampere.asr.prompts import DEFAULT_PROMPT_ID, load_prompt  # noqa: E402
from ampere.catalogue.content import content_keys  # noqa: E402
from ampere.catalogue.embedding_store import EmbeddingStore  # noqa: E402
from ampere.catalogue.refresh import diff, indexed_items, query_embedder, vectors_for  # noqa: E402
from ampere.data.format import read_items  # noqa: E402
from ampere.device import resolve_device  # noqa: E402
from ampere.models.backbones import build_frame_encoder, build_text_encoder  # noqa: E402
from ampere.models.features import ItemFeatures, text_features, visual_features  # noqa: E402
from ampere.models.tower import AmpereTower, TowerConfig  # noqa: E402
from ampere.retrieval.index import build_indexes  # noqa: E402
from ampere.retrieval.query import QueryEncoder  # noqa: E402
from ampere.training.evaluator import embed  # noqa: E402
from ampere.training.train import TrainConfig  # noqa: E402

MODEL, VERSION = "ampere-encoder", "1"
GOAL = 0.05  # refresh at most 5 % of the full run's non-LLM time


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def changed_copy(base: Path, folder: Path, share: float, scratch: Path) -> tuple[int, int]:
    """``base`` with ``share`` / 2 of its products changed (title, transcripts) and as many added; (changed, added)."""
    shutil.copytree(base, folder)
    records = pd.read_json(base / "items.jsonl", lines=True)
    products = sorted(records["product_id"].unique())
    count = max(1, round(len(products) * share / 2))
    chosen = set(np.random.default_rng(1).choice(products, count, replace=False))
    rows = records["product_id"].isin(chosen)
    records.loc[rows & (records["domain"] == "page"), "title"] += " new edition"
    records.loc[rows & (records["domain"] != "page"), "asr"] += " now with a new edition"
    new = tiny_dataset(scratch / "new", 3 * count, seed=2, first=len(products))
    for media in (new / "media").iterdir():
        shutil.move(media, folder / "media" / media.name)
    records = pd.concat([records, pd.read_json(new / "items.jsonl", lines=True)], ignore_index=True)
    records.to_json(folder / "items.jsonl", orient="records", lines=True)
    return count, count


def per_item(sample: pd.DataFrame, encoder: QueryEncoder) -> dict[str, float]:
    """Seconds per item of the full run's per-item stages, on a sample."""
    paths, texts = list(sample["media_path"]), [t or a for t, a in zip(sample["title"], sample["asr"], strict=True)]
    visual_features(paths[:8], encoder.frame_encoder, progress=False)  # warm-up
    frame_s, frames = timed(lambda: visual_features(paths, encoder.frame_encoder, progress=False)[0])
    text_s, (states, mask) = timed(lambda: text_features(texts, encoder.text_encoder, progress=False))
    ids = list(sample["item_id"])
    features = ItemFeatures(ids, list(sample["product_id"]), list(sample["domain"]), ["val"] * len(ids), frames, states, mask)
    embed_s, _ = timed(lambda: embed(encoder.tower, features))
    return {"frame features": frame_s / len(ids), "text features": text_s / len(ids), "embedding": embed_s / len(ids)}


def measure(n: int, folder: Path, encoder: QueryEncoder, constants: dict[str, float], train_s: float) -> dict[str, float]:
    """Seconds of the full run (measured and per-item stages) and of the refresh, at ``n`` items."""
    base = tiny_dataset(folder / f"base-{n}", n)
    items, problems = read_items(base)
    assert not problems, problems[:3]
    keys = content_keys(items, progress=False)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(items), encoder.tower.cfg.out_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    served = folder / f"index-{n}"
    build_indexes(items.assign(content_key=keys, embedding=list(vectors)), served)
    store = EmbeddingStore(folder / f"store-{n}")
    store.add(MODEL, VERSION, keys, vectors)  # the champion embedded the served catalogue before

    changed, added = changed_copy(base, folder / f"now-{n}", 0.01, folder / f"scratch-{n}")
    refresh: dict[str, float] = {}
    refresh["read_items"], (now, problems) = timed(lambda: read_items(folder / f"now-{n}"))
    assert not problems, problems[:3]
    refresh["content keys"], now_keys = timed(lambda: content_keys(now, progress=False))
    now = now.assign(content_key=now_keys)
    refresh["served items"], before = timed(lambda: indexed_items(served))
    refresh["diff"], change = timed(lambda: diff(now, before))
    assert len(change.changed) == 3 * changed and len(change.added) == 3 * added, change.counts()
    out_dim = encoder.tower.cfg.out_dim
    refresh["embedding (new content)"], done = timed(
        lambda: vectors_for(now, store, MODEL, VERSION, out_dim, query_embedder(encoder))
    )
    assert done.embedded == 3 * (changed + added), done.embedded
    index_s, _ = timed(lambda: build_indexes(now.assign(embedding=list(done.vectors)), folder / f"index-{n}-new"))

    cfg, val_items = TrainConfig(), int((items["split"] == "val").sum())
    full = {
        "read_items": refresh["read_items"],
        "tagger fit": timed(lambda: llm_reader(load_prompt(DEFAULT_PROMPT_ID), items))[0],
        "frame features": constants["frame features"] * len(now),
        "text features": constants["text features"] * len(now),
        "training": train_s + (cfg.steps // cfg.eval_every) * val_items * constants["embedding"],
        "embedding": constants["embedding"] * len(now),
    }
    return {"items": len(now), "changed": 3 * changed, "added": 3 * added, "index": index_s} | {
        f"full: {k}": v for k, v in full.items()
    } | {f"refresh: {k}": v for k, v in refresh.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--sample", type=int, default=300, help="items the per-item stages are timed on")
    args = parser.parse_args()
    frame_encoder, text_encoder = build_frame_encoder(), build_text_encoder()
    cfg = TrainConfig()
    tower_cfg = TowerConfig(
        visual_dim=frame_encoder.dim, text_dim=text_encoder.dim, text_tokens=text_encoder.length, fusion=cfg.fusion
    )
    encoder = QueryEncoder(AmpereTower(tower_cfg).eval(), frame_encoder, text_encoder, "raw")
    with tempfile.TemporaryDirectory(prefix="ampere-refresh-") as tmp:
        folder = Path(tmp)
        sample, _ = read_items(tiny_dataset(folder / "sample", args.sample, seed=1))
        constants = per_item(sample, encoder)
        train_s = cfg.steps * 3 * cfg.batch_size / loop_samples_per_s(tower_cfg, cfg.batch_size, resolve_device("cpu"), 4)
        table = {n: measure(n, folder, encoder, constants, train_s) for n in args.sizes}
    print(f"\nseconds (this machine: {os.cpu_count()} cores); 1 % of the products changed or added; LLM and index build aside\n")
    print("| | " + " | ".join(f"{table[n]['items']:,} items" for n in args.sizes) + " |")
    print("|---|" + "---:|" * len(args.sizes))
    stages = [k for k in table[args.sizes[0]] if k.startswith(("full:", "refresh:"))]
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{table[n][stage]:.1f}" for n in args.sizes) + " |")
    totals = {
        n: {side: sum(v for k, v in table[n].items() if k.startswith(side)) for side in ("full:", "refresh:")} for n in args.sizes
    }
    print("| **full run** | " + " | ".join(f"**{totals[n]['full:']:.0f}**" for n in args.sizes) + " |")
    print("| **refresh** | " + " | ".join(f"**{totals[n]['refresh:']:.1f}**" for n in args.sizes) + " |")
    ratios = " | ".join(f"**{100 * totals[n]['refresh:'] / totals[n]['full:']:.1f} %**" for n in args.sizes)
    print(f"| refresh / full (goal ≤ {100 * GOAL:.0f} %) | {ratios} |")
    embedded = " | ".join(f"{table[n]['changed'] + table[n]['added']:,}" for n in args.sizes)
    print(f"| items embedded by the refresh | {embedded} |")
    print("| index build (aside) | " + " | ".join(f"{table[n]['index']:.1f}" for n in args.sizes) + " |")


if __name__ == "__main__":
    main()
