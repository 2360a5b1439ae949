"""Cross-domain retrieval metrics (ROPE protocol): R@K in six directions and mR1, and the mean
reciprocal rank (mMRR), which still separates models when R@1 ties or saturates (a small
validation split: every choice is made there).

Tie rule (pessimistic, independent of gallery order): for a query, let s+ be the best score
among gallery items of its own product; its rank is 1 + the number of gallery items of OTHER
products scoring >= s+. A hit at K means rank <= K. Queries whose product has no gallery item
are excluded from the recall and counted separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

DIRECTIONS = ["P2S", "P2L", "S2P", "S2L", "L2P", "L2S"]
DOMAIN_OF_CODE = {"P": "page", "S": "short", "L": "live"}


def query_ranks(
    q_emb: np.ndarray, q_pid: Sequence[str], g_emb: np.ndarray, g_pid: Sequence[str], chunk: int = 1024
) -> np.ndarray:
    """Rank (1-based, tie rule above) of each query's first gallery item of its product; -1 when it has none."""
    codes, _ = pd.factorize(pd.Series([*q_pid, *g_pid], dtype=str))
    q_code, g_code = codes[: len(q_pid)], codes[len(q_pid) :]
    g = np.asarray(g_emb, dtype=np.float32)
    ranks = []
    for start in range(0, len(q_code), chunk):
        q = np.asarray(q_emb[start : start + chunk], dtype=np.float32)
        scores = q @ g.T
        same = q_code[start : start + chunk, None] == g_code[None, :]
        best_same = np.where(same, scores, -np.inf).max(axis=1, initial=-np.inf)
        beaten_by = ((scores >= best_same[:, None]) & ~same).sum(axis=1)
        ranks.append(np.where(np.isfinite(best_same), 1 + beaten_by, -1))
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def recall_at_k(
    q_emb: np.ndarray,
    q_pid: Sequence[str],
    g_emb: np.ndarray,
    g_pid: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> dict[int | str, float]:
    """R@K in percent by inner-product score (cosine for L2-normalised embeddings).

    Returns {k: R@k for k in ks} plus "MRR" (mean reciprocal rank, in percent), "queries" (queries
    counted) and "excluded" (queries whose product has no gallery item). R@k and MRR are NaN when
    no query is counted.
    """
    rank = query_ranks(q_emb, q_pid, g_emb, g_pid, chunk)
    counted = rank[rank > 0]
    result: dict[int | str, float] = {
        k: float(100.0 * np.mean(counted <= k)) if len(counted) else float("nan") for k in ks
    }
    result["MRR"] = float(100.0 * np.mean(1.0 / counted)) if len(counted) else float("nan")
    result["queries"] = float(len(counted))
    result["excluded"] = float(len(rank) - len(counted))
    return result


def direction_masks(
    domains: Sequence[str], splits: Sequence[str], split: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per direction, boolean masks of its queries and its gallery: the items of ``split`` in the two domains."""
    chosen = np.asarray(splits, dtype=str) == split
    dom = np.asarray(domains, dtype=str)
    return {
        d: (chosen & (dom == DOMAIN_OF_CODE[d[0]]), chosen & (dom == DOMAIN_OF_CODE[d[2]])) for d in DIRECTIONS
    }


def direction_hits(
    embeddings: np.ndarray, product_ids: Sequence[str], domains: Sequence[str], splits: Sequence[str], split: str = "test"
) -> dict[str, pd.DataFrame]:
    """Per direction, one row per counted query of ``split``: its product_id and hit@1 (bool)."""
    pids = np.asarray(product_ids, dtype=str)
    hits = {}
    for direction, (q, g) in direction_masks(domains, splits, split).items():
        rank = query_ranks(embeddings[q], pids[q], embeddings[g], pids[g])
        hits[direction] = pd.DataFrame({"product_id": pids[q][rank > 0], "hit": rank[rank > 0] == 1})
    return hits


def bootstrap_r1(
    runs: Sequence[dict[str, pd.DataFrame]], resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile interval of each direction's R@1 and of mR1, mean over ``runs`` (seeds), resampling products.

    ``runs``: ``direction_hits`` of each run on the same items. One resample draws the
    products with replacement; every run is scored on that same draw, then averaged.
    """
    products = sorted(set().union(*(set(h["product_id"]) for run in runs for h in run.values())))
    index = {p: i for i, p in enumerate(products)}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(products), (resamples, len(products)))
    weights = np.stack([np.bincount(draw, minlength=len(products)) for draw in draws])
    per_direction = {}
    for direction in DIRECTIONS:
        recalls = []
        for run in runs:
            rows = run[direction]
            at = rows["product_id"].map(index).to_numpy()
            hits = np.bincount(at, weights=rows["hit"].to_numpy(dtype=float), minlength=len(products))
            counts = np.bincount(at, minlength=len(products)).astype(float)
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls.append(100.0 * (weights @ hits) / (weights @ counts))
        per_direction[direction] = np.nanmean(recalls, axis=0)
    per_direction["mR1"] = np.mean([per_direction[d] for d in DIRECTIONS], axis=0)
    tail = 100.0 * (1.0 - level) / 2
    return {key: (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100.0 - tail))) for key, v in per_direction.items()}


def evaluate(
    embeddings: np.ndarray,
    product_ids: Sequence[str],
    domains: Sequence[str],
    splits: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    split: str = "test",
) -> dict[str, float]:
    """Six-direction R@K on the items of one split, gallery = all items of that split in the target domain.

    ``split`` is "val" for every choice (early stopping, promotion) and "test" only to report.
    Keys: "<DIR>/R@<k>", "<DIR>/MRR", "<DIR>/queries", "<DIR>/excluded" for DIR in DIRECTIONS,
    "mR1" and "mMRR" (means over the six directions).
    """
    pids = np.asarray(product_ids, dtype=str)
    metrics: dict[str, float] = {}
    for direction, (q, g) in direction_masks(domains, splits, split).items():
        r = recall_at_k(embeddings[q], pids[q], embeddings[g], pids[g], ks)
        for k in ks:
            metrics[f"{direction}/R@{k}"] = r[k]
        metrics[f"{direction}/MRR"] = r["MRR"]
        metrics[f"{direction}/queries"] = r["queries"]
        metrics[f"{direction}/excluded"] = r["excluded"]
    metrics["mR1"] = float(np.mean([metrics[f"{d}/R@1"] for d in DIRECTIONS]))
    metrics["mMRR"] = float(np.mean([metrics[f"{d}/MRR"] for d in DIRECTIONS]))
    return metrics


@dataclass(frozen=True, order=True)
class ValidationScore:
    """What every choice compares on validation: mR1 first, mMRR to break its ties (order=True:
    a higher mR1 wins, an equal mR1 goes to the higher mMRR)."""

    mR1: float
    mMRR: float

    @classmethod
    def of(cls, metrics: dict[str, float]) -> ValidationScore:
        return cls(metrics["mR1"], metrics["mMRR"])

    def __str__(self) -> str:
        return f"mR1 {self.mR1:.2f} (mMRR {self.mMRR:.2f})"


def metrics_from_embeddings_frame(df: pd.DataFrame, ks: Sequence[int] = (1, 5, 10), split: str = "test") -> dict[str, float]:
    """evaluate() on a frame with columns product_id, domain, split, embedding (list of floats)."""
    emb = np.stack(df["embedding"].to_list()).astype(np.float32) if len(df) else np.zeros((0, 1), np.float32)
    return evaluate(emb, df["product_id"].tolist(), df["domain"].tolist(), df["split"].tolist(), ks, split)


def markdown_table(metrics: dict[str, float]) -> str:
    """Directions as rows, R@K as columns (K read from the keys), then an mR1 row."""
    ks = sorted(int(key.split("@")[1]) for key in metrics if key.startswith(f"{DIRECTIONS[0]}/R@"))
    lines = [
        "| direction | " + " | ".join(f"R@{k}" for k in ks) + " |",
        "|---|" + "---:|" * len(ks),
    ]
    for d in DIRECTIONS:
        lines.append(f"| {d} | " + " | ".join(f"{metrics[f'{d}/R@{k}']:.1f}" for k in ks) + " |")
    lines.append(f"| mR1 | {metrics['mR1']:.1f} |" + " |" * (len(ks) - 1))
    return "\n".join(lines)
