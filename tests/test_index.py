import json

import faiss
import numpy as np
import pandas as pd
import pytest

from ampere.retrieval.index import IndexConfig, build_indexes, load_index, search, stable_id


def _frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for domain, n in (("page", 30), ("short", 40), ("live", 25)):
        emb = rng.normal(size=(n, 16)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        for i in range(n):
            rows.append(
                {
                    "item_id": f"{domain}-{i}",
                    "product_id": f"p{i % 12}",
                    "domain": domain,
                    "split": "test" if i % 2 else "train",
                    "embedding": emb[i].tolist(),
                }
            )
    return pd.DataFrame(rows)


def test_stable_id():
    assert stable_id("item-1") == stable_id("item-1")
    assert stable_id("item-1") != stable_id("item-2")
    ids = [stable_id(f"x{i}") for i in range(1000)]
    assert all(0 <= i < 2**63 for i in ids) and len(set(ids)) == 1000


def test_build_and_search_match_brute_force(tmp_path):
    df = _frame()
    info = build_indexes(df, tmp_path)
    assert {d: v["count"] for d, v in info.items()} == {"page": 30, "short": 40, "live": 25}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["domains"]["short"]["index_type"] == "IndexIDMap2(IndexFlatIP)" and manifest["domains"]["short"]["dim"] == 16
    assert manifest["domains"]["short"]["fallback"] is None and manifest["config"]["exact_below"] == 50_000
    assert set(manifest["domains"]["live"]["files"]) == {"live.faiss", "live.ids.parquet", "live.vectors.npy"}

    ids = pd.read_parquet(tmp_path / "short.ids.parquet")
    assert ids["id"].tolist() == [stable_id(i) for i in ids["item_id"]]
    loaded = load_index(tmp_path, "short")
    short = df[df["domain"] == "short"]
    np.testing.assert_array_equal(np.sort(loaded.ids.index.to_numpy()), np.sort(ids["id"].to_numpy()))
    for item_id, embedding in zip(short["item_id"], short["embedding"], strict=True):  # an indexed item is a query
        np.testing.assert_array_equal(loaded.vector(item_id), np.asarray(embedding, dtype=np.float32))
    assert loaded.vector("not-indexed") is None

    gallery = np.stack(short["embedding"].to_list()).astype(np.float32)
    queries = np.stack(df[df["domain"] == "page"]["embedding"].to_list())[:7].astype(np.float32)
    results = search(tmp_path, "short", queries, k=5)
    scores = queries @ gallery.T
    for q, hits in enumerate(results):
        best = np.argsort(-scores[q])[:5]
        assert [h[0] for h in hits] == short["item_id"].iloc[best].tolist()
        assert [h[1] for h in hits] == short["product_id"].iloc[best].tolist()
        np.testing.assert_allclose([h[2] for h in hits], scores[q, best], atol=1e-5)


def test_split_filter_k_larger_than_index_and_single_query(tmp_path):
    df = _frame()
    info = build_indexes(df, tmp_path, split="test")
    assert info["live"]["count"] == 12
    hits = search(tmp_path, "live", np.asarray(df["embedding"].iloc[0], dtype=np.float32), k=50)
    assert len(hits) == 1 and len(hits[0]) == 12
    assert all(item.endswith(("1", "3", "5", "7", "9")) for item, _, _ in hits[0])


def test_tampered_index_and_missing_domain_are_errors(tmp_path):
    build_indexes(_frame()[lambda d: d["domain"] != "live"], tmp_path)
    with pytest.raises(KeyError, match="live"):
        load_index(tmp_path, "live")
    with open(tmp_path / "page.faiss", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="sha256"):
        load_index(tmp_path, "page")


def test_duplicate_item_ids_rejected(tmp_path):
    df = _frame()
    df = pd.concat([df, df.iloc[[0]]])
    with pytest.raises(ValueError, match="duplicate"):
        build_indexes(df, tmp_path)


def test_approximate_search_params_survive_write_and_load(tmp_path):
    df = _frame()
    build_indexes(df[df["domain"] == "short"], tmp_path / "hnsw", config=IndexConfig(exact_below=10, hnsw_ef_search=77))
    loaded = load_index(tmp_path / "hnsw", "short")  # holds the IDMap2 that owns the inner index
    inner = faiss.downcast_index(loaded.index.index)
    assert isinstance(inner, faiss.IndexHNSW) and inner.hnsw.efSearch == 77
    config = IndexConfig(exact_below=10, approximate="ivf", ivf_nlist=4, ivf_nprobe=3, min_recall_at_10=0.0)
    build_indexes(df[df["domain"] == "short"], tmp_path / "ivf", config=config)
    loaded = load_index(tmp_path / "ivf", "short")
    # with faiss-gpu the IVF index is served from GPU 0: bring a copy back to read its settings
    served = faiss.index_gpu_to_cpu(loaded.index) if faiss.get_num_gpus() else loaded.index
    inner = faiss.downcast_index(served.index)
    assert isinstance(inner, faiss.IndexIVFFlat) and (inner.nlist, inner.nprobe) == (4, 3)


def _gallery(n: int = 2000, dim: int = 16, seed: int = 1) -> pd.DataFrame:
    emb = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"short-{i}" for i in range(n)]
    return pd.DataFrame({"item_id": ids, "product_id": ids, "domain": "short", "embedding": list(emb)})


def test_the_search_width_is_raised_until_the_recall_gate_passes(tmp_path):
    """One probe of 32 lists misses most neighbours; the build doubles nprobe until recall@10 passes,
    records each try, and the served index searches with the chosen width."""
    config = IndexConfig(exact_below=100, approximate="ivf", ivf_nlist=32, ivf_nprobe=1, max_search_widening=32)
    config.min_recall_at_10 = 0.9
    entry = build_indexes(_gallery(), tmp_path, config=config)["short"]
    widths = [row["nprobe"] for row in entry["search_widths"]]
    recalls = [row["recall_at_10"] for row in entry["search_widths"]]
    assert widths == [2**i for i in range(len(widths))] and len(widths) > 1
    assert recalls[-1] >= 0.9 > max(recalls[:-1]) and entry["fallback"] is None
    assert entry["index_params"]["nprobe"] == widths[-1] and entry["recall_at_10"] == recalls[-1]
    served = load_index(tmp_path, "short").index
    served = faiss.index_gpu_to_cpu(served) if faiss.get_num_gpus() else served
    assert faiss.extract_index_ivf(served).nprobe == widths[-1]


def test_a_gallery_that_no_allowed_width_serves_well_falls_back_to_exact_search(tmp_path):
    config = IndexConfig(exact_below=100, approximate="ivf", ivf_nlist=32, ivf_nprobe=1, max_search_widening=2)
    config.min_recall_at_10 = 0.99
    entry = build_indexes(_gallery(), tmp_path, config=config)["short"]
    assert entry["index_type"] == "IndexIDMap2(IndexFlatIP)"
    assert [row["nprobe"] for row in entry["fallback"]["search_widths"]] == [1, 2]
    assert "recall@10" in entry["fallback"]["reason"]
