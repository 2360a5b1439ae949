import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from ampere.retrieval.index import IndexConfig, IndexQualityError, build_indexes
from ampere.retrieval.index_store import IndexConflictError, IndexReader, IndexStore, NoPreviousIndexError, index_key

DIM = 16
REPO = Path(__file__).resolve().parents[1]


def _vectors(seed: int, n: int = 200, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _frame(version: int, vectors: np.ndarray, domains: tuple[str, ...] = ("page",)) -> pd.DataFrame:
    """Items whose ids encode the index version they belong to: v<version>-<domain>-<row>."""
    rows = [
        {"item_id": f"v{version}-{d}-{i}", "product_id": f"p{i % 50}", "domain": d, "embedding": v.tolist()}
        for d in domains
        for i, v in enumerate(vectors)
    ]
    return pd.DataFrame(rows)


def _builder(version: int, seed: int | None = None, config: IndexConfig | None = None):
    vectors = _vectors(version if seed is None else seed)
    return lambda folder: build_indexes(_frame(version, vectors), folder, config=config)


def _top(vectors: np.ndarray, version: int, queries: np.ndarray, k: int) -> list[list[str]]:
    order = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    return [[f"v{version}-page-{i}" for i in row] for row in order]


def _versions(hits: list[tuple[str, str, float]]) -> set[int]:
    return {int(item.split("-")[0][1:]) for item, _, _ in hits}


def test_index_key_is_deterministic_unique_and_a_valid_id(tmp_path):
    key = index_key("3", "md5-abc")
    assert key == index_key("3", "md5-abc") and key.startswith("m3--dmd5-abc--")
    assert len({key, index_key("4", "md5-abc"), index_key("3", "md5-abd"), index_key("3", "md5:abc")}) == 4
    store = IndexStore(tmp_path)
    assert store.path(index_key("run/7 final", "s3://bucket/x:y")).parent == tmp_path / "indexes"
    with pytest.raises(ValueError, match="invalid index id"):
        store.path("../escape")


def test_publish_swap_rollback_history_and_gc(tmp_path):
    store = IndexStore(tmp_path)
    assert store.current() is None and store.history() == []
    with pytest.raises(NoPreviousIndexError, match="no previous"):
        store.rollback()
    path_a = store.publish(_builder(0), "a")
    assert path_a == tmp_path / "indexes" / "a" and (path_a / "manifest.json").is_file()
    store.publish(_builder(1), "b")
    assert store.current() is None  # publishing does not move CURRENT
    with pytest.raises(FileNotFoundError, match="not published"):
        store.swap("missing")

    store.swap("a")
    store.swap("b")
    pointer = json.loads((tmp_path / "CURRENT").read_text())
    assert pointer["index_id"] == "b" and pointer["previous"] == "a" and "swapped_at" in pointer
    reader = IndexReader(tmp_path)
    assert _versions(reader.search("page", _vectors(1)[0], k=3)[0]) == {1}

    assert store.rollback() == "a" and store.current() == "a"
    assert _versions(reader.search("page", _vectors(0)[0], k=3)[0]) == {0}
    with pytest.raises(NoPreviousIndexError, match="current: a"):
        store.rollback()

    with open(tmp_path / "indexes" / "b" / "page.faiss", "ab") as f:  # a damaged index is refused
        f.write(b"x")
    with pytest.raises(ValueError, match="sha256"):
        store.swap("b")
    assert store.current() == "a"

    events = [(e["event"], e.get("index_id")) for e in store.history()]
    assert events == [("publish", "a"), ("publish", "b"), ("swap", "a"), ("swap", "b"), ("rollback", "a")]
    assert store.history()[-1]["rolled_back_from"] == "b"

    for version, name in ((2, "c"), (3, "d")):
        store.publish(_builder(version), name)
        store.swap(name)
    assert store.gc(keep=0) == ["a", "b"]  # c is previous, d current
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == ["c", "d"]
    assert store.history()[-1] == {**store.history()[-1], "event": "gc", "removed": ["a", "b"]}


def test_published_ids_are_immutable(tmp_path):
    first, second = tmp_path / "build1", tmp_path / "build2"
    build_indexes(_frame(0, _vectors(0)), first)
    build_indexes(_frame(0, _vectors(1)), second)
    store = IndexStore(tmp_path / "store")
    path = store.publish(first, "x")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    assert store.publish(first, "x") == path  # same bytes: no-op
    with pytest.raises(IndexConflictError, match="different content"):
        store.publish(second, "x")
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [e["event"] for e in store.history()] == ["publish"]
    assert not list((tmp_path / "store").glob(".staging-*"))


def test_incomplete_or_failing_builds_publish_nothing(tmp_path):
    store = IndexStore(tmp_path)
    store.publish(_builder(0), "good")
    store.swap("good")

    def crashes_midway(folder: Path) -> None:
        build_indexes(_frame(1, _vectors(1)), folder)
        (folder / "page.faiss").write_bytes(b"half")
        raise RuntimeError("builder died")

    with pytest.raises(RuntimeError, match="builder died"):
        store.publish(crashes_midway, "bad")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        store.publish(lambda folder: (folder / "page.faiss").write_bytes(b"no manifest"), "bad")

    def tampered(folder: Path) -> None:
        build_indexes(_frame(1, _vectors(1)), folder)
        with open(folder / "page.ids.parquet", "ab") as f:
            f.write(b"x")

    with pytest.raises(ValueError, match="sha256"):
        store.publish(tampered, "bad")
    assert not (tmp_path / "indexes" / "bad").exists() and not list(tmp_path.glob(".staging-*"))
    assert store.current() == "good"
    store.publish(_builder(1), "bad")  # the id was never taken
    store.swap("bad")
    assert _versions(IndexReader(tmp_path).search("page", _vectors(1)[:2], k=4)[1]) == {1}


KILLED_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np, pandas as pd
    from ampere.retrieval.index import build_indexes
    from ampere.retrieval.index_store import IndexStore

    root, marker = sys.argv[1], Path(sys.argv[2])
    vectors = np.random.default_rng(9).normal(size=(20000, 64)).astype(np.float32)
    df = pd.DataFrame({"item_id": [f"v9-page-{i}" for i in range(len(vectors))], "product_id": "p",
                       "domain": "page", "embedding": list(vectors)})

    def build(folder):
        build_indexes(df, folder)
        with open(folder / "short.faiss", "wb") as f:  # a second file, half written when the kill lands
            f.write(b"\\0" * (1 << 20))
            f.flush()
            marker.write_text("halfway")
            time.sleep(120)

    IndexStore(root).publish(build, "killed")
    """
)


def test_refresh_killed_midway_leaves_the_previous_index_serving(tmp_path):
    store = IndexStore(tmp_path / "store")
    store.publish(_builder(0), "v0")
    store.swap("v0")
    reader = IndexReader(store.root)
    queries = _vectors(0)[:4]
    assert [[h[0] for h in hits] for hits in reader.search("page", queries, k=5)] == _top(_vectors(0), 0, queries, 5)

    marker = tmp_path / "halfway"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISHER, str(store.root), str(marker)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "publisher exited before the kill"
            time.sleep(0.05)
        assert store.clean_staging() == []  # its publisher is alive: the staging folder is left alone
        assert len(list(store.root.glob(".staging-*"))) == 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    staging = list(store.root.glob(".staging-*"))
    assert len(staging) == 1 and (staging[0] / "page.faiss").exists()  # debris of the dead build
    assert not (store.root / "indexes" / "killed").exists()
    assert store.current() == "v0"
    assert [[h[0] for h in hits] for hits in reader.search("page", queries, k=5)] == _top(_vectors(0), 0, queries, 5)

    store.publish(_builder(1), "v1")  # a later refresh works and clears the dead staging folder
    assert not list(store.root.glob(".staging-*"))
    store.swap("v1")
    assert [[h[0] for h in hits] for hits in reader.search("page", queries, k=5)] == _top(_vectors(1), 1, queries, 5)


def test_reader_sees_one_complete_index_per_query_while_indexes_are_swapped(tmp_path):
    store = IndexStore(tmp_path)
    queries = _vectors(99, n=8)
    expected = {v: _top(_vectors(v), v, queries, 5) for v in range(7)}
    swapped: list[int] = []

    store.publish(_builder(0), "v0")
    store.swap("v0")
    swapped.append(0)
    reader = IndexReader(tmp_path)
    stop, errors, seen = threading.Event(), [], []

    def read_loop() -> None:
        faiss.omp_set_num_threads(1)  # this thread only: idle OpenMP workers spin for ms per query on a busy machine
        try:
            while not stop.is_set():
                j = len(seen) % len(queries)
                hits = reader.search("page", queries[j], k=5)[0]
                versions = _versions(hits)
                assert len(versions) == 1, f"results mix index versions {versions}"
                (version,) = versions
                assert version in swapped, f"served v{version}, never swapped in"
                assert [h[0] for h in hits] == expected[version][j]
                seen.append(version)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for version in range(1, 7):
            time.sleep(0.25)
            if version == 6:  # publish-only: v6 exists but is never current
                store.publish(_builder(6), "v6")
                continue
            store.publish(_builder(version), f"v{version}")
            swapped.append(version)
            store.swap(f"v{version}")
        time.sleep(0.25)
    finally:
        stop.set()
        thread.join()

    assert not errors, errors[0]
    assert len(seen) >= 1000, len(seen)
    assert seen == sorted(seen), "the reader went back to an older index"
    assert set(seen) >= {0, 5} and len(set(seen)) >= 4 and 6 not in seen
    assert reader.index_id == "v5"


def _clustered(n: int = 2000, clusters: int = 20, dim: int = 32, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(clusters, size=n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_hnsw_index_above_threshold_passes_recall_gate_and_is_served(tmp_path):
    vectors = _clustered(n=600)
    config = IndexConfig(exact_below=100, approximate="hnsw")
    store = IndexStore(tmp_path)
    path = store.publish(lambda folder: build_indexes(_frame(0, vectors), folder, config=config), "hnsw")
    entry = json.loads((path / "manifest.json").read_text())["domains"]["page"]
    assert entry["index_type"] == "IndexIDMap2(IndexHNSWFlat)"
    assert entry["index_params"] == {"M": 32, "efConstruction": 100, "efSearch": 128}
    assert entry["recall_at_10"] >= 0.95 and entry["fallback"] is None
    assert entry["recall_queries"] == {"source": "perturbed_gallery", "count": 600}
    store.swap("hnsw")
    queries = vectors[:50]
    found = [[h[0] for h in hits] for hits in IndexReader(tmp_path).search("page", queries, k=10)]
    expected = _top(vectors, 0, queries, 10)
    assert np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, expected, strict=True)]) >= 0.95


def test_bad_ivf_config_fails_the_recall_gate(tmp_path):
    vectors = _clustered()
    df = _frame(0, vectors)
    bad = IndexConfig(exact_below=100, approximate="ivf", ivf_nlist=200, ivf_nprobe=1, fallback_to_exact=False)
    bad.max_search_widening = 1  # no wider search allowed: one probe of 200 lists
    with pytest.raises(IndexQualityError, match=r"recall@10 0\.\d+ < 0.95") as failure:
        build_indexes(df, tmp_path / "strict", config=bad)
    assert failure.value.recall < 0.95
    assert not (tmp_path / "strict" / "manifest.json").exists()

    info = build_indexes(df, tmp_path / "fallback", config=replace(bad, fallback_to_exact=True))
    entry = json.loads((tmp_path / "fallback" / "manifest.json").read_text())["domains"]["page"]
    assert entry == info["page"] and entry["index_type"] == "IndexIDMap2(IndexFlatIP)"
    assert entry["fallback"]["index_type"] == "IndexIDMap2(IndexIVFFlat)"
    assert entry["fallback"]["index_params"] == {"nlist": 200, "nprobe": 1}
    assert entry["fallback"]["recall_at_10"] == pytest.approx(failure.value.recall)
    store = IndexStore(tmp_path / "store")
    store.publish(tmp_path / "fallback", "exact")
    store.swap("exact")
    queries = vectors[:20]
    found = [[h[0] for h in hits] for hits in IndexReader(store.root).search("page", queries, k=10)]
    assert found == _top(vectors, 0, queries, 10)


def test_recall_gate_uses_held_out_queries_when_given(tmp_path):
    vectors = _clustered(n=1000)
    config = IndexConfig(exact_below=100, approximate="ivf", ivf_nlist=20, ivf_nprobe=20)
    info = build_indexes(_frame(0, vectors), tmp_path, config=config, queries={"page": _clustered(n=30, seed=4)})
    assert info["page"]["index_type"] == "IndexIDMap2(IndexIVFFlat)"
    assert info["page"]["recall_queries"] == {"source": "held_out", "count": 30}
    assert info["page"]["recall_at_10"] == 1.0  # nprobe == nlist scans every list


def test_reader_keeps_serving_when_the_new_current_index_cannot_be_opened(tmp_path, caplog):
    with pytest.raises(LookupError, match="no current index"):
        IndexReader(tmp_path).search("page", _vectors(0)[0], k=1)
    store = IndexStore(tmp_path)
    for version in range(3):
        store.publish(_builder(version), f"v{version}")
    store.swap("v0")
    reader = IndexReader(tmp_path)
    assert _versions(reader.search("page", _vectors(0)[0], k=3)[0]) == {0}
    store.swap("v1")
    with open(tmp_path / "indexes" / "v1" / "page.ids.parquet", "ab") as f:  # damaged after the swap
        f.write(b"x")
    assert _versions(reader.search("page", _vectors(0)[0], k=3)[0]) == {0}
    assert reader.index_id == "v0" and "cannot open the current one" in caplog.text
    with pytest.raises(KeyError, match="no 'live' gallery"):
        reader.search("live", _vectors(0)[0], k=3)
    store.swap("v2")
    assert _versions(reader.search("page", _vectors(0)[0], k=3)[0]) == {2} and reader.index_id == "v2"


def test_reader_tries_a_failed_open_again_and_serves_the_index_once_it_opens(tmp_path, caplog):
    """A transient failure (a file not yet readable) is retried after `retry_s`, without CURRENT moving again."""
    store = IndexStore(tmp_path)
    for version in range(2):
        store.publish(_builder(version), f"v{version}")
    store.swap("v0")
    reader = IndexReader(tmp_path, retry_s=0.2)
    assert reader.index_id == "v0"
    ids = tmp_path / "indexes" / "v1" / "page.ids.parquet"
    good = ids.read_bytes()
    store.swap("v1")
    ids.write_bytes(b"not yet")  # e.g. a network filesystem still catching up
    assert reader.index_id == "v0" and "tried again in" in caplog.text
    ids.write_bytes(good)
    assert reader.index_id == "v0"  # within retry_s: not tried again on every call
    time.sleep(0.3)
    assert reader.index_id == "v1"
    assert _versions(reader.search("page", _vectors(1)[0], k=3)[0]) == {1}
