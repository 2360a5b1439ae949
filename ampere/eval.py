"""Cross-domain retrieval metrics (ROPE protocol): R@K in six directions and mR1.

Tie rule (pessimistic, independent of gallery order): for a query, let s+ be the best score
among gallery items of its own product; its rank is 1 + the number of gallery items of OTHER
products scoring >= s+. A hit at K means rank <= K. Queries whose product has no gallery item
are excluded from the recall and counted separately.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DIRECTIONS = ["P2S", "P2L", "S2P", "S2L", "L2P", "L2S"]
DOMAIN_OF_CODE = {"P": "page", "S": "short", "L": "live"}


def recall_at_k(
    q_emb: np.ndarray,
    q_pid: Sequence[str],
    g_emb: np.ndarray,
    g_pid: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> dict[int | str, float]:
    """R@K in percent by inner-product score (cosine for L2-normalised embeddings).

    Returns {k: R@k for k in ks} plus "queries" (queries counted) and "excluded" (queries
    whose product has no gallery item). R@k is NaN when no query is counted.
    """
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
    rank = np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)
    counted = rank[rank > 0]
    result: dict[int | str, float] = {
        k: float(100.0 * np.mean(counted <= k)) if len(counted) else float("nan") for k in ks
    }
    result["queries"] = float(len(counted))
    result["excluded"] = float(len(rank) - len(counted))
    return result


def evaluate(
    embeddings: np.ndarray,
    product_ids: Sequence[str],
    domains: Sequence[str],
    splits: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Six-direction R@K on the split == "test" items, gallery = all test items of the target domain.

    Keys: "<DIR>/R@<k>", "<DIR>/queries", "<DIR>/excluded" for DIR in DIRECTIONS, and "mR1".
    """
    pids = np.asarray(product_ids, dtype=str)
    test = np.asarray(splits, dtype=str) == "test"
    dom = np.asarray(domains, dtype=str)
    metrics: dict[str, float] = {}
    for direction in DIRECTIONS:
        q = test & (dom == DOMAIN_OF_CODE[direction[0]])
        g = test & (dom == DOMAIN_OF_CODE[direction[2]])
        r = recall_at_k(embeddings[q], pids[q], embeddings[g], pids[g], ks)
        for k in ks:
            metrics[f"{direction}/R@{k}"] = r[k]
        metrics[f"{direction}/queries"] = r["queries"]
        metrics[f"{direction}/excluded"] = r["excluded"]
    metrics["mR1"] = float(np.mean([metrics[f"{d}/R@1"] for d in DIRECTIONS]))
    return metrics


def metrics_from_embeddings_frame(df: pd.DataFrame, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """evaluate() on a frame with columns product_id, domain, split, embedding (list of floats)."""
    emb = np.stack(df["embedding"].to_list()).astype(np.float32) if len(df) else np.zeros((0, 1), np.float32)
    return evaluate(emb, df["product_id"].tolist(), df["domain"].tolist(), df["split"].tolist(), ks)


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
