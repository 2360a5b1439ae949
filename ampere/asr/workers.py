"""Summarisation over several engines at once: disjoint groups of summary shards, one process each.

Each worker process builds its own engine (on a GPU host: pinned to its own GPUs by
`CUDA_VISIBLE_DEVICES`, `tensor_parallel_size` of them; llama.cpp on the CPU: its share of the cores),
fits the same title tagger on the same items, and summarises its shards' transcripts into the shared
summary cache (SQLite, WAL: writers take turns). The caller then reads every summary back through
the cache, so the cache keys are exactly those of one engine doing it all, and so are the results
when each engine has the same settings (llama.cpp's answers can depend on its thread count: give
the workers and the single engine equal `threads` for identical summaries).

    python -m ampere.asr.workers TASK.json      # what `run_workers` starts, once per worker
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ampere.asr.backends import build_summarizer
from ampere.asr.cache import open_summary_cache
from ampere.asr.candidates import TaggerConfig
from ampere.asr.prompts import load_prompt
from ampere.asr.summaries import summarize_transcripts

STATS = ("calls", "cache_hits", "empty", "failed", "tokens_in", "tokens_out", "seconds")


@dataclass
class WorkerTask:
    """One worker's share: which clips (by item id) of the items file, through which engine and cache."""

    shards: list[str]
    item_ids: list[str]
    items_path: str
    prompt_id: str
    backend: str
    engine: dict[str, Any]
    cache_path: str
    tagger: dict[str, Any]


def shard_groups(shards: list[str], workers: int) -> list[list[str]]:
    """``shards`` dealt round-robin into at most ``workers`` non-empty, disjoint groups."""
    groups = [shards[i::workers] for i in range(min(workers, len(shards)))]
    return [group for group in groups if group]


def worker_environments(backend: str, workers: int, tensor_parallel_size: int, gpus: int) -> list[dict[str, str]]:
    """Per worker, the environment that pins it: its own `tensor_parallel_size` GPUs for vLLM and
    transformers when the host has GPUs (an error if there are too few), nothing else otherwise."""
    if backend == "llamacpp" or gpus == 0:
        return [{} for _ in range(workers)]
    if workers * tensor_parallel_size > gpus:
        needed = workers * tensor_parallel_size
        raise ValueError(f"{workers} workers x {tensor_parallel_size} GPUs each need {needed} GPUs, {gpus} here")
    return [
        {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in range(w * tensor_parallel_size, (w + 1) * tensor_parallel_size))}
        for w in range(workers)
    ]


def engine_share(backend: str, engine: dict[str, Any], workers: int) -> dict[str, Any]:
    """A worker's engine options: llama.cpp gets its share of the CPU cores (unless threads are set)."""
    if backend == "llamacpp" and "n_threads" not in engine:
        return {**engine, "n_threads": max(1, (os.cpu_count() or 2) // workers)}
    return engine


def run_workers(tasks: list[WorkerTask], environments: list[dict[str, str]], folder: Path) -> list[dict[str, float]]:
    """Runs one process per task at once (task files and stats in ``folder``); returns each one's stats.
    A worker that fails fails the whole call, with the end of its output."""
    folder.mkdir(parents=True, exist_ok=True)
    processes = []
    for number, (task, extra) in enumerate(zip(tasks, environments, strict=True)):
        path = folder / f"worker-{number}.json"
        path.write_text(json.dumps(asdict(task)))
        command = [sys.executable, "-m", "ampere.asr.workers", str(path)]
        log = (folder / f"worker-{number}.log").open("w")
        process = subprocess.Popen(command, env={**os.environ, **extra}, stdout=log, stderr=subprocess.STDOUT)
        processes.append((path, log, process))
    stats = []
    for path, log, process in processes:
        process.wait()
        log.close()
        if process.returncode != 0:
            tail = Path(log.name).read_text()[-3000:]
            raise RuntimeError(f"summary worker {path.stem} failed (exit {process.returncode}):\n{tail}")
        stats.append(json.loads(path.with_suffix(".stats.json").read_text()))
    return stats


def main(argv: list[str] | None = None) -> None:
    task_file = Path((argv or sys.argv[1:])[0])
    task = WorkerTask(**json.loads(task_file.read_text()))
    items = pd.read_parquet(task.items_path)
    clips = items.set_index("item_id").loc[task.item_ids]
    prompt = load_prompt(task.prompt_id)
    engine = build_summarizer(task.backend, prompt=prompt, **task.engine)
    with contextlib.closing(open_summary_cache(task.cache_path)) as cache:
        done = summarize_transcripts(prompt, items, list(clips["asr"]), engine, cache, TaggerConfig(**task.tagger))
    stats = {name: getattr(done.stats, name) for name in STATS}
    task_file.with_suffix(".stats.json").write_text(json.dumps({"shards": task.shards, **stats}))


if __name__ == "__main__":
    main()
