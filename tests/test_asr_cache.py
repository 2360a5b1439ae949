"""Content-hash summary cache (ampere.asr.cache) with a counting summarizer, on SQLite and on a real PostgreSQL."""

import json
import sqlite3
import uuid

import pytest

from ampere.asr.cache import PostgresSummaryCache, SqliteSummaryCache, open_summary_cache, summarize_cached
from ampere.asr.prompts import PROMPT_DIR, load_prompt
from ampere.asr.summarizer import EMPTY_RESULT, SummaryResult
from ampere.asr.text import render_summary


class CountingSummarizer:
    """Implements the Summarizer protocol and records every transcript it is asked for."""

    def __init__(
        self, model_id="counting@000000000001", prompt=None, fail=(), temperature=0.0, batch_size=32, engine_error=()
    ):
        self.model_id = model_id
        self.batch_size = batch_size
        self.decoding = {"backend": "counting", "temperature": temperature}
        self.prompt = prompt or load_prompt()
        self.fail = set(fail)
        self.engine_error = set(engine_error)
        self.batches: list[list[str]] = []

    @property
    def seen(self) -> list[str]:
        return [t for batch in self.batches for t in batch]

    def summarize(self, transcripts):
        self.batches.append(list(transcripts))
        results = []
        for t in transcripts:
            if not t.strip():
                results.append(EMPTY_RESULT)
            elif t in self.fail:
                results.append(SummaryResult("", "failed", "invalid JSON", "", [], 50, 10, 3))
            elif t in self.engine_error:
                results.append(SummaryResult("", "failed", "engine error", "", [], 0, 0, 3, retryable=True))
            else:
                name = t.split()[0]
                text = render_summary(name, [f"{len(t)} chars"])
                results.append(SummaryResult(text, "ok", None, name, [f"{len(t)} chars"], 40, 8, 1))
        return results


TRANSCRIPTS = [f"product{i} with some live chatter number {i}" for i in range(10)]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request, tmp_path) -> str:
    """Where a new, empty cache lives: a SQLite file, or a database of the suite's PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "summaries.sqlite")
    return request.getfixturevalue("postgres")(f"cache_{uuid.uuid4().hex[:12]}")


@pytest.fixture()
def cache(location):
    cache = open_summary_cache(location)
    yield cache
    cache.close()


def test_first_run_summarises_everything_in_one_batch(cache):
    summarizer = CountingSummarizer()
    results, stats = summarize_cached(TRANSCRIPTS, summarizer, load_prompt(), cache)
    assert len(summarizer.batches) == 1 and summarizer.seen == TRANSCRIPTS
    assert [r.product_name for r in results] == [f"product{i}" for i in range(10)]
    assert (stats.calls, stats.cache_hits, stats.empty, stats.failed) == (10, 0, 0, 0)
    assert (stats.tokens_in, stats.tokens_out) == (400, 80)
    assert len(cache) == 10


def test_rerun_unchanged_data_makes_no_call_even_from_a_new_connection(location):
    prompt = load_prompt()
    first = open_summary_cache(location)
    results1, _ = summarize_cached(TRANSCRIPTS, CountingSummarizer(), prompt, first)
    first.close()
    second = open_summary_cache(location)
    summarizer = CountingSummarizer()
    results2, stats = summarize_cached(TRANSCRIPTS, summarizer, prompt, second)
    second.close()
    assert summarizer.batches == []
    assert (stats.calls, stats.cache_hits, stats.tokens_in, stats.tokens_out) == (0, 10, 0, 0)
    assert results2 == results1


def test_changing_k_transcripts_makes_exactly_k_calls(cache):
    prompt = load_prompt()
    summarize_cached(TRANSCRIPTS, CountingSummarizer(), prompt, cache)
    changed = list(TRANSCRIPTS)
    for i in (1, 4, 7):
        changed[i] = changed[i] + " and a new sentence"
    summarizer = CountingSummarizer()
    results, stats = summarize_cached(changed, summarizer, prompt, cache)
    assert summarizer.batches == [[changed[1], changed[4], changed[7]]]
    assert (stats.calls, stats.cache_hits) == (3, 7)
    assert results[4].features == [f"{len(changed[4])} chars"]


def test_other_prompt_model_or_decoding_are_misses(cache, tmp_path):
    prompt = load_prompt()
    summarize_cached(TRANSCRIPTS, CountingSummarizer(), prompt, cache)

    data = json.loads((PROMPT_DIR / "summary-v1.json").read_text())
    data["system"] += " Answer in English."
    (tmp_path / "p.json").write_text(json.dumps(data))
    other_prompt = load_prompt(path=tmp_path / "p.json")
    variants = [
        (CountingSummarizer(prompt=other_prompt), other_prompt),
        (CountingSummarizer(model_id="counting@000000000002"), prompt),
        (CountingSummarizer(temperature=0.5), prompt),
    ]
    for summarizer, used_prompt in variants:
        _, stats = summarize_cached(TRANSCRIPTS, summarizer, used_prompt, cache)
        assert summarizer.seen == TRANSCRIPTS
        assert (stats.calls, stats.cache_hits) == (10, 0)


def test_invalid_answers_are_cached_as_failures_engine_errors_are_retried(cache):
    prompt = load_prompt()
    invalid, broken = TRANSCRIPTS[2], TRANSCRIPTS[5]
    results, stats = summarize_cached(TRANSCRIPTS, CountingSummarizer(fail={invalid}, engine_error={broken}), prompt, cache)
    assert (results[2].status, results[2].text, results[2].error) == ("failed", "", "invalid JSON")
    assert results[5].status == "failed" and results[5].retryable
    assert stats.failed == 2 and len(cache) == 9
    summarizer = CountingSummarizer()
    results, stats = summarize_cached(TRANSCRIPTS, summarizer, prompt, cache)
    assert summarizer.seen == [broken]  # the reproducible failure costs nothing again
    assert (results[2].status, results[5].status) == ("failed", "ok")
    assert (stats.calls, stats.failed, len(cache)) == (1, 1, 10)
    with pytest.raises(ValueError, match="retryable"):
        cache.put_many([("k", SummaryResult("", "failed", "boom", "", [], 0, 0, 1, retryable=True))], prompt.hash, "m")


def test_empty_transcripts_make_no_call(cache):
    summarizer = CountingSummarizer()
    transcripts = ["", TRANSCRIPTS[0], "   \n\t", TRANSCRIPTS[1]]
    results, stats = summarize_cached(transcripts, summarizer, load_prompt(), cache)
    assert summarizer.seen == [TRANSCRIPTS[0], TRANSCRIPTS[1]]
    assert [r.status for r in results] == ["empty", "ok", "empty", "ok"]
    assert results[0].text == "" and results[0].attempts == 0
    assert (stats.calls, stats.cache_hits, stats.empty) == (2, 0, 2)


def test_duplicates_in_a_batch_are_summarised_once(cache):
    summarizer = CountingSummarizer()
    transcripts = [TRANSCRIPTS[0], TRANSCRIPTS[1], TRANSCRIPTS[0], TRANSCRIPTS[0]]
    results, stats = summarize_cached(transcripts, summarizer, load_prompt(), cache)
    assert summarizer.seen == [TRANSCRIPTS[0], TRANSCRIPTS[1]]
    assert results[0] == results[2] == results[3] and results[1] != results[0]
    assert stats.calls == 2


def test_prompt_must_match_the_summarizer(cache, tmp_path):
    data = json.loads((PROMPT_DIR / "summary-v1.json").read_text())
    data["version"] = 2
    (tmp_path / "p.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="prompt"):
        other = load_prompt(path=tmp_path / "p.json")
        summarize_cached(TRANSCRIPTS, CountingSummarizer(), other, cache)


def test_database_uses_wal_mode(tmp_path):
    cache = open_summary_cache(tmp_path / "summaries.sqlite")
    cache.close()
    conn = sqlite3.connect(cache.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


class Interrupted(RuntimeError):
    pass


class CrashingSummarizer(CountingSummarizer):
    """Raises on its `crash_on`-th batch, like a run killed halfway."""

    def __init__(self, crash_on: int, batch_size: int):
        super().__init__(batch_size=batch_size)
        self.crash_on = crash_on

    def summarize(self, transcripts):
        if len(self.batches) + 1 == self.crash_on:
            raise Interrupted("killed")
        return super().summarize(transcripts)


def test_an_interrupted_run_keeps_the_chunks_it_finished(cache):
    with pytest.raises(Interrupted):
        summarize_cached(TRANSCRIPTS, CrashingSummarizer(crash_on=3, batch_size=4), load_prompt(), cache)
    assert len(cache) == 8
    resumed = CountingSummarizer(batch_size=4)
    _, stats = summarize_cached(TRANSCRIPTS, resumed, load_prompt(), cache)
    assert resumed.seen == TRANSCRIPTS[8:]
    assert (stats.calls, stats.cache_hits) == (2, 8)


def _open_cache_at_once(path: str, barrier) -> str | None:
    barrier.wait()
    try:
        open_summary_cache(path).close()
    except sqlite3.OperationalError as error:
        return repr(error)
    return None


def test_processes_opening_a_new_cache_at_once_all_get_it(tmp_path):
    """Summary workers and concurrent runs open one cache file together; before the WAL switch waited,
    about one pair in four failed with "database is locked"."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        errors = []
        for trial in range(20):
            path = str(tmp_path / f"cache-{trial}.sqlite")
            barrier = manager.Barrier(2)
            errors += [e for e in pool.starmap(_open_cache_at_once, [(path, barrier)] * 2) if e]
    assert errors == []
    assert len(open_summary_cache(tmp_path / "cache-0.sqlite")) == 0


def _write_at_once(location: str, barrier, worker: int) -> int:
    """Writes 200 results of its own and 50 shared with the other worker, in chunks, after a barrier."""
    prompt = load_prompt()
    own = [(f"w{worker}-{i}", SummaryResult(f"own {worker} {i}", "ok", None, "p", ["a"], 1, 1, 1)) for i in range(200)]
    shared = [(f"shared-{i}", SummaryResult(f"shared {i}", "ok", None, "p", ["a"], 1, 1, 1)) for i in range(50)]
    cache = open_summary_cache(location)
    barrier.wait()
    items = own + shared
    for start in range(0, len(items), 10):
        cache.put_many(items[start : start + 10], prompt.hash, "m")
    cache.close()
    return len(items)


def test_two_processes_writing_at_once_lose_nothing(location):
    """Summary workers (and a cluster's summary pods) write one cache together: every row of each lands."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as pool:
        barrier = manager.Barrier(2)
        pool.starmap(_write_at_once, [(location, barrier, 0), (location, barrier, 1)])
    cache = open_summary_cache(location, read_only=True)
    keys = [f"w{w}-{i}" for w in (0, 1) for i in range(200)] + [f"shared-{i}" for i in range(50)]
    found = cache.get_many(keys)
    assert len(cache) == 450 and set(found) == set(keys)
    assert found["w1-199"].text == "own 1 199" and found["shared-7"].text == "shared 7"
    with pytest.raises(ValueError, match="read-only"):
        cache.put_many([("x", found["w0-0"])], load_prompt().hash, "m")
    cache.close()


def test_the_location_picks_the_backend(tmp_path, postgres):
    url = postgres(f"cache_{uuid.uuid4().hex[:12]}").replace("postgresql://", "postgresql+psycopg2://")
    on_postgres, on_sqlite = open_summary_cache(url), open_summary_cache(tmp_path / "c.sqlite")
    assert isinstance(on_postgres, PostgresSummaryCache) and isinstance(on_sqlite, SqliteSummaryCache)
    on_postgres.close(), on_sqlite.close()
