"""FAISS retrieval indexes, one per domain, with a manifest.

A domain index is exact (IndexIDMap2(IndexFlatIP)) below ``IndexConfig.exact_below`` vectors and
approximate above it (HNSW or IVF, inner product, wrapped in IndexIDMap2 so that search returns the
stable ids). An approximate index is used only after its recall@10 against exact search passes
``IndexConfig.min_recall_at_10``; otherwise the build falls back to exact search or raises.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
import pandas as pd

from ampere.lineage.hashing import content_hash

DOMAINS = ("page", "short", "live")
INDEX_TYPES = {
    "flat": "IndexIDMap2(IndexFlatIP)",
    "ivf": "IndexIDMap2(IndexIVFFlat)",
    "hnsw": "IndexIDMap2(IndexHNSWFlat)",
}
RECALL_K = 10


@dataclass
class IndexConfig:
    """How each domain's index is built and the recall gate an approximate index must pass."""

    exact_below: int = 50_000  # galleries with fewer vectors get an exact index
    approximate: Literal["ivf", "hnsw"] = "hnsw"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 100
    hnsw_ef_search: int = 128
    ivf_nlist: int | None = None  # None: 4 * sqrt(n), at most n
    ivf_nprobe: int = 64
    min_recall_at_10: float = 0.95
    # Below the gate, the search width (HNSW efSearch, IVF nprobe) is doubled, up to this factor of its
    # configured value, before falling back: the setting that passes is chosen per gallery, so per size.
    max_search_widening: int = 8
    fallback_to_exact: bool = True  # below the gate: exact index (recorded) instead of IndexQualityError
    recall_queries: int = 1000  # gallery vectors sampled and perturbed when no held-out queries are given
    recall_noise: float = 0.05  # norm of the gaussian perturbation of those samples
    seed: int = 0


class IndexQualityError(ValueError):
    """An approximate index missed the recall@10 gate."""

    def __init__(self, message: str, recall: float):
        super().__init__(message)
        self.recall = recall


def stable_id(item_id: str) -> int:
    """A 63-bit non-negative id from blake2b of the item id (same on every machine and run)."""
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


@functools.cache
def _gpu_resources() -> faiss.StandardGpuResources:
    """One set of GPU resources per process, kept alive for every GPU index."""
    return faiss.StandardGpuResources()


_GPU_LOCK = threading.RLock()


@functools.cache
def _num_gpus() -> int:
    """GPUs faiss can use in this process (asked once: searches check it on every call)."""
    return faiss.get_num_gpus()


def _gpu_calls() -> contextlib.AbstractContextManager:
    """Serialises faiss calls while GPUs are in use: GPU resources and GPU indexes are not thread-safe
    (a reader thread searching while another builds aborted the process on an H100)."""
    return _GPU_LOCK if _num_gpus() else contextlib.nullcontext()


def _gpu_ok(index_type: str) -> bool:
    """Whether an index of this type goes to GPU 0 here (faiss has no GPU HNSW)."""
    return index_type != INDEX_TYPES["hnsw"] and _num_gpus() > 0


def _on_gpu(index: faiss.Index, index_type: str) -> faiss.Index:
    """The index on the GPUs when faiss has them and supports the type (one GPU: cloned to GPU 0;
    several: sharded across all of them, each holding a share of the vectors), else the index itself."""
    if not _gpu_ok(index_type):
        return index
    if _num_gpus() == 1:
        return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    return faiss.index_cpu_to_all_gpus(index, co=options)


def _to_cpu(index: faiss.Index, index_type: str) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index) if _gpu_ok(index_type) else index


def make_index(
    kind: Literal["flat", "ivf", "hnsw"], vectors: np.ndarray, ids: np.ndarray, config: IndexConfig
) -> tuple[faiss.Index, dict]:
    """Build (train and fill) an index of ``kind`` over ``vectors`` keyed by ``ids``; returns it and its params."""
    n, dim = vectors.shape
    if kind == "flat":
        inner, params = faiss.IndexFlatIP(dim), {}
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = config.hnsw_ef_construction
        inner.hnsw.efSearch = config.hnsw_ef_search
        params = {"M": config.hnsw_m, "efConstruction": config.hnsw_ef_construction, "efSearch": config.hnsw_ef_search}
    elif kind == "ivf":
        nlist = min(n, config.ivf_nlist or max(1, round(4 * math.sqrt(n))))
        inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        inner.nprobe = min(config.ivf_nprobe, nlist)
        params = {"nlist": nlist, "nprobe": inner.nprobe}
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    with _gpu_calls():
        index = _on_gpu(faiss.IndexIDMap2(inner), INDEX_TYPES[kind])
        if not index.is_trained:
            index.train(vectors)
        index.add_with_ids(vectors, ids)
    return index, params


def perturbed_queries(vectors: np.ndarray, config: IndexConfig) -> np.ndarray:
    """A seeded sample of gallery vectors, each moved by gaussian noise of norm ~``config.recall_noise``."""
    rng = np.random.default_rng(config.seed)
    n, dim = vectors.shape
    sample = vectors[rng.choice(n, size=min(n, config.recall_queries), replace=False)]
    noise = rng.normal(scale=config.recall_noise / math.sqrt(dim), size=sample.shape)
    return np.ascontiguousarray(sample + noise, dtype=np.float32)


def recall_at_10(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> float:
    """Mean share of the exact top-10 (by inner product over ``vectors``) that ``index`` returns."""
    k = min(RECALL_K, len(vectors))
    _, exact = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    with _gpu_calls():
        _, found = index.search(queries, k)
    return float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found, ids[exact], strict=True)]))


# The search-time width of each approximate kind: raising it trades speed for recall without a rebuild.
_SEARCH_WIDTH = {"hnsw": "efSearch", "ivf": "nprobe"}


def _set_search_width(index: faiss.Index, kind: str, value: int) -> None:
    space = faiss.GpuParameterSpace() if _gpu_ok(INDEX_TYPES[kind]) else faiss.ParameterSpace()
    with _gpu_calls():
        space.set_index_parameter(index, _SEARCH_WIDTH[kind], value)


def _exact_entry(fallback: dict | None) -> dict:
    return {
        "index_type": INDEX_TYPES["flat"],
        "index_params": {},
        "recall_at_10": None,
        "recall_queries": None,
        "fallback": fallback,
    }


def build_domain_index(
    vectors: np.ndarray, ids: np.ndarray, config: IndexConfig, queries: np.ndarray | None = None
) -> tuple[faiss.Index, dict]:
    """The index for one gallery and its manifest entry (index_type, index_params, recall_at_10, fallback).

    Approximate indexes are checked on ``queries`` (held out) or on perturbed gallery samples; below
    the gate their search width (efSearch / nprobe) is doubled until it passes, up to
    ``max_search_widening`` times the configured one (each try is recorded as ``search_widths``).
    """
    if len(vectors) < config.exact_below:
        index, _ = make_index("flat", vectors, ids, config)
        return index, _exact_entry(fallback=None)
    kind = config.approximate
    index, params = make_index(kind, vectors, ids, config)
    checked_on = "held_out" if queries is not None else "perturbed_gallery"
    if queries is None:
        queries = perturbed_queries(vectors, config)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    knob = _SEARCH_WIDTH[kind]
    widest = params[knob] * config.max_search_widening
    if kind == "ivf":
        widest = min(widest, params["nlist"])  # nprobe beyond nlist probes nothing more
    tried = []
    while True:
        recall = recall_at_10(index, vectors, ids, queries)
        tried.append({knob: params[knob], "recall_at_10": recall})
        if recall >= config.min_recall_at_10 or params[knob] >= widest:
            break
        params[knob] = min(2 * params[knob], widest)
        _set_search_width(index, kind, params[knob])
    entry = {
        "index_type": INDEX_TYPES[kind],
        "index_params": params,
        "recall_at_10": recall,
        "recall_queries": {"source": checked_on, "count": len(queries)},
        "search_widths": tried,
        "fallback": None,
    }
    if recall >= config.min_recall_at_10:
        return index, entry
    message = f"{entry['index_type']} {params}: recall@10 {recall:.4f} < {config.min_recall_at_10}"
    if not config.fallback_to_exact:
        raise IndexQualityError(message, recall)
    index, _ = make_index("flat", vectors, ids, config)
    kept = ("index_type", "index_params", "recall_at_10", "recall_queries", "search_widths")
    fallback = {"reason": message, **{k: entry[k] for k in kept}}
    return index, _exact_entry(fallback)


def build_indexes(
    df: pd.DataFrame,
    out_dir: str | Path,
    split: str | None = None,
    config: IndexConfig | None = None,
    queries: Mapping[str, np.ndarray] | None = None,
    about: Mapping[str, str] | None = None,
) -> dict[str, dict]:
    """Write one index per domain present in ``df``; manifest.json is written last.

    ``df`` has columns item_id, product_id, domain, embedding (list of floats), optionally
    content_key (recorded in the ids file: what a catalogue refresh diffs against) and, when
    ``split`` is given, split (only those rows are indexed). ``queries`` optionally maps a
    domain to held-out query vectors for the recall gate; ``about`` is recorded as the manifest's
    "about" (which model version and data version the vectors come from). Writes <domain>.faiss,
    <domain>.ids.parquet (id, item_id, product_id[, content_key]), <domain>.vectors.npy (the indexed vectors,
    row-aligned with the ids, so an indexed item is a query without its media) and manifest.json
    (config, faiss version, about and, per domain: count, dim, index type, params, measured
    recall, fallback, sha256 per file). Returns the per-domain manifest entries.
    """
    config = config or IndexConfig()
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
        if "content_key" in part:
            ids["content_key"] = part["content_key"].astype(str).to_numpy()
        if ids["id"].duplicated().any():
            dup = ids.loc[ids["id"].duplicated(keep=False), "item_id"].tolist()
            raise ValueError(f"{domain}: duplicate item ids or id collision: {dup[:10]}")
        index, entry = build_domain_index(emb, ids["id"].to_numpy(), config, (queries or {}).get(domain))
        index_file, ids_file, vectors_file = (out_dir / f"{domain}.{end}" for end in ("faiss", "ids.parquet", "vectors.npy"))
        with _gpu_calls():
            faiss.write_index(_to_cpu(index, entry["index_type"]), str(index_file))
        ids.to_parquet(ids_file, index=False)
        np.save(vectors_file, emb)
        info[domain] = {
            "count": len(ids),
            "dim": int(emb.shape[1]),
            **entry,
            "files": {f.name: content_hash(f, "file") for f in (index_file, ids_file, vectors_file)},
        }
    manifest = {
        "metric": "inner_product",
        "faiss_version": faiss.__version__,
        "split": split or "all",
        "about": dict(about or {}),
        "config": asdict(config),
        "domains": info,
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return info


def verify_manifest(index_dir: str | Path, domains: list[str] | None = None) -> dict:
    """manifest.json of ``index_dir`` after checking the sha256 of every file it lists (or of ``domains``')."""
    index_dir = Path(index_dir)
    manifest_file = index_dir / "manifest.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{manifest_file} missing: not a complete index folder")
    manifest = json.loads(manifest_file.read_text())
    for domain in domains if domains is not None else list(manifest["domains"]):
        if domain not in manifest["domains"]:
            raise KeyError(f"no {domain!r} index in {index_dir} (has {sorted(manifest['domains'])})")
        for name, sha in manifest["domains"][domain]["files"].items():
            if content_hash(index_dir / name, "file") != sha:
                raise ValueError(f"{index_dir / name}: sha256 differs from manifest.json")
    return manifest


@dataclass
class DomainIndex:
    """A loaded domain index, its id table (indexed by the stable id) and its vectors (memory-mapped,
    row-aligned with the ids file)."""

    index: faiss.Index
    ids: pd.DataFrame
    vectors: np.ndarray

    def __post_init__(self) -> None:
        self.rows = {item_id: row for row, item_id in enumerate(self.ids["item_id"])}  # item id -> row of vectors
        self._names = dict(zip(self.ids.index, zip(self.ids["item_id"], self.ids["product_id"], strict=True), strict=True))

    def vector(self, item_id: str) -> np.ndarray | None:
        """The indexed vector of ``item_id``, or None when this gallery does not hold it."""
        row = self.rows.get(item_id)
        return None if row is None else np.asarray(self.vectors[row], dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, str, float]]]:
        """Top-k (item_id, product_id, score) per query row, best first."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.index.ntotal)
        if k <= 0:
            return [[] for _ in queries]
        with _gpu_calls():
            scores, found = self.index.search(queries, k)
        return [
            [(*self._names[i], s) for i, s in zip(row_ids.tolist(), row_scores.tolist(), strict=True) if i >= 0]
            for row_scores, row_ids in zip(scores, found, strict=True)
        ]


def load_index(index_dir: str | Path, domain: str) -> DomainIndex:
    """Load <domain>.faiss, its ids and its vectors, checking the files against manifest.json's sha256."""
    index_dir = Path(index_dir)
    manifest = verify_manifest(index_dir, [domain])
    index_type = manifest["domains"][domain]["index_type"]
    # An IVF index's lists are memory-mapped (pages read on demand; the folder is immutable).
    flags = faiss.IO_FLAG_MMAP if index_type == INDEX_TYPES["ivf"] else 0
    index = faiss.read_index(str(index_dir / f"{domain}.faiss"), flags)
    ids = pd.read_parquet(index_dir / f"{domain}.ids.parquet").set_index("id")
    vectors = np.load(index_dir / f"{domain}.vectors.npy", mmap_mode="r")
    with _gpu_calls():
        return DomainIndex(_on_gpu(index, index_type), ids, vectors)


def search(index_dir: str | Path, domain: str, queries: np.ndarray, k: int) -> list[list[tuple[str, str, float]]]:
    """Load the domain's index and return top-k (item_id, product_id, score) per query."""
    return load_index(index_dir, domain).search(queries, k)
