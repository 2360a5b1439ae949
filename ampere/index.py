"""FAISS retrieval indexes: one exact inner-product index per domain, with a manifest."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

DOMAINS = ("page", "short", "live")
INDEX_TYPE = "IndexIDMap2(IndexFlatIP)"


def stable_id(item_id: str) -> int:
    """A 63-bit non-negative id from blake2b of the item id (same on every machine and run)."""
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.cache
def _gpu_resources() -> faiss.StandardGpuResources:
    """One set of GPU resources per process, kept alive for every GPU index."""
    return faiss.StandardGpuResources()


def _on_gpu(index: faiss.Index) -> faiss.Index:
    """The index cloned to GPU 0 when faiss has GPUs, else the index itself."""
    if faiss.get_num_gpus() > 0:
        return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    return index


def _to_cpu(index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index) if faiss.get_num_gpus() > 0 else index


def build_indexes(df: pd.DataFrame, out_dir: str | Path, split: str | None = None) -> dict[str, dict]:
    """Write one IndexIDMap2(IndexFlatIP) per domain present in ``df``.

    ``df`` has columns item_id, product_id, domain, embedding (list of floats) and, when
    ``split`` is given, split (only those rows are indexed). Writes <domain>.faiss,
    <domain>.ids.parquet (id, item_id, product_id) and manifest.json (counts, dim, index
    type, faiss version, sha256 per file). Returns per-domain info.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if split is not None:
        df = df[df["split"] == split]
    info: dict[str, dict] = {}
    for domain in DOMAINS:
        part = df[df["domain"] == domain]
        if part.empty:
            continue
        emb = np.ascontiguousarray(np.stack(part["embedding"].to_list()), dtype=np.float32)
        ids = pd.DataFrame(
            {
                "id": np.array([stable_id(i) for i in part["item_id"]], dtype=np.int64),
                "item_id": part["item_id"].astype(str).to_numpy(),
                "product_id": part["product_id"].astype(str).to_numpy(),
            }
        )
        if ids["id"].duplicated().any():
            dup = ids.loc[ids["id"].duplicated(keep=False), "item_id"].tolist()
            raise ValueError(f"{domain}: duplicate item ids or id collision: {dup[:10]}")
        index = _on_gpu(faiss.IndexIDMap2(faiss.IndexFlatIP(emb.shape[1])))
        index.add_with_ids(emb, ids["id"].to_numpy())
        index_file, ids_file = out_dir / f"{domain}.faiss", out_dir / f"{domain}.ids.parquet"
        faiss.write_index(_to_cpu(index), str(index_file))
        ids.to_parquet(ids_file, index=False)
        info[domain] = {
            "count": len(ids),
            "dim": int(emb.shape[1]),
            "files": {f.name: _sha256(f) for f in (index_file, ids_file)},
        }
    manifest = {
        "index_type": INDEX_TYPE,
        "metric": "inner_product",
        "faiss_version": faiss.__version__,
        "split": split or "all",
        "domains": info,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return info


@dataclass
class DomainIndex:
    """A loaded domain index and its id table (indexed by the stable id)."""

    index: faiss.Index
    ids: pd.DataFrame

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, str, float]]]:
        """Top-k (item_id, product_id, score) per query row, best first."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.index.ntotal)
        if k <= 0:
            return [[] for _ in queries]
        scores, found = self.index.search(queries, k)
        results = []
        for row_scores, row_ids in zip(scores, found, strict=True):
            valid = row_ids >= 0
            hits = self.ids.loc[row_ids[valid]]
            results.append(
                [
                    (i, p, float(s))
                    for i, p, s in zip(hits["item_id"], hits["product_id"], row_scores[valid], strict=True)
                ]
            )
        return results


def load_index(index_dir: str | Path, domain: str) -> DomainIndex:
    """Load <domain>.faiss and its ids, checking both files against manifest.json's sha256."""
    index_dir = Path(index_dir)
    manifest = json.loads((index_dir / "manifest.json").read_text())
    if domain not in manifest["domains"]:
        raise KeyError(f"no {domain!r} index in {index_dir} (has {sorted(manifest['domains'])})")
    for name, sha in manifest["domains"][domain]["files"].items():
        if _sha256(index_dir / name) != sha:
            raise ValueError(f"{index_dir / name}: sha256 differs from manifest.json")
    index = faiss.read_index(str(index_dir / f"{domain}.faiss"))
    ids = pd.read_parquet(index_dir / f"{domain}.ids.parquet").set_index("id")
    return DomainIndex(_on_gpu(index), ids)


def search(index_dir: str | Path, domain: str, queries: np.ndarray, k: int) -> list[list[tuple[str, str, float]]]:
    """Load the domain's index and return top-k (item_id, product_id, score) per query."""
    return load_index(index_dir, domain).search(queries, k)
