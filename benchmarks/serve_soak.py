"""A soak of `ampere serve` under mixed, hostile traffic: 5xx count, p50/p99 per query kind, RSS growth.

    .venv/bin/python benchmarks/serve_soak.py                       # the home of command 1, 10 min, concurrency 8
    .venv/bin/python benchmarks/serve_soak.py --home DIR --minutes 2 --concurrency 4

Starts `ampere serve` on 127.0.0.1 over the home's served index and sends, from ``--concurrency``
threads for ``--minutes``: item-id queries, photo and clip uploads of indexed items, the bad inputs
of the table in docs/serving.md (corrupt image, truncated clip, wrong types, deep JSON, a huge unknown id,
`k: 1.9`, unknown fields, bad base64, a declared and an undeclared oversized body), a crafted slow
clip (600 frames of 1080p) and an oversized clip; meanwhile `CURRENT` moves five times between the
store's two newest indexes. Prints requests, 5xx, p50 / p99 per kind and the server's RSS after a
warm-up of the same traffic (``--warmup-s``, not counted), every 30 s and at the end. Needs a home
with a served index and one more (README command 1, then scripts/new_data_story.sh).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from crafted_media import slow_clip  # noqa: E402  (the crafted clip the tests use)
from serve import free_port, wait_healthy  # noqa: E402  (benchmarks/serve.py, beside this script)

from ampere.data.format import read_items  # noqa: E402
from ampere.retrieval.index_store import IndexStore  # noqa: E402
from ampere.settings import Settings  # noqa: E402

WEIGHTS = {"item": 50, "photo": 15, "clip": 10, "bad": 20, "slow clip": 3, "oversized clip": 2}


def rss(pid: int) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def bad_requests(items: pd.DataFrame) -> list[dict]:
    """The refusals a server must answer with a 4xx, as keyword arguments of `requests.post`."""
    video = Path(items[items["media_path"].str.endswith(".mp4")].iloc[0]["media_path"]).read_bytes()
    json_type = {"content-type": "application/json"}
    return [
        {"files": {"file": ("photo.jpg", b"not an image at all")}},
        {"files": {"file": ("clip.mp4", video[: len(video) // 3])}},
        {"files": {"file": ("notes.txt", b"hello")}},
        {"json": {"item_id": "no-such-item"}},
        {"json": {"item_id": "x" * 1_500_000}},
        {"json": {"item_id": items.index[0], "k": 1.9}},
        {"json": {"item_id": items.index[0], "k": True}},
        {"json": {"item_id": items.index[0], "limit": 3}},
        {"json": {"text": "red shoes"}},
        {"json": {"image": "***"}},
        {"data": b"[" * 100_000 + b"]" * 100_000, "headers": json_type},
        {"data": b"{not json", "headers": json_type},
        {"data": b"\0" * (30 * 2**20), "headers": json_type},  # declared: refused by its length
        {"data": (b"A" * 2**20 for _ in range(64)), "headers": json_type},  # undeclared (chunked)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="the home to serve (default: as `ampere` finds it)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="traffic at the same concurrency before RSS is first read")
    args = parser.parse_args()
    home = Settings.resolve(home=args.home)
    store = IndexStore(home.local_workspace / "index_store")
    indexes = [event["index_id"] for event in store.history() if event["event"] == "publish"][-2:]
    if len(indexes) < 2 or store.current() is None:
        raise SystemExit(f"{store.root} needs a served index and one more to swap to (run command 1 and the new-data story)")
    items, _ = read_items(home.dataset)
    items = items.set_index("item_id", drop=False)
    indexed = set(pd.read_parquet(store.path(store.current()) / "page.ids.parquet")["item_id"])
    items = items[items["item_id"].isin(indexed) | (items["domain"] != "page")]
    photos = [Path(p).read_bytes() for p in items[items["domain"] == "page"]["media_path"][:20]]
    clips = [Path(p).read_bytes() for p in items[items["media_path"].str.endswith(".mp4")]["media_path"][:20]]
    bad = bad_requests(items)
    with tempfile.TemporaryDirectory(prefix="ampere-soak-") as tmp:
        slow = slow_clip(Path(tmp) / "slow.mp4").read_bytes()
    oversized = os.urandom(21 * 2**20)
    ids = list(items.index)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "ampere"), "--home", str(home.home), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(url, tries=600)

        def one(kind: str, rng: random.Random) -> tuple[int, float]:
            request = {
                "item": lambda: {"json": {"item_id": rng.choice(ids), "k": 10}},
                "photo": lambda: {"files": {"file": ("p.png", rng.choice(photos))}},
                "clip": lambda: {"files": {"file": ("c.mp4", rng.choice(clips))}},
                "bad": lambda: dict(rng.choice(bad)),
                "slow clip": lambda: {"files": {"file": ("slow.mp4", slow)}},
                "oversized clip": lambda: {"files": {"file": ("big.mp4", oversized)}},
            }[kind]()
            if "data" in request and not isinstance(request["data"], bytes):  # a generator is used once
                request["data"] = (b"A" * 2**20 for _ in range(64))
            started = time.perf_counter()
            try:
                status = requests.post(url + "/search", timeout=120, **request).status_code
            except requests.ConnectionError:  # refused mid-upload: the server closed after its 413
                status = 413
            return status, time.perf_counter() - started

        lock = threading.Lock()

        def worker(seed: int, until: float, sink: dict[str, list[tuple[int, float]]]) -> None:
            rng = random.Random(seed)
            kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
            while time.monotonic() < until:
                kind = rng.choices(kinds, weights)[0]
                outcome = one(kind, rng)
                with lock:
                    sink[kind].append(outcome)

        def run(until: float, sink: dict[str, list[tuple[int, float]]], offset: int) -> list[threading.Thread]:
            threads = [threading.Thread(target=worker, args=(offset + i, until, sink)) for i in range(args.concurrency)]
            for thread in threads:
                thread.start()
            return threads

        # Warm-up at the soak's concurrency (not counted): the model, its backbones and LLM load lazily, and
        # the server's threads reach their working memory; then the soak starts from that RSS.
        for thread in run(time.monotonic() + args.warmup_s, defaultdict(list), 1000):
            thread.join()
        start_rss = rss(server.pid)
        trend = [start_rss]
        results: dict[str, list[tuple[int, float]]] = defaultdict(list)
        deadline = time.monotonic() + 60 * args.minutes
        threads = run(deadline, results, 0)
        swaps_at = [deadline - 60 * args.minutes * (1 - (i + 1) / (args.swaps + 1)) for i in range(args.swaps)]
        while time.monotonic() < deadline:
            time.sleep(min(30.0, max(0.0, deadline - time.monotonic())))
            trend.append(rss(server.pid))
            while swaps_at and time.monotonic() >= swaps_at[0]:
                swaps_at.pop(0)
                store.swap(indexes[(args.swaps - len(swaps_at) - 1) % 2])
        for thread in threads:
            thread.join()
        end_rss = rss(server.pid)
        store.swap(indexes[-1])
        health = requests.get(url + "/health", timeout=60).status_code
    finally:
        server.terminate()
        server.wait(timeout=60)

    total = sum(len(v) for v in results.values())
    errors = sum(1 for v in results.values() for status, _ in v if status >= 500)
    print(f"\n{args.minutes:g} min at concurrency {args.concurrency}, {args.swaps} CURRENT swaps, this machine: "
          f"{os.cpu_count()} cores; {total:,} requests, {errors} 5xx; /health after: {health}\n")  # fmt: skip
    print("| kind | requests | 2xx | 4xx | 5xx | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind in WEIGHTS:
        rows = results[kind]
        if not rows:
            continue
        statuses = np.array([status for status, _ in rows])
        seconds = np.array([s for _, s in rows]) * 1000
        counts = [int(((statuses >= low) & (statuses < low + 100)).sum()) for low in (200, 400, 500)]
        print(f"| {kind} | {len(rows):,} | {counts[0]:,} | {counts[1]:,} | {counts[2]:,} | "
              f"{np.percentile(seconds, 50):.0f} | {np.percentile(seconds, 99):.0f} |")  # fmt: skip
    growth = 100 * (end_rss - start_rss) / start_rss
    print(f"\nserver RSS: {start_rss / 2**20:.0f} MiB after warm-up, {end_rss / 2**20:.0f} MiB at the end ({growth:+.1f} %)")
    print("RSS every 30 s (MiB): " + " ".join(f"{r / 2**20:.0f}" for r in trend))


if __name__ == "__main__":
    main()
