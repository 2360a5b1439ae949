"""FAISS at 100k and 1M items: build time, memory, recall@10 against exact search, and QPS, per index setting.

    .venv/bin/python benchmarks/faiss_scale.py                  # 100k and 1M (about 15 min on 2 cores)
    .venv/bin/python benchmarks/faiss_scale.py --sizes 100000   # one size

Vectors are synthetic, 128-d, L2-normalised, four items per product scattered around the product's
direction; queries are held-out items of gallery products (not in the gallery), as a cross-domain
query is. Two kinds of catalogue (`--data`):
- `catalogue`: products grouped in 1,000 categories (a product is its category's direction plus
  its own offset), so an item's neighbours after its product's items are products of its category,
  as in an embedding space that separates kinds of goods;
- `uniform`: product directions uniformly at random, so the neighbours after an item's own product
  are nearly equidistant strangers: the hardest case for any approximate index.
Each approximate setting is compared with exact search (`IndexFlatIP`) on the same queries. Memory
is the index's serialised size, which is what it holds in memory (an IVF index loaded with
`IO_FLAG_MMAP`, as `ampere.retrieval.index.load_index` reads it, pages its lists in on demand).
QPS: 1,000 queries in one batch on all of faiss's threads (throughput), and one query at a time
(200 queries, as a search service sends them; the latency that matters for serving).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable

import faiss
import numpy as np

DIM, ITEMS_PER_PRODUCT, QUERIES, K = 128, 4, 1000, 10


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embedding_like(n: int, seed: int, data: str) -> tuple[np.ndarray, np.ndarray]:
    """(gallery [n, 128], queries [QUERIES, 128]): unit vectors of n / 4 products, 4 items each, and
    one held-out item of QUERIES of those products."""
    rng = np.random.default_rng(seed)
    products = n // ITEMS_PER_PRODUCT
    centres = unit(rng.standard_normal((products, DIM), dtype=np.float32))
    if data == "catalogue":
        categories = unit(rng.standard_normal((1000, DIM), dtype=np.float32))
        centres = unit(categories[rng.integers(0, 1000, products)] + 0.8 * centres)

    def items(of: np.ndarray) -> np.ndarray:
        x = centres[of] + rng.standard_normal((len(of), DIM), dtype=np.float32) * (0.6 / math.sqrt(DIM))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    gallery = np.concatenate([items(np.arange(start, min(start + 100_000, products)).repeat(ITEMS_PER_PRODUCT))
                              for start in range(0, products, 100_000)])  # fmt: skip
    return gallery, items(rng.choice(products, QUERIES, replace=False))


def exact_top_k(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    index = faiss.IndexFlatIP(DIM)
    index.add(gallery)
    return index.search(queries, K)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def measure(data: str, name: str, build: Callable[[], faiss.Index], gallery: np.ndarray, queries: np.ndarray, truth: np.ndarray,
            knobs: list[tuple[str, Callable[[faiss.Index], None]]]) -> None:  # fmt: skip
    """Prints one row per search knob: build seconds, memory MB, recall@10, QPS (index written, then read back)."""
    start = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/index.faiss"
        faiss.write_index(index, path)
        size = os.path.getsize(path) / 2**20
        del index
        loaded = faiss.read_index(path, faiss.IO_FLAG_MMAP if "IVF" in name else 0)
        for label, knob in knobs:
            knob(loaded)
            loaded.search(queries[:50], K)  # warm-up
            start = time.perf_counter()
            found = loaded.search(queries, K)[1]
            batch = len(queries) / (time.perf_counter() - start)
            start = time.perf_counter()
            for row in range(200):
                loaded.search(queries[row : row + 1], K)
            single = 200 / (time.perf_counter() - start)
            print(f"| {data} | {len(gallery):,} | {name} | {label} | {seconds:.1f} | {size:.0f} | {recall(found, truth):.3f} | "
                  f"{batch:,.0f} | {single:,.0f} |", flush=True)  # fmt: skip
        del loaded


def ivf_nprobe(value: int) -> Callable[[faiss.Index], None]:
    return lambda index: setattr(faiss.extract_index_ivf(index), "nprobe", value)


def run(n: int, seed: int, train_sample: int, data: str, kinds: list[str]) -> None:
    gallery, queries = embedding_like(n, seed, data)
    truth = exact_top_k(gallery, queries)
    sample = gallery[np.random.default_rng(seed).choice(n, min(n, train_sample), replace=False)]
    nlist = round(4 * math.sqrt(n))

    def flat() -> faiss.Index:
        index = faiss.IndexFlatIP(DIM)
        index.add(gallery)
        return index

    def ivf(codec: str) -> Callable[[], faiss.Index]:
        def build() -> faiss.Index:
            index = faiss.index_factory(DIM, f"IVF{nlist},{codec}", faiss.METRIC_INNER_PRODUCT)
            index.train(sample)
            index.add(gallery)
            return index

        return build

    def hnsw() -> faiss.Index:
        index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 100
        index.add(gallery)
        return index

    probes = [(f"nprobe {p}", ivf_nprobe(p)) for p in (32, 128, 512, 2048)]
    ef = [(f"efSearch {e}", lambda index, e=e: setattr(index.hnsw, "efSearch", e)) for e in (128, 256, 512, 1024, 2048)]
    settings = {
        "flat": ("Flat (exact)", flat, [("-", lambda index: None)]),
        "ivf": (f"IVF{nlist},Flat", ivf("Flat"), probes),
        "sq8": (f"IVF{nlist},SQ8", ivf("SQ8"), probes),
        "hnsw": ("HNSW32 (efConstruction 100)", hnsw, ef),
    }
    for kind in kinds:
        name, build, knobs = settings[kind]
        measure(data, name, build, gallery, queries, truth, knobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-sample", type=int, default=131_072, help="vectors the IVF k-means trains on")
    parser.add_argument("--data", nargs="+", choices=["catalogue", "uniform"], default=["catalogue", "uniform"])
    parser.add_argument("--indexes", nargs="+", choices=["flat", "ivf", "sq8", "hnsw"], default=["flat", "ivf", "sq8", "hnsw"])
    args = parser.parse_args()
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    print("\n| data | gallery | index | search setting | build s | memory MB | recall@10 | QPS, batch | QPS, one by one |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for data in args.data:
        for n in args.sizes:
            run(n, args.seed, args.train_sample, data, args.indexes)


if __name__ == "__main__":
    main()
