"""Build time, queries/s and recall@10 of exact vs HNSW vs IVF indexes on random unit vectors.

    .venv/bin/python benchmarks/index_recall.py --n 20000 100000

Random unit vectors in 128-d are a worst case for approximate search (no low-dimensional
structure), so these recalls are lower bounds for trained embeddings. Recall is reported on the
queries the build gate uses (gallery samples moved by small noise) and on fresh random queries.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from ampere.retrieval.index import IndexConfig, make_index, perturbed_queries, recall_at_10


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    defaults = IndexConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20_000, 100_000], help="gallery sizes")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m)
    parser.add_argument("--ef-construction", type=int, default=defaults.hnsw_ef_construction)
    parser.add_argument("--ef-search", type=int, default=defaults.hnsw_ef_search)
    parser.add_argument("--nprobe", type=int, default=defaults.ivf_nprobe)
    args = parser.parse_args()
    config = IndexConfig(
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.ef_construction,
        hnsw_ef_search=args.ef_search,
        ivf_nprobe=args.nprobe,
        recall_queries=args.queries,
    )
    rng = np.random.default_rng(0)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, dim {args.dim}, {args.queries} queries")
    print(f"{'n':>8} {'index':<6} {'params':<44} {'build s':>8} {'queries/s':>10} {'R@10 pert':>9} {'R@10 rand':>9}")
    for n in args.n:
        vectors = _unit(rng, n, args.dim)
        ids = np.arange(n, dtype=np.int64)
        query_sets = {"pert": perturbed_queries(vectors, config), "rand": _unit(rng, args.queries, args.dim)}
        for kind in ("flat", "hnsw", "ivf"):
            start = time.perf_counter()
            index, params = make_index(kind, vectors, ids, config)
            build_s = time.perf_counter() - start
            start = time.perf_counter()
            index.search(query_sets["rand"], 10)
            qps = args.queries / (time.perf_counter() - start)
            recalls = [recall_at_10(index, vectors, ids, q) for q in query_sets.values()]
            print(
                f"{n:>8} {kind:<6} {str(params):<44} {build_s:>8.2f} {qps:>10.0f} {recalls[0]:>9.3f} {recalls[1]:>9.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
