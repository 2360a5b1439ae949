"""`ampere serve` as a user runs it: a real uvicorn server in its own process over the index store
and MLflow registry of two real pipeline runs (two model versions, two published indexes)."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from crafted_media import slow_clip
from dagster import DagsterInstance

from ampere.data.format import SplitFractions, read_items
from ampere.data.synth import generate
from ampere.retrieval.index_store import IndexStore
from orchestration.definitions import build_defs
from orchestration.in_process import execute_in_process
from orchestration.jobs import PIPELINE_JOB
from orchestration.summary_shards import ALL_SHARDS_TAGS

BIN = Path(sys.executable).parent
TRAIN = {"steps": 4, "batch_size": 3, "eval_every": 2}
FRACTIONS = SplitFractions(val_fraction=0.3, test_fraction=0.3)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, make_dvc_repo):
    """Two pipeline runs (the second forced to champion), then `ampere serve` on a free port."""
    root = tmp_path_factory.mktemp("serve")
    generate(root / "synth", products=7, seed=5, clip_frames=8, fractions=FRACTIONS)
    repo = make_dvc_repo(root / "repo", root / "synth")
    workspace, tracking = root / "workspace", f"sqlite:///{root}/mlflow/mlflow.db"
    defs = build_defs(
        workspace=str(workspace),
        dataset=str(repo / "data"),
        tracking_uri=tracking,
        artifact_root=str(root / "mlflow" / "artifacts"),
        repo_dir=str(repo),
        catalogue="default",  # the registered model `ampere-encoder` and workspace/index_store
    )
    job, instance = defs.resolve_job_def(PIPELINE_JOB), DagsterInstance.ephemeral()
    indexes = {}
    for seed in (0, 1):
        config = {"ops": {"trained_encoder": {"config": {**TRAIN, "seed": seed}}}}
        if seed:
            config["ops"]["champion_promotion"] = {"config": {"force": True}}
        result = execute_in_process(job, run_config=config, instance=instance, tags=ALL_SHARDS_TAGS)
        assert result.success
        indexes[result.output_for_node("trained_encoder")["version"]] = result.output_for_node("faiss_index")["index_id"]
    port = _free_port()
    log = open(root / "serve.log", "w")  # noqa: SIM115 (closed at teardown)
    command = [str(BIN / "ampere"), "serve", "--port", str(port), "--store", str(workspace / "index_store")]
    command += ["--tracking-uri", tracking, "--cache", str(workspace / "summary_cache.sqlite"), "--max-upload-mb", "2"]
    command += ["--max-decode-s", "0.25"]  # a query's media decodes in milliseconds; a crafted clip is cut off
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}  # only what the flags say
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if requests.get(url + "/health", timeout=60).status_code == 200:
                    break  # the first answer waits for the model's backbones, tagger and LLM to load
            except requests.ConnectionError:
                pass
            assert process.poll() is None, (root / "serve.log").read_text()
            time.sleep(0.5)
        else:
            raise RuntimeError("ampere serve did not become healthy within 120 s: " + (root / "serve.log").read_text())
        items, _ = read_items(repo / "data")
        yield {
            "url": url,
            "root": root,
            "store": IndexStore(workspace / "index_store"),
            "indexes": indexes,  # model version -> its index id
            "items": items.set_index("item_id", drop=False),
            "embeddings": pd.read_parquet(workspace / "embeddings.parquet").set_index("item_id"),
            "process": process,
            "tracking": tracking,
        }
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()


def _wait_serving(url: str, version: str) -> dict:
    """/health once the server serves that model version (it follows CURRENT within a second or so)."""
    deadline = time.monotonic() + 30
    while (health := requests.get(url + "/health", timeout=30).json())["model_version"] != version:
        assert time.monotonic() < deadline, health
        time.sleep(0.2)
    return health


JSON = {"content-type": "application/json"}


def _rss(pid: int) -> int:
    """A process's resident set size in bytes (VmRSS)."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _search(url: str, **fields) -> requests.Response:
    return requests.post(url + "/search", json=fields, timeout=60)


def test_health_names_the_served_index_model_and_data(served) -> None:
    health = requests.get(served["url"] + "/health", timeout=30).json()
    champion = max(served["indexes"], key=int)
    assert health["index_id"] == served["store"].current() == served["indexes"][champion]
    assert health["model_version"] == health["champion_version"] == champion
    assert health["data_version"].startswith("dvc:")
    assert set(health["galleries"]) == {"page", "short", "live"}


def test_an_item_query_returns_the_exact_top_k_of_every_other_gallery(served) -> None:
    """Item-id queries search with the indexed vector: the ranking is the brute-force one over the
    served model's stored embeddings, the item itself never among its results."""
    stored = served["embeddings"]
    item = stored[stored["domain"] == "short"].index[0]
    body = _search(served["url"], item_id=item, k=3).json()
    assert body["query"]["domain"] == "short" and body["model_version"] == max(served["indexes"], key=int)
    query = np.asarray(stored.loc[item, "embedding"], dtype=np.float32)
    for domain in ("page", "short", "live"):
        gallery = stored[(stored["domain"] == domain) & (stored.index != item)]
        scores = np.stack(gallery["embedding"].to_numpy()) @ query
        best = np.argsort(-scores)[:3]
        hits = body["results"][domain]
        assert [hit["item_id"] for hit in hits] == list(gallery.index[best])
        np.testing.assert_allclose([hit["score"] for hit in hits], scores[best], atol=1e-5)
        assert all(hit["thumbnail"] == f"/items/{hit['item_id']}/thumbnail" for hit in hits)


def test_an_uploaded_photo_or_clip_of_an_indexed_item_ranks_as_the_item_does(served) -> None:
    """A page photo with its title, and a short clip with its transcript (summarised through the
    pipeline's prompt, tagger and cache), uploaded as files, give the item-id query's ranking."""
    items = served["items"]
    page = items[items["domain"] == "page"].iloc[0]
    clip = items[(items["domain"] == "short") & (items["asr"].str.strip() != "")].iloc[0]
    for row, text in ((page, page["title"]), (clip, clip["asr"])):
        path = Path(row["media_path"])
        with open(path, "rb") as media:
            upload = requests.post(
                served["url"] + "/search",
                files={"file": (path.name, media)},
                data={"text": text, "domain": row["domain"], "k": "4"},
                timeout=120,
            )
        assert upload.status_code == 200, upload.text
        by_id = _search(served["url"], item_id=row["item_id"], k=4).json()
        for domain in ("page", "short", "live"):
            if domain == row["domain"]:
                continue  # the upload is not an indexed item: its own gallery holds the item itself
            uploaded = [(hit["item_id"], hit["score"]) for hit in upload.json()["results"][domain]]
            expected = [(hit["item_id"], hit["score"]) for hit in by_id["results"][domain]]
            assert [i for i, _ in uploaded] == [i for i, _ in expected], (row["item_id"], domain)
            np.testing.assert_allclose([s for _, s in uploaded], [s for _, s in expected], atol=1e-3)


def test_item_metadata_and_thumbnails(served) -> None:
    item = served["items"][served["items"]["domain"] == "live"].iloc[0]
    meta = requests.get(f"{served['url']}/items/{item['item_id']}", timeout=30).json()
    assert meta["product_id"] == item["product_id"] and meta["domain"] == "live" and meta["indexed"]
    for link in (meta["thumbnail"], meta["media"]):
        response = requests.get(served["url"] + link, timeout=30)
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        assert response.content[:2] == b"\xff\xd8"


def test_bad_input_gets_a_4xx_naming_the_problem_and_the_server_stays_up(served) -> None:
    url, root = served["url"], served["root"]
    items = served["items"]
    video = Path(items[items["media_path"].str.endswith(".mp4")].iloc[0]["media_path"]).read_bytes()
    cases = {
        "corrupt image": ({"files": {"file": ("photo.jpg", b"not an image at all")}}, 422, "cannot read image"),
        "truncated mp4": ({"files": {"file": ("clip.mp4", video[: len(video) // 3])}}, 422, "uploaded media"),
        "too large": ({"files": {"file": ("big.png", b"\0" * (3 * 2**20))}}, 413, "limit"),
        "not media": ({"files": {"file": ("notes.txt", b"hello")}}, 415, "unsupported upload"),
        "unknown item": ({"json": {"item_id": "no-such-item"}}, 404, "unknown item id 'no-such-item'"),
        "empty query": ({"json": {}}, 422, "empty query"),
        "text only": ({"json": {"text": "red shoes"}}, 422, "text-only"),
        "unknown domain": ({"json": {"item_id": "x", "domain": "shop"}}, 422, "unknown domain 'shop'"),
        "unknown target": ({"json": {"item_id": "x", "target": "mall"}}, 422, "unknown target 'mall'"),
        "k zero": ({"json": {"item_id": "x", "k": 0}}, 422, "k must be between 1 and 100"),
        "k huge": ({"json": {"item_id": "x", "k": 10_000}}, 422, "k must be between 1 and 100"),
        "k not a number": ({"json": {"item_id": "x", "k": "ten"}}, 422, "k must be an integer"),
        "bad json": ({"data": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
        "bad base64": ({"json": {"image": "***"}}, 422, "not valid base64"),
        "plain text body": ({"data": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content type"),
        "deep json": ({"data": b"[" * 100_000 + b"]" * 100_000, "headers": JSON}, 400, "nested too deeply"),
        "huge unknown id": ({"json": {"item_id": "x" * 1_500_000}}, 422, "item_id longer than 256 characters"),
        "k fraction": ({"json": {"item_id": "x", "k": 1.9}}, 422, "k must be an integer"),
        "k bool": ({"json": {"item_id": "x", "k": True}}, 422, "k must be an integer"),
        "unknown field": ({"json": {"item_id": "x", "limit": 3}}, 422, "unknown field 'limit'"),
    }
    for name, (request, status, message) in cases.items():
        response = requests.post(url + "/search", timeout=60, **request)
        assert response.status_code == status, (name, response.status_code, response.text[:500])
        assert message in response.json()["error"], (name, response.json())
        assert len(response.content) < 1000, name  # nothing echoed whole
    assert requests.get(url + "/items/no-such-item", timeout=30).status_code == 404
    page = requests.get(url + "/?item=no-such-item", timeout=30)  # a person gets the page, saying why
    assert page.status_code == 404 and "Query refused: unknown item id" in page.text and "<form" in page.text
    with_image = requests.post(url + "/", files={"file": ("photo.png", b"broken")}, timeout=60)
    assert with_image.status_code == 422 and "Query refused:" in with_image.text
    assert requests.get(url + "/health", timeout=30).status_code == 200
    assert served["process"].poll() is None
    metrics = requests.get(url + "/metrics", timeout=30).text
    assert 'status="500"' not in metrics, metrics
    assert str(root) not in json.dumps([requests.post(url + "/search", **cases["truncated mp4"][0]).json()])


def test_an_undeclared_oversized_body_is_refused_without_being_held(served) -> None:
    """A chunked body (no content-length) of 1 GiB: refused (413, or the connection closed) while the
    server's memory, sampled every 5 ms, grows by less than 64 MiB; the server then answers as before."""
    pid, stop, peak = served["process"].pid, threading.Event(), [0]
    before = _rss(pid)

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        chunks = (b"A" * 2**20 for _ in range(1024))
        status = requests.post(served["url"] + "/search", data=chunks, headers=JSON, timeout=120).status_code
    except requests.ConnectionError:  # the server answered 413 and closed while the client still sent
        status = 413
    finally:
        stop.set()
        sampler.join()
    assert status == 413
    assert peak[0] - before < 64 * 2**20, (before, peak[0])
    assert requests.get(served["url"] + "/health", timeout=30).status_code == 200


# Loads ten new versions of the served model one after another, as ten promotions make a server do.
PROMOTIONS = """
import json, sys
from pathlib import Path
from mlflow import MlflowClient
from ampere.serve.models import RegistryModels

tracking, cache, name = sys.argv[1:4]
def rss():
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024
client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
base = client.get_model_version(name, "1")
versions = [str(client.create_model_version(name, base.source, base.run_id).version) for _ in range(10)]
models, figures = RegistryModels(tracking, Path(cache)), []
for version in versions:
    models.get(name, version).embed  # loaded and ready
    figures.append(rss())
print(json.dumps({"rss": figures, "loaded": models.loaded()}))
"""


def test_ten_promotions_in_a_row_keep_two_models_loaded_and_memory_bounded(served, tmp_path) -> None:
    """Bound: RSS stays under the first load's plus four models (one model: the second load's increment)."""
    registry = tmp_path / "mlflow.db"  # a copy: the served registry keeps its versions
    shutil.copyfile(served["root"] / "mlflow" / "mlflow.db", registry)
    command = [sys.executable, "-c", PROMOTIONS, f"sqlite:///{registry}", str(tmp_path / "none.sqlite"), "ampere-encoder"]
    out = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    rss, loaded = out["rss"], out["loaded"]
    assert len(loaded) == 2 and [v for _, v in loaded] == [str(int(loaded[1][1]) - 1), loaded[1][1]]
    one_model, shown = rss[1] - rss[0], [f"{r / 2**20:.0f} MiB" for r in rss]
    # Two stay loaded and a third loads before the oldest goes; freed memory is reused, so RSS levels off:
    # under four models above the first load (nine without eviction), and flat over the last five.
    assert max(rss) - rss[0] < 4 * one_model, shown
    assert max(rss[5:]) - rss[4] < one_model, shown


def test_a_slow_clip_is_cut_off_by_its_time_bound_while_item_queries_keep_answering(served, tmp_path) -> None:
    url, item = served["url"], served["items"].index[0]

    def item_query() -> float:
        started = time.perf_counter()
        assert _search(url, item_id=item, k=3).status_code == 200
        return time.perf_counter() - started

    normal = sorted(item_query() for _ in range(20))
    clip = slow_clip(tmp_path / "slow.mp4")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        upload = pool.submit(requests.post, url + "/search", files={"file": ("slow.mp4", clip.read_bytes())}, timeout=60)
        during = [item_query() for _ in range(10)]
        refused = upload.result()
    assert refused.status_code == 422 and "decoding took longer than the limit of 0.25 s" in refused.json()["error"]
    assert max(during) < max(3 * normal[-1], 0.25), (normal[-1], during)  # within the item queries' usual p99
    photo = Path(served["items"][served["items"]["domain"] == "page"].iloc[0]["media_path"])
    assert requests.post(url + "/search", files={"file": ("p.png", photo.read_bytes())}, timeout=60).status_code == 200


def test_metrics_count_requests_time_them_and_name_the_served_index(served) -> None:
    url = served["url"]
    item = served["embeddings"].index[0]

    def searches() -> float:
        counter = 'ampere_requests_total{method="POST",route="/search",status="200"}'
        text = requests.get(url + "/metrics", timeout=30).text
        line = next((x for x in text.splitlines() if x.startswith(counter)), None)
        return float(line.split()[-1]) if line else 0.0

    before = searches()
    for _ in range(3):
        assert _search(url, item_id=item, k=2).status_code == 200
    text = requests.get(url + "/metrics", timeout=30).text
    assert searches() == before + 3
    assert 'ampere_request_seconds_bucket{le="+Inf",route="/search"}' in text
    current = served["store"].current()
    assert f'ampere_served_index{{index_id="{current}",model_version="' in text


def test_promotion_and_rollback_are_served_without_restart_or_failed_request(served) -> None:
    """Clients search without pause while CURRENT moves between the two runs' indexes several times:
    every request succeeds, and every answer pairs an index with the model whose vectors it holds."""
    url, store, indexes = served["url"], served["store"], served["indexes"]
    model_of = {index_id: version for version, index_id in indexes.items()}
    item = served["embeddings"].index[0]
    first, second = sorted(indexes, key=int)
    seen = []

    def client(stop_at: float) -> list[tuple[int, str, str]]:
        answers = []
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                response = session.post(url + "/search", json={"item_id": item, "k": 2}, timeout=60)
                body = response.json()
                answers.append((response.status_code, body.get("index_id"), body.get("model_version")))
        return answers

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, time.monotonic() + 12) for _ in range(4)]
        for version in (first, second, first, second):
            time.sleep(2)
            store.swap(indexes[version])
            seen.append(version)
        store.rollback()  # back to `first`
        answers = [answer for future in futures for answer in future.result()]
    assert {status for status, _, _ in answers} == {200}, answers
    assert all(model_of[index_id] == version for _, index_id, version in answers)
    assert {version for _, _, version in answers} == {first, second}
    health = requests.get(url + "/health", timeout=30).json()
    assert health["index_id"] == indexes[first] and health["model_version"] == first
    store.swap(indexes[second])
    _wait_serving(url, second)


IMAGES_LOADED = (
    "Promise.all([...document.images].map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))"
    ".then(() => [...document.querySelectorAll('%s img')].map(i => [i.alt, i.naturalWidth]))"
)


def _not_blank(png: bytes) -> None:
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20, pixels.std()
    assert (pixels.min(axis=2) < 200).mean() > 0.05  # a real share of the page is not white


def test_the_page_shows_a_query_and_its_results_in_a_real_browser(served) -> None:
    """Headless Chromium picks a query item, then uploads a photo: result thumbnails render (DOM and
    pixels), in the order the API gives."""
    from browser import Browser

    url, items = served["url"], served["items"]
    browser = Browser()
    try:
        browser.load("Page.navigate", url=url + "/")
        item = browser.evaluate("document.querySelector('.picks a[data-item]').dataset.item")
        browser.load("Runtime.evaluate", expression="document.querySelector('.picks a[data-item]').click()")
        assert browser.evaluate("location.search") == f"?item={item}"
        shown = browser.evaluate(IMAGES_LOADED % ".results")
        api = _search(url, item_id=item, k=6).json()
        own = api["query"]["domain"]
        expected = [hit["item_id"] for domain, hits in api["results"].items() if domain != own for hit in hits]
        assert [alt for alt, _ in shown] == expected and expected
        assert all(width > 0 for _, width in shown), shown
        _not_blank(browser.screenshot())

        photo = Path(items[items["domain"] == "page"].iloc[-1]["media_path"])
        browser.set_file("input[type=file]", photo)
        browser.load("Runtime.evaluate", expression="document.querySelector('form').submit()")
        [(_, query_width)] = browser.evaluate(IMAGES_LOADED % ".query")
        shown = browser.evaluate(IMAGES_LOADED % ".results")
        assert query_width > 0 and shown and all(width > 0 for _, width in shown), shown
        _not_blank(browser.screenshot())
    finally:
        browser.close()


def test_mlflow_models_serve_embeds_a_photo_and_a_clip_as_the_pipeline_did(served) -> None:
    """MLflow's own scoring server on the registered champion: a page photo with its title and a short
    clip with its transcript (sent as base64 bytes; the transcript summarised again by the packaged
    LLM with the model's prompt and tagger) give the pipeline's stored embeddings."""
    import base64

    items, stored = served["items"], served["embeddings"]
    rows = [
        items[items["domain"] == "page"].iloc[1],
        items[(items["domain"] == "short") & (items["asr"].str.strip() != "") & items["media_path"].str.endswith(".mp4")].iloc[0],
    ]
    records = [
        {
            "domain": row["domain"],
            "media": base64.b64encode(Path(row["media_path"]).read_bytes()).decode(),
            "text": row["title"] if row["domain"] == "page" else row["asr"],
        }
        for row in rows
    ]
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": served["tracking"], "PATH": f"{BIN}:{os.environ['PATH']}"}  # it execs uvicorn
    command = [str(BIN / "mlflow"), "models", "serve", "-m", "models:/ampere-encoder@champion", "--env-manager", "local"]
    process = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(360):
            try:
                response = requests.post(
                    f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": records}, timeout=300
                )
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stderr.read().decode()[-3000:]
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow models serve did not answer within 180 s")
        assert response.status_code == 200, response.text[-3000:]
        vectors = np.asarray(response.json()["predictions"], dtype=np.float32)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    for row, vector in zip(rows, vectors, strict=True):
        reference = np.asarray(stored.loc[row["item_id"], "embedding"], dtype=np.float32)
        assert float(vector @ reference) >= 0.9999 * float(np.linalg.norm(vector) * np.linalg.norm(reference)), row["item_id"]


def test_ampere_index_rollback_moves_the_champion_alias_and_the_server_follows(served) -> None:
    from mlflow import MlflowClient

    url, store, indexes = served["url"], served["store"], served["indexes"]
    first, second = sorted(indexes, key=int)
    assert store.current() == indexes[second]
    command = [str(BIN / "ampere"), "index", "rollback", "--store", str(store.root), "--tracking-uri", served["tracking"]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"serving {indexes[first]}" in result.stdout and f"champion: ampere-encoder v{first}" in result.stdout
    health = _wait_serving(url, first)
    assert health["champion_version"] == first and health["index_id"] == indexes[first]
    store.swap(indexes[second])  # previous = first, as the other tests expect
    client = MlflowClient(tracking_uri=served["tracking"], registry_uri=served["tracking"])
    client.set_registered_model_alias("ampere-encoder", "champion", second)
    _wait_serving(url, second)


def test_an_index_whose_model_cannot_be_loaded_leaves_the_last_pair_serving(served) -> None:
    """CURRENT moved to an index whose model version is not in the registry: requests keep being
    answered by the last good index and model, and /health says which index was refused and why."""
    from ampere.retrieval.index import build_indexes

    url, store, indexes = served["url"], served["store"], served["indexes"]
    first, second = sorted(indexes, key=int)
    about = {"registered_model": "ampere-encoder", "model_version": "999", "data_version": "dvc:none"}
    rows = served["embeddings"].reset_index()
    store.publish(lambda folder: build_indexes(rows, folder, about=about), "orphan-index")
    _wait_serving(url, second)  # the last good pair the server has served
    store.swap("orphan-index")
    try:
        for _ in range(3):
            response = _search(url, item_id=rows["item_id"][0], k=2)
            assert response.status_code == 200 and response.json()["index_id"] == indexes[second]
        health = requests.get(url + "/health", timeout=30).json()
        assert health["index_id"] == indexes[second] and health["model_version"] == second
        assert "999" in health["not_served"]["orphan-index"]
    finally:
        store.swap(indexes[first])
        store.swap(indexes[second])  # previous = first, as the other tests expect
        _wait_serving(url, second)


def test_the_server_loads_the_model_from_the_registered_model_its_index_names(served) -> None:
    """A pipeline configured with another registered model name (`MlflowResource.registered_model`)
    publishes indexes that name it: the server loads the model from there, not from a fixed name."""
    from ampere.retrieval.index import build_indexes
    from mlflow import MlflowClient

    url, store, indexes = served["url"], served["store"], served["indexes"]
    first, second = sorted(indexes, key=int)
    client = MlflowClient(tracking_uri=served["tracking"], registry_uri=served["tracking"])
    client.create_registered_model("my-encoder")
    source = client.get_model_version_download_uri("ampere-encoder", second)
    version = client.create_model_version("my-encoder", source, run_id=client.get_model_version("ampere-encoder", second).run_id)
    about = {"registered_model": "my-encoder", "model_version": str(version.version), "data_version": "dvc:none"}
    rows = served["embeddings"].reset_index()
    store.publish(lambda folder: build_indexes(rows, folder, about=about), "my-encoder-index")
    store.swap("my-encoder-index")
    try:
        deadline = time.monotonic() + 60
        while (health := requests.get(url + "/health", timeout=30).json())["index_id"] != "my-encoder-index":
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        assert health["registered_model"] == "my-encoder" and health["model_version"] == str(version.version)
        assert health["champion_version"] is None  # no champion alias in that registered model
        response = _search(url, item_id=rows["item_id"][0], k=2)
        assert response.status_code == 200 and response.json()["index_id"] == "my-encoder-index"
    finally:
        store.swap(indexes[first])
        store.swap(indexes[second])  # previous = first, as the other tests expect
        _wait_serving(url, second)
