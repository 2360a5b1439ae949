"""Latency and throughput of `ampere serve` on 127.0.0.1, each beside its bare reference.

    .venv/bin/python benchmarks/serve.py [--home DIR] [--gallery 100000]

Needs command 1's results in the home (a served index and its registered model). The served index
is copied into a scratch index store beside two synthetic galleries of ``--gallery`` unit vectors
(a mixture of clusters, like trained embeddings), one exact and one approximate (IVF, built
through the recall@10 >= 0.95 gate). One `ampere serve` process follows that store's CURRENT
while this script moves it from gallery to gallery, and measures p50 / p99 latency and requests/s
at concurrency 1 and 8 for item-id queries (and image queries on the default index). The bare
references, timed in this process on the same data: the FAISS search of the same galleries for
the same vectors, and the frame backbone on one image.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import requests

from ampere.data.format import read_items
from ampere.data.frames import load_frames
from ampere.models.backbones import encoders_from_ids
from ampere.retrieval.index import IndexConfig, build_indexes, load_index
from ampere.retrieval.index_store import IndexStore
from ampere.settings import Settings
from mlflow import MlflowClient

K = 10
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, tries: int = 300) -> None:
    """Until ``url``/health answers 200 (the first answer waits for the model to load), at most ``tries`` times."""
    for _ in range(tries):
        try:
            if requests.get(url + "/health", timeout=120).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become healthy")


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around n / 50 random centres (within-cluster cosine about 0.8)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 50), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(len(centres), size=n)] + rng.normal(scale=0.5 / np.sqrt(dim), size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.asarray(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _load(url: str, requests_of: list[dict], concurrency: int) -> tuple[float, float, float]:
    """p50 ms, p99 ms and requests/s of the given /search requests at a concurrency. JSON requests go
    through `http.client` on one kept-alive connection per client (the lightest client at hand);
    uploads through `requests`, whose own cost is small beside an image query's."""
    host, port = url.removeprefix("http://").split(":")

    def worker(part: list[dict]) -> list[float]:
        times = []
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        with requests.Session() as session:
            for request in part:
                start = time.perf_counter()
                if "json" in request:
                    connection.request("POST", "/search", json.dumps(request["json"]), {"content-type": "application/json"})
                    response = connection.getresponse()
                    status, body = response.status, response.read()
                else:
                    answer = session.post(url + "/search", timeout=120, **request)
                    status, body = answer.status_code, answer.content
                times.append(time.perf_counter() - start)
                if status != 200:
                    raise RuntimeError(f"{status}: {body[:500]!r}")
        connection.close()
        return times

    parts = [requests_of[i::concurrency] for i in range(concurrency)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        seconds = [t for times in pool.map(worker, parts) for t in times]
    wall = time.perf_counter() - start
    return (*_percentiles(seconds), len(seconds) / wall)


def _bare_search(indexes: list, vectors: np.ndarray, k: int) -> float:
    """p50 ms of the FAISS searches an item-id request makes (one per gallery of ``indexes``), nothing else."""
    times = []
    for vector in vectors:
        start = time.perf_counter()
        for index in indexes:
            index.search(vector[None, :], k + 1)
        times.append(time.perf_counter() - start)
    return _percentiles(times)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="the project home with command 1's results (default: ampere.settings.Settings)")
    parser.add_argument("--gallery", type=int, default=100_000, help="size of the synthetic galleries")
    parser.add_argument("--item-queries", type=int, default=400)
    parser.add_argument("--image-queries", type=int, default=80)
    args = parser.parse_args()
    home = Settings.resolve(home=args.home)
    served = IndexStore(home.local_workspace / "index_store")
    current = served.current()
    if current is None:
        raise SystemExit(f"no served index in {home.local_workspace / 'index_store'}: run command 1 first")
    manifest = json.loads((served.path(current) / "manifest.json").read_text())
    about = manifest["about"]
    scratch = Path(tempfile.mkdtemp(prefix="ampere-serve-bench-"))
    store = IndexStore(scratch / "index_store")
    store.publish(served.path(current), current)
    rng = np.random.default_rng(0)
    vectors = _clustered(args.gallery, manifest["domains"]["page"]["dim"])
    gallery = pd.DataFrame(
        {
            "item_id": [f"synthetic-{i}" for i in range(args.gallery)],
            "product_id": [f"sp{i}" for i in range(args.gallery)],
            "domain": "page",
            "embedding": list(vectors),
        }
    )
    kinds = {
        "exact": IndexConfig(exact_below=args.gallery + 1),
        "ivf": IndexConfig(exact_below=0, approximate="ivf", fallback_to_exact=False),
    }
    synthetic = {}
    for kind, config in kinds.items():
        start = time.perf_counter()
        synthetic[kind] = index_id = f"synthetic-{args.gallery}-{kind}"
        store.publish(lambda folder, config=config: build_indexes(gallery, folder, config=config, about=about), index_id)
        page = json.loads((store.path(index_id) / "manifest.json").read_text())["domains"]["page"]
        built = f"{page['index_type']} {page['index_params']} recall@10 {page['recall_at_10']}"
        print(f"built {index_id}: {built} in {time.perf_counter() - start:.1f} s", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store.swap(current)
    command = [str(BIN / "ampere"), "--home", str(home.root), "serve", "--port", str(port), "--store", str(store.root)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(url)
        rows = []
        galleries = [load_index(served.path(current), domain) for domain in manifest["domains"]]
        default_ids = [item for g in galleries for item in g.rows]
        picks = [str(x) for x in rng.choice(default_ids, size=args.item_queries)]
        default_vectors = np.stack([next(v for g in galleries if (v := g.vector(item)) is not None) for item in picks])
        bare = _bare_search([g.index for g in galleries], default_vectors, K)
        for concurrency in (1, 8):
            p50, p99, qps = _load(url, [{"json": {"item_id": i, "k": K}} for i in picks], concurrency)
            rows.append(("default index, item id (3 galleries)", concurrency, p50, p99, qps, "FAISS search", bare))
        lineage = MlflowClient(home.tracking_uri).get_model_version(about["registered_model"], about["model_version"]).tags
        items, _ = read_items(lineage["lineage.dataset"], check_media=False)
        photos = [Path(p) for p in items.loc[items["domain"] == "page", "media_path"]]
        frame_encoder, _ = encoders_from_ids(lineage["lineage.frame_encoder"], lineage["lineage.text_encoder"])
        backbone = _backbone_p50(frame_encoder, photos[:40])
        image_requests = [
            {"files": {"file": (p.name, p.read_bytes())}, "data": {"k": str(K)}} for p in (photos * 50)[: args.image_queries]
        ]
        _load(url, image_requests[:5], 1)  # warm the server's encoder
        for concurrency in (1, 8):
            p50, p99, qps = _load(url, image_requests, concurrency)
            rows.append(("default index, page photo (no title)", concurrency, p50, p99, qps, "frame backbone, 1 image", backbone))
        for kind, index_id in synthetic.items():
            store.swap(index_id)
            while requests.get(url + "/health", timeout=60).json()["index_id"] != index_id:
                time.sleep(0.1)
            rows_picked = rng.integers(args.gallery, size=args.item_queries)
            picks = [gallery["item_id"][i] for i in rows_picked]
            bare = _bare_search([load_index(store.path(index_id), "page").index], vectors[rows_picked], K)
            for concurrency in (1, 8):
                p50, p99, qps = _load(url, [{"json": {"item_id": i, "k": K}} for i in picks], concurrency)
                rows.append((f"{args.gallery:,} vectors {kind}, item id", concurrency, p50, p99, qps, "FAISS search", bare))
            for concurrency in (1, 8):
                p50, p99, qps = _load(url, image_requests, concurrency)
                name = f"{args.gallery:,} vectors {kind}, page photo"
                rows.append((name, concurrency, p50, p99, qps, "frame backbone, 1 image", backbone))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(scratch)
    print("\n| query | concurrency | p50 ms | p99 ms | requests/s | bare reference | bare p50 ms | p50 − bare | p50 / bare |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for name, concurrency, p50, p99, qps, reference, bare in rows:
        figures = f"{p50:.2f} | {p99:.2f} | {qps:.0f} | {reference} | {bare:.2f} | {p50 - bare:+.2f} | {p50 / bare:.2f}×"
        print(f"| {name} | {concurrency} | {figures} |")


def _backbone_p50(encoder, photos: list[Path]) -> float:
    """p50 ms of the frame backbone on one decoded image (the bare model call a photo query makes)."""
    images = [load_frames(p, num_segments=1)[0] for p in photos]
    encoder.encode(images[:2])  # warm-up
    times = []
    for image in images * 3:
        start = time.perf_counter()
        encoder.encode([image])
        times.append(time.perf_counter() - start)
    return _percentiles(times)[0]


if __name__ == "__main__":
    main()
