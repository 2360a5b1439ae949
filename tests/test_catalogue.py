"""The live catalogue: content keys, the embedding store and the diff as units; then two catalogues in one
home (each its own champion and served index) and a refresh that embeds only what changed, with a real
DVC repository, MLflow store, Dagster instance, the packaged LLM and backbones, and `ampere serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from dagster import DagsterInstance

from ampere.catalogue.content import content_key
from ampere.catalogue.embedding_store import EmbeddingStore
from ampere.catalogue.naming import DEFAULT, Catalogue
from ampere.catalogue.refresh import diff, indexed_items
from ampere.data.format import SplitFractions
from ampere.data.synth import generate
from ampere.retrieval.index_store import IndexStore
from mlflow import MlflowClient
from orchestration.audit import audit
from orchestration.definitions import build_defs
from orchestration.in_process import execute_in_process
from orchestration.jobs import PIPELINE_JOB, REFRESH_JOB
from orchestration.summary_shards import ALL_SHARDS_TAGS

BIN = Path(sys.executable).parent
FRACTIONS = SplitFractions(val_fraction=0.3, test_fraction=0.3)
TRAIN = {"ops": {"trained_encoder": {"config": {"steps": 4, "batch_size": 3, "eval_every": 2}}}}


def test_a_content_key_follows_the_record_and_the_media_bytes_not_the_item_id() -> None:
    record = {"product_id": "p1", "domain": "page", "title": "red kettle", "asr": ""}
    key = content_key(record, "aa")
    assert key == content_key({**record, "item_id": "another-id"}, "aa")
    assert key != content_key({**record, "title": "blue kettle"}, "aa")
    assert key != content_key(record, "ab")  # same record, other media bytes
    assert key != content_key({**record, "product_id": "p2"}, "aa")


def test_the_embedding_store_returns_what_each_version_stored_and_names_what_is_missing(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    vectors = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    keys = [f"{i:032x}" for i in range(5)]
    store.add("ampere-encoder", "1", keys[:3], vectors[:3])
    store.add("ampere-encoder", "1", keys[3:], vectors[3:])
    store.add("ampere-encoder", "1", keys[:1], vectors[:1])  # a key written twice is harmless
    found = store.lookup("ampere-encoder", "1", [keys[4], "f" * 32, keys[0], keys[2]], dim=4)
    assert found.found.tolist() == [True, False, True, True] and found.missing.tolist() == [1]
    np.testing.assert_array_equal(found.vectors[[0, 2, 3]], vectors[[4, 0, 2]])
    assert not store.lookup("ampere-encoder", "2", keys, dim=4).found.any()  # another version embedded nothing
    assert store.count("ampere-encoder", "1") == 6
    with pytest.raises(ValueError, match="invalid registered model"):
        store.folder("../elsewhere", "1")
    assert not list(tmp_path.rglob(".staging-*"))


def test_the_diff_names_added_changed_removed_and_kept_items() -> None:
    served = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "content_key": ["1", "2", "3", "4"]})
    current = pd.DataFrame({"item_id": ["a", "b", "e", "d"], "content_key": ["1", "9", "5", "4"]})
    changes = diff(current, served)
    assert (changes.added, changes.changed, changes.removed, changes.kept) == (["e"], ["b"], ["c"], ["a", "d"])
    assert indexed_items(None).empty


def test_a_catalogue_is_named_by_config_else_by_its_folder(tmp_path: Path) -> None:
    home = tmp_path / "home" / "data"
    assert Catalogue.of(home, home) == Catalogue(DEFAULT)
    assert Catalogue(DEFAULT).registered_model == "ampere-encoder"
    assert Catalogue(DEFAULT).index_store(tmp_path) == tmp_path / "index_store"
    one, two = Catalogue.of(tmp_path / "a" / "Shop Data", home), Catalogue.of(tmp_path / "b" / "Shop Data", home)
    assert one.name.startswith("shop-data-") and one != two  # same folder name, another folder
    assert one.registered_model == f"ampere-encoder--{one.name}"
    assert one.index_store(tmp_path) == tmp_path / "catalogues" / one.name / "index_store"
    assert Catalogue.of(tmp_path / "a", home, "spring-sale").name == "spring-sale"
    with pytest.raises(ValueError, match="invalid catalogue name"):
        Catalogue("../up")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _served(store: IndexStore, client: MlflowClient, model: str) -> tuple[str | None, str | None]:
    try:
        champion = str(client.get_model_version_by_alias(model, "champion").version)
    except Exception:  # noqa: BLE001 (no registered model or no alias yet)
        champion = None
    return champion, store.current()


def _edit_catalogue(data: Path) -> dict[str, list[str]]:
    """Adds 10 items (three new products of three items each, one more clip of a kept product), changes 3
    (a title, a transcript, a page image's bytes) and removes 5 (none quarantined after: every product stays
    complete); returns the item ids of each group."""
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text().splitlines()]
    pages = [row for row in rows if row["domain"] == "page"]
    clips = [row for row in rows if row["domain"] != "page" and row["asr"].strip()]
    last, first = pages[-1]["product_id"], pages[0]["product_id"]
    # A whole product (a page, two shorts, a live clip) and one of another product's two shorts: no product is left incomplete.
    removed = [row["item_id"] for row in rows if row["product_id"] == last]
    removed.append(next(row["item_id"] for row in reversed(rows) if row["product_id"] == first and row["domain"] == "short"))
    kept = [row for row in rows if row["item_id"] not in removed]
    changed = [pages[0], clips[0], pages[1]]
    changed[0]["title"] += " limited edition"
    changed[1]["asr"] = "hello everyone today the " + changed[0]["title"] + " is back in stock"
    image = data / changed[2]["media"]
    image.write_bytes(image.read_bytes() + b"\0")  # other bytes, same picture: another content key
    added = []
    for number in range(3):
        pid = f"new{number}"
        sources = (("page", "P", pages[2 + number]), ("short", "S", clips[1 + number]), ("live", "L", clips[4 + number]))
        for domain, code, source in sources:
            added.append({**source, "item_id": f"{pid}-{code}", "product_id": pid, "domain": domain, "split": "train"})
            if domain == "page":
                added[-1]["title"] = f"new product {number} {source['title']}"
            else:
                added[-1]["asr"] = f"welcome new product {number} {source['asr']}"
    extra = {"item_id": f"{kept[0]['product_id']}-extra", "product_id": kept[0]["product_id"], "split": kept[0]["split"]}
    added.append({**clips[2], **extra, "asr": clips[2]["asr"] + " and one more thing"})
    (data / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in kept + added))
    return {"added": [row["item_id"] for row in added], "changed": [row["item_id"] for row in changed], "removed": removed}


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory: pytest.TempPathFactory, make_dvc_repo):
    """One home, two catalogues: `shop` (a DVC-tracked folder, summaries) and `outlet` (another folder, no text)."""
    root = tmp_path_factory.mktemp("catalogues")
    generate(root / "synth", products=7, seed=3, clip_frames=8, fractions=FRACTIONS, short_per_product=2)
    generate(root / "outlet", products=7, seed=4, clip_frames=8, fractions=FRACTIONS)
    repo = make_dvc_repo(root / "repo", root / "synth")
    tracking = f"sqlite:///{root}/mlflow/mlflow.db"
    common = {"workspace": str(root / "workspace"), "tracking_uri": tracking, "artifact_root": str(root / "mlflow" / "artifacts")}
    shop = build_defs(dataset=str(repo / "data"), repo_dir=str(repo), **common)
    outlet = build_defs(dataset=str(root / "outlet"), repo_dir=str(repo), **common)
    folders = {"shop": repo / "data", "outlet": root / "outlet"}
    names = {name: Catalogue.of(path, root / "home-data") for name, path in folders.items()}
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    stores = {name: IndexStore(catalogue.index_store(root / "workspace")) for name, catalogue in names.items()}
    served = lambda name: _served(stores[name], client, names[name].registered_model)  # noqa: E731
    instance = DagsterInstance.ephemeral()
    states = {}
    result = execute_in_process(shop.resolve_job_def(PIPELINE_JOB), run_config=TRAIN, instance=instance, tags=ALL_SHARDS_TAGS)
    assert result.success
    states["after shop"] = {name: served(name) for name in names}
    without_text = {"asr_summaries": {"config": {"run_llm": False}}, "training_set": {"config": {"text_source": "none"}}}
    no_text = {"ops": {**TRAIN["ops"], **without_text}}
    result = execute_in_process(outlet.resolve_job_def(PIPELINE_JOB), run_config=no_text, instance=instance, tags=ALL_SHARDS_TAGS)
    assert result.success
    states["after outlet"] = {name: served(name) for name in names}
    yield {
        "root": root,
        "repo": repo,
        "shop": shop,
        "names": names,
        "stores": stores,
        "client": client,
        "tracking": tracking,
        "instance": instance,
        "states": states,
        "served": served,
    }


def test_two_catalogues_keep_their_own_champion_and_served_index(catalogues) -> None:
    states, names = catalogues["states"], catalogues["names"]
    shop_champion, shop_index = states["after shop"]["shop"]
    assert shop_champion == "1" and shop_index is not None and states["after shop"]["outlet"] == (None, None)
    outlet_champion, outlet_index = states["after outlet"]["outlet"]
    assert outlet_champion == "1" and outlet_index not in (None, shop_index)  # its own registered model's first version
    assert states["after outlet"]["shop"] == (shop_champion, shop_index)  # the other run moved nothing of shop's
    about = catalogues["stores"]["outlet"].about(outlet_index)
    assert about["registered_model"] == names["outlet"].registered_model and about["catalogue"] == names["outlet"].name
    version = catalogues["client"].get_model_version(names["outlet"].registered_model, "1")
    assert version.tags["lineage.catalogue"] == names["outlet"].name
    assert "no champion yet" in version.tags["promotion.reason"]  # compared with no other catalogue's champion


def test_a_refresh_embeds_only_new_and_changed_items_and_is_served_without_restart(catalogues) -> None:
    """10 added, 3 changed, 5 removed: the champion embeds exactly 13 items, trains nothing, the index holds
    the new and none of the removed, `ampere serve` (already running) finds a new item, the audit resolves."""
    root, repo, names, stores = catalogues["root"], catalogues["repo"], catalogues["names"], catalogues["stores"]
    shop, client = names["shop"], catalogues["client"]
    before = {name: catalogues["served"](name) for name in names}
    versions = len(client.search_model_versions(f"name='{shop.registered_model}'"))
    runs = len(client.search_runs([client.get_experiment_by_name("ampere").experiment_id]))
    embedding_store = EmbeddingStore(root / "workspace" / "embedding_store")
    stored = embedding_store.count(shop.registered_model, before["shop"][0])
    port = _free_port()
    log = open(root / "serve.log", "w")  # noqa: SIM115 (closed below)
    command = [str(BIN / "ampere"), "--home", str(root), "serve", "--port", str(port), "--catalogue", shop.name]
    command += ["--tracking-uri", catalogues["tracking"]]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        edits = _edit_catalogue(repo / "data")
        subprocess.run([sys.executable, "-m", "dvc", "commit", "-q", "-f", "data.dvc"], cwd=repo, check=True, capture_output=True)
        subprocess.run(["git", "commit", "-qam", "10 new, 3 changed, 5 removed"], cwd=repo, check=True, capture_output=True)
        md5 = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
        for _ in range(240):  # the server is up and serving the old index before the refresh
            try:
                if requests.get(url + "/health", timeout=60).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None, (root / "serve.log").read_text()
            time.sleep(0.5)
        assert requests.post(url + "/search", json={"item_id": edits["added"][0]}, timeout=60).status_code == 404
        job = catalogues["shop"].resolve_job_def(REFRESH_JOB)
        result = execute_in_process(job, instance=catalogues["instance"])
        assert result.success
        refreshed = result.output_for_node("catalogue_index")
        counts = {key: refreshed[key] for key in ("added", "changed", "removed", "embedded")}
        assert counts == {"added": 10, "changed": 3, "removed": 5, "embedded": 13}
        assert embedding_store.count(shop.registered_model, before["shop"][0]) == stored + 13  # nothing unchanged again
        assert refreshed["model_version"] == before["shop"][0] and refreshed["data_version"] == f"dvc:{md5}"
        after = {name: catalogues["served"](name) for name in names}
        assert after["shop"] == (before["shop"][0], refreshed["index_id"]) and after["outlet"] == before["outlet"]
        held = set(indexed_items(stores["shop"].path(refreshed["index_id"]))["item_id"])
        assert set(edits["added"]) <= held and not held & set(edits["removed"])
        assert len(client.search_model_versions(f"name='{shop.registered_model}'")) == versions  # no model trained
        assert len(client.search_runs([client.get_experiment_by_name("ampere").experiment_id])) == runs
        deadline = time.monotonic() + 60
        query = {"item_id": edits["added"][0], "k": 3}
        while (found := requests.post(url + "/search", json=query, timeout=60)).status_code != 200:
            assert time.monotonic() < deadline, found.text
            time.sleep(0.5)
        body = found.json()
        assert body["index_id"] == refreshed["index_id"] and all(len(hits) > 0 for hits in body["results"].values())
        titles = {hit["item_id"]: hit["title"] for hits in body["results"].values() for hit in hits}
        assert all(title for item, title in titles.items() if item.endswith("-P"))  # the new items' records are read too
        assert requests.get(url + f"/items/{edits['added'][0]}", timeout=60).json()["title"].startswith("new product 0")
        again = execute_in_process(job, instance=catalogues["instance"]).output_for_node("catalogue_index")
        assert again["embedded"] == 0 and again["index_id"] == refreshed["index_id"]  # nothing new: nothing embedded
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    instance = catalogues["instance"]
    report = audit(refreshed["index_id"], client, shop.registered_model, "http://mlflow", instance, store=stores["shop"])
    text = report.to_text()
    assert report.ok, text
    assert f"model version {before['shop'][0]}" in text and f"dvc:{md5}" in text
    trained_on = client.get_model_version(shop.registered_model, before["shop"][0]).tags["lineage.data_version"]
    assert trained_on != f"dvc:{md5}" and trained_on in text and "added 10, changed 3, removed 5" in text
