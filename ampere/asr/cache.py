"""Content-addressed cache of summaries (a SQLite file, or a PostgreSQL table on a cluster), so only new or
changed transcripts reach the LLM.

The key of a transcript's summary is the sha256 of (sha256 of the transcript, prompt id,
prompt hash, model id, canonical JSON of the decoding parameters): changing the transcript, the
prompt file, the model file or any decoding setting makes a miss; nothing else does.

Results are stored except retryable failures (the engine raised instead of answering), which a
re-run tries again. A failure of the answers themselves (still invalid after every retry) is
stored: the same prompt, model and seeded decoding would fail again, so re-running it would only
cost LLM time; a new prompt, model or decoding setting is a new key and tries again.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ampere.asr.prompts import Prompt
from ampere.asr.summarizer import EMPTY_RESULT, Summarizer, SummaryResult
from ampere.lineage.hashing import canonical_json, content_hash

_QUERY_CHUNK = 500
_WAIT_SECONDS = 120  # how long a connection waits for other processes' writes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS summaries (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    product_name TEXT NOT NULL,
    features TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    prompt_hash TEXT NOT NULL,
    model_id TEXT NOT NULL
)
"""


def transcript_sha256(transcript: str) -> str:
    """Hex sha256 of a transcript's UTF-8 text."""
    return content_hash(transcript, "text")


def cache_key(transcript: str, prompt: Prompt, model_id: str, decoding: dict) -> str:
    """sha256 identifying one transcript's summary under one prompt, model and decoding."""
    parts = [transcript_sha256(transcript), prompt.id, prompt.hash, model_id, canonical_json(decoding)]
    return content_hash(parts, "json")


_COLUMNS = "key, text, status, error, product_name, features, tokens_in, tokens_out, attempts, prompt_hash, model_id"
_SELECT = "SELECT key, text, status, error, product_name, features, tokens_in, tokens_out, attempts FROM summaries"


def _rows(items: list[tuple[str, SummaryResult]], prompt_hash: str, model_id: str) -> list[tuple]:
    """Table rows of results (retryable failures are refused: they must be retried, not remembered)."""
    if any(result.retryable for _, result in items):
        raise ValueError("retryable failures are not cached")
    return [
        (key, r.text, r.status, r.error, r.product_name, json.dumps(r.features, ensure_ascii=False),
         r.tokens_in, r.tokens_out, r.attempts, prompt_hash, model_id)
        for key, r in items
    ]  # fmt: skip


def _result(row: tuple) -> tuple[str, SummaryResult]:
    key, text, status, error, name, features, t_in, t_out, attempts = row
    return key, SummaryResult(text, status, error, name, json.loads(features), t_in, t_out, attempts)


def is_database_url(location: str | Path) -> bool:
    """Whether a cache location names a PostgreSQL database rather than a SQLite file."""
    return str(location).startswith(("postgresql://", "postgresql+", "postgres://"))


class SummaryCache:
    """Summaries keyed by ``cache_key``: one table, in a SQLite file or a PostgreSQL database.

    Both give the same hits and misses for the same keys; ``open_summary_cache`` picks one from the location.
    """

    location: str
    read_only: bool
    _conn: Any  # a sqlite3 or psycopg connection: both run `execute(...).fetchone()`

    def get_many(self, keys: list[str]) -> dict[str, SummaryResult]:
        """Stored results of those ``keys`` that are present."""
        found: dict[str, SummaryResult] = {}
        unique = sorted(set(keys))
        for start in range(0, len(unique), _QUERY_CHUNK):
            found.update(_result(row) for row in self._select(unique[start : start + _QUERY_CHUNK]))
        return found

    def put_many(self, items: list[tuple[str, SummaryResult]], prompt_hash: str, model_id: str) -> None:
        """Store results (retryable failures are refused: they must be retried, not remembered)."""
        if self.read_only:
            raise ValueError(f"{self.location} is opened read-only")
        self._upsert(_rows(items, prompt_hash, model_id))

    def _select(self, keys: list[str]) -> list[tuple]:
        raise NotImplementedError

    def _upsert(self, rows: list[tuple]) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM summaries").fetchone()[0]

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()


class SqliteSummaryCache(SummaryCache):
    """The table in a SQLite file (WAL mode): one host's processes share it (not a network file system)."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.location, self.read_only = str(self.path), read_only
        if read_only:  # another's cache, read and never changed (a server reading the pipeline's)
            self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=_WAIT_SECONDS)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Several processes may share the file (summary workers): a writer waits for the others' turns.
        self._conn = sqlite3.connect(self.path, timeout=_WAIT_SECONDS)
        self._switch_to_wal()
        with self._conn:
            self._conn.execute(_SCHEMA)

    def _switch_to_wal(self) -> None:
        """WAL mode, waiting out other processes: SQLite answers "database is locked" at once, without
        its busy timeout, when two connections switch a new file to WAL together (seen: 11 of 40 tries)."""
        deadline = time.monotonic() + _WAIT_SECONDS
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _select(self, keys: list[str]) -> list[tuple]:
        return self._conn.execute(f"{_SELECT} WHERE key IN ({','.join('?' * len(keys))})", keys).fetchall()

    def _upsert(self, rows: list[tuple]) -> None:
        with self._conn:
            self._conn.executemany(f"INSERT OR REPLACE INTO summaries ({_COLUMNS}) VALUES ({','.join('?' * 11)})", rows)


_SCHEMA_LOCK = 0x616D70657265 + 1  # the advisory lock held while one process creates the table


class PostgresSummaryCache(SummaryCache):
    """The table in a PostgreSQL database: every host of a cluster shares it, writers upsert concurrently."""

    def __init__(self, url: str, read_only: bool = False):
        import psycopg

        self.location, self.read_only = _redacted(url), read_only
        # psycopg takes libpq URLs: SQLAlchemy's driver suffix (postgresql+psycopg2://) is dropped.
        self._conn = psycopg.connect("postgresql://" + url.split("://", 1)[1], autocommit=True)
        if read_only:
            self._conn.read_only = True
            return
        with self._conn.transaction():  # concurrent CREATE TABLE IF NOT EXISTS can fail: one at a time
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self._conn.execute(_SCHEMA)

    def _select(self, keys: list[str]) -> list[tuple]:
        return self._conn.execute(f"{_SELECT} WHERE key = ANY(%s)", (keys,)).fetchall()

    def _upsert(self, rows: list[tuple]) -> None:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS.split(", ")[1:])
        with self._conn.transaction(), self._conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO summaries ({_COLUMNS}) VALUES ({', '.join(['%s'] * 11)}) ON CONFLICT (key) DO UPDATE SET {updates}",
                rows,
            )


def _redacted(url: str) -> str:
    """A database URL without its password, for messages."""
    scheme, rest = url.split("://", 1)
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':', 1)[0]}{at}{host}" if at else url


def open_summary_cache(location: str | Path, read_only: bool = False) -> SummaryCache:
    """The summary cache at ``location``: a PostgreSQL URL (a cluster's hosts share it), else a SQLite file."""
    if is_database_url(location):
        return PostgresSummaryCache(str(location), read_only)
    return SqliteSummaryCache(location, read_only)


class QueryCache:
    """Summaries of query transcripts: a pipeline's cache read (never written: queries do not change
    the pipeline's state), and the summaries it lacks kept in a bounded in-memory cache of their own
    (least recently used first out), so a server's memory does not grow with its queries."""

    def __init__(self, pipeline_cache: str | Path, capacity: int = 4096):
        self.pipeline_cache = pipeline_cache
        self.capacity = capacity
        self._own: OrderedDict[str, SummaryResult] = OrderedDict()

    def get_many(self, keys: list[str]) -> dict[str, SummaryResult]:
        """Results of those ``keys`` that either cache holds."""
        found = {key: self._own[key] for key in set(keys) if key in self._own}
        for key in found:
            self._own.move_to_end(key)
        rest = sorted(set(keys) - set(found))
        if rest and (is_database_url(self.pipeline_cache) or Path(self.pipeline_cache).is_file()):
            with contextlib.closing(open_summary_cache(self.pipeline_cache, read_only=True)) as pipeline:
                found |= pipeline.get_many(rest)
        return found

    def put_many(self, items: list[tuple[str, SummaryResult]], prompt_hash: str, model_id: str) -> None:
        """Keep new results in the own cache, dropping the least recently used beyond ``capacity``."""
        for key, result in items:
            if not result.retryable:
                self._own[key] = result
                self._own.move_to_end(key)
        while len(self._own) > self.capacity:
            self._own.popitem(last=False)

    def __len__(self) -> int:
        return len(self._own)


@dataclass(frozen=True)
class SummaryStats:
    """What one ``summarize_cached`` call did.

    calls: distinct transcripts sent to the LLM (cache misses, duplicates counted once);
    cache_hits: records answered from the cache; empty: records with status "empty" (blank
    transcripts are never sent); failed: records with status "failed"; tokens_in/tokens_out:
    tokens spent by this call's LLM requests only; seconds: wall time of the call.
    """

    calls: int
    cache_hits: int
    empty: int
    failed: int
    tokens_in: int
    tokens_out: int
    seconds: float


def summarize_cached(
    transcripts: list[str], summarizer: Summarizer, prompt: Prompt, cache: SummaryCache | QueryCache
) -> tuple[list[SummaryResult], SummaryStats]:
    """Summaries of ``transcripts`` (input order); only cache misses reach the LLM.

    Misses are sent in chunks of the summarizer's ``batch_size`` and each chunk is written to the
    cache as soon as it is done, so an interrupted run keeps what it paid for.
    """
    if (summarizer.prompt.id, summarizer.prompt.hash) != (prompt.id, prompt.hash):
        raise ValueError(
            f"summarizer uses prompt {summarizer.prompt.id}@{summarizer.prompt.hash}, "
            f"not {prompt.id}@{prompt.hash}"
        )
    start = time.perf_counter()
    results: list[SummaryResult | None] = [None] * len(transcripts)
    keys: dict[int, str] = {}
    for i, transcript in enumerate(transcripts):
        if transcript.strip():
            keys[i] = cache_key(transcript, prompt, summarizer.model_id, summarizer.decoding)
        else:
            results[i] = EMPTY_RESULT
    cached = cache.get_many(list(keys.values()))
    misses: dict[str, str] = {}  # key -> transcript, first occurrence order
    hits = 0
    for i, key in keys.items():
        if key in cached:
            results[i] = cached[key]
            hits += 1
        elif key not in misses:
            misses[key] = transcripts[i]
    fresh: dict[str, SummaryResult] = {}
    pending = list(misses)
    with tqdm(total=len(pending), desc="LLM summaries (cache misses)", unit="transcript") as progress:
        for start_at in range(0, len(pending), summarizer.batch_size):
            chunk = pending[start_at : start_at + summarizer.batch_size]
            new = summarizer.summarize([misses[k] for k in chunk])
            if len(new) != len(chunk):
                raise RuntimeError(f"summarizer returned {len(new)} results for {len(chunk)}")
            done = dict(zip(chunk, new, strict=True))
            cache.put_many(
                [(k, r) for k, r in done.items() if not r.retryable],
                prompt_hash=prompt.hash,
                model_id=summarizer.model_id,
            )
            fresh.update(done)
            progress.update(len(chunk))
    for i, key in keys.items():
        if results[i] is None:
            results[i] = fresh[key]
    final: list[SummaryResult] = results  # type: ignore[assignment]
    stats = SummaryStats(
        calls=len(misses),
        cache_hits=hits,
        empty=sum(r.status == "empty" for r in final),
        failed=sum(r.status == "failed" for r in final),
        tokens_in=sum(r.tokens_in for r in fresh.values()),
        tokens_out=sum(r.tokens_out for r in fresh.values()),
        seconds=time.perf_counter() - start,
    )
    return final, stats
