"""The index store on a real S3 server (SeaweedFS): publish, swap, rollback, history and gc as on a local disk,
swaps from two hosts at once never losing one, and a reader following CURRENT from another host's mirror."""

from __future__ import annotations

import multiprocessing
import os
import uuid

import pytest

from ampere.retrieval.index_store import IndexConflictError, IndexReader, NoPreviousIndexError, open_index_store
from ampere.retrieval.object_index_store import ObjectIndexStore
from ampere.storage import Location
from tests.test_index_store import _builder, _vectors, _versions


@pytest.fixture()
def root(s3_server, s3_env, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("AMPERE_MIRROR", str(tmp_path / "mirror"))
    return f"s3://{s3_server['bucket']}/{uuid.uuid4().hex[:10]}/index_store"


def test_publish_swap_rollback_history_and_gc_on_s3(root, tmp_path, monkeypatch):
    store = open_index_store(root)
    assert isinstance(store, ObjectIndexStore) and store.current() is None and store.history() == []
    with pytest.raises(NoPreviousIndexError, match="no previous"):
        store.rollback()
    store.publish(_builder(0), "a")
    store.publish(_builder(1), "b")
    assert store.current() is None and store.is_published("a") and not store.is_published("missing")
    with pytest.raises(FileNotFoundError, match="not published"):
        store.swap("missing")
    store.swap("a")
    store.swap("b")
    assert store.pointer.read()["previous"] == "a"

    monkeypatch.setenv("AMPERE_MIRROR", str(tmp_path / "serving-host"))  # a host that built nothing
    reader = IndexReader(root)
    assert _versions(reader.search("page", _vectors(1)[0], k=3)[0]) == {1}
    assert store.rollback() == "a" and store.current() == "a"
    assert _versions(reader.search("page", _vectors(0)[0], k=3)[0]) == {0}
    with pytest.raises(NoPreviousIndexError, match="current: a"):
        store.rollback()

    with pytest.raises(IndexConflictError, match="different content"):
        store.publish(_builder(2), "a")
    store.publish(_builder(0), "a")  # the same bytes again: a no-op
    events = [(e["event"], e.get("index_id")) for e in store.history()]
    assert events == [("publish", "a"), ("publish", "b"), ("swap", "a"), ("swap", "b"), ("rollback", "a")]

    for version, name in ((2, "c"), (3, "d")):
        store.publish(_builder(version), name)
        store.swap(name)
    assert store.gc(keep=0) == ["a", "b"]
    assert store.published() == ["c", "d"] and not Location(root).child("indexes", "a", "page.faiss").exists()


def _swap_many(root: str, mirror: str, ids: list[str], barrier) -> None:
    os.environ["AMPERE_MIRROR"] = mirror
    store = open_index_store(root)
    barrier.wait()
    for index_id in ids:
        store.swap(index_id)


def test_two_hosts_swapping_at_once_never_both_win(root, tmp_path):
    """Every swap reads the pointer it replaces: the logged swaps form one chain (each one's previous is the
    index the swap before it made current), with nothing lost."""
    store = open_index_store(root)
    for i in range(4):
        store.publish(_builder(i), f"i{i}")
    context = multiprocessing.get_context("spawn")
    plans = [[f"i{i % 2}" for i in range(10)], [f"i{2 + i % 2}" for i in range(10)]]
    with context.Manager() as manager, context.Pool(2) as pool:
        barrier = manager.Barrier(2)
        pool.starmap(_swap_many, [(root, str(tmp_path / f"host-{h}"), plans[h], barrier) for h in range(2)])
    swaps = [e for e in store.history() if e["event"] == "swap"]
    chain = sorted(swaps, key=lambda e: e["swapped_at"])
    assert chain[0]["previous"] is None
    assert all(later["previous"] == earlier["index_id"] for earlier, later in zip(chain, chain[1:], strict=False))
    assert store.current() == chain[-1]["index_id"] and len(swaps) >= 10
