"""The summarizer's shared retry engine: noisy ASR transcript -> ``Product name: X; Features: a, b``.

Every backend (``ampere.asr.backends``: llama.cpp, vLLM, transformers) cleans each transcript,
builds the chat from a versioned ``Prompt``, asks the model for JSON matching ``SUMMARY_SCHEMA``,
and hands its answers to ``summarize_with_retries`` here, which parses them strictly. An invalid
answer is retried up to ``max_retries`` times (sequential engines retry each transcript at once,
batching engines retry the failures of a batch together); a retry samples at
``retry_temperature`` (greedy decoding would only repeat the same answer) with seed
``seed + attempt``, so every run is reproducible and a record's result never depends on the other
records of the batch. When all attempts fail the result has status "failed" and the reason; raw
model text is never used as a summary. A product name that shares no word with the transcript
(copied from the prompt's examples by small models) makes the answer invalid; features that share
none are dropped before rendering.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Literal, Protocol

from tqdm.auto import tqdm

from ampere.asr.prompts import SUMMARY_SCHEMA, Prompt
from ampere.asr.text import (
    clean_transcript,
    complete_features,
    grounded_features,
    is_grounded,
    parse_summary,
    render_summary,
)
from ampere.lineage.hashing import content_hash

Status = Literal["ok", "empty", "failed"]
# Version of what happens to a parsed answer (part of the cache key): bump it when it changes.
POSTPROCESS_VERSION = "grounded-name-features-v3"


@dataclass(frozen=True)
class SummaryResult:
    """The summary of one transcript (``text`` is "" unless status is "ok").

    ``retryable`` marks a failure caused by the engine (an error instead of an answer), which a
    later run may not repeat; a failure of the answers themselves (invalid after every retry) is
    reproducible under the same prompt, model and decoding.
    """

    text: str
    status: Status
    error: str | None
    product_name: str
    features: list[str]
    tokens_in: int
    tokens_out: int
    attempts: int
    retryable: bool = False


EMPTY_RESULT = SummaryResult("", "empty", None, "", [], 0, 0, 0)


class Summarizer(Protocol):
    """What the cache and the pipeline need from a backend."""

    model_id: str
    decoding: dict
    prompt: Prompt
    batch_size: int

    def summarize(self, transcripts: list[str]) -> list[SummaryResult]:
        """One result per transcript, in input order."""
        ...


@dataclass(frozen=True)
class Generation:
    """One raw model answer, or the error that prevented it."""

    raw: str
    tokens_in: int = 0
    tokens_out: int = 0
    truncated: bool = False
    error: str | None = None


# (cleaned transcripts, attempt index) -> one Generation per transcript
GenerateFn = Callable[[list[str], int], list[Generation]]


@dataclass(kw_only=True)
class GenerationConfig:
    """Decoding settings shared by all backends (all but ``batch_size`` are part of the cache key).

    ``batch_size`` is how many transcripts go to the engine per call (and per cache write); it
    does not change any record's answer, only throughput and how much an interruption loses.
    """

    max_tokens: int = field(default=64, metadata={"doc": "most tokens of one answer"})
    temperature: float = field(default=0.0, metadata={"doc": "sampling temperature of the first attempt (0: greedy)"})
    seed: int = field(default=0, metadata={"doc": "sampling seed of the first attempt (attempt k uses seed + k)"})
    max_retries: int = field(default=2, metadata={"doc": "retries of an invalid answer"})
    retry_temperature: float = field(default=0.7, metadata={"doc": "sampling temperature of a retry (at least temperature)"})
    max_transcript_chars: int = field(default=1200, metadata={"doc": "a cleaned transcript is cut to this many characters"})
    batch_size: int = field(default=32, metadata={"doc": "transcripts per engine call (and per cache write)"})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0 or self.retry_temperature < 0:
            raise ValueError("temperatures must be >= 0")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.max_transcript_chars < 64:
            raise ValueError(f"max_transcript_chars must be >= 64, got {self.max_transcript_chars}")

    def attempt_params(self, attempt: int) -> tuple[float, int]:
        """(temperature, seed) of attempt 0, 1, ...: retries sample with a new seed."""
        if attempt == 0:
            return self.temperature, self.seed
        return max(self.temperature, self.retry_temperature), self.seed + attempt

    def decoding(self, backend: str, constraint: str, prompt: Prompt) -> dict:
        """Canonical description of everything that shapes the output.

        A "candidates" prompt's answers are grounded: ``constraint`` is narrowed per request
        to the candidate phrases (``answer_schema``) and features are completed from them.
        """
        shared = {f.name: getattr(self, f.name) for f in fields(GenerationConfig) if f.name != "batch_size"}
        if prompt.reads_candidates and constraint != "none":
            constraint = f"grounded-{constraint}"
        return {
            "backend": backend,
            "constraint": constraint,
            "schema": content_hash(SUMMARY_SCHEMA, "json", 12),
            "postprocess": POSTPROCESS_VERSION,
            **shared,
        }


def _read_answer(gen: Generation, transcript: str, candidates: bool) -> tuple[str | None, str, list[str]]:
    """(error, product name, grounded features) of one answer; error is None when it is usable.

    A name that shares no word with the transcript (copied from a few-shot example) is an
    invalid answer, retried like a parse error; ungrounded features are only dropped. When
    ``candidates``, ``transcript`` is the tagger's phrases and the features are completed
    from them (``complete_features``).
    """
    if gen.error is not None:
        return gen.error, "", []
    try:
        name, features = parse_summary(gen.raw)
    except ValueError as exc:
        return (f"output truncated at max_tokens: {exc}" if gen.truncated else str(exc)), "", []
    if not is_grounded(name, transcript):
        return f"product name {name!r} shares no word with the transcript", "", []
    features = grounded_features(features, transcript)
    return None, name, complete_features(name, features, transcript) if candidates else features


def summarize_with_retries(
    transcripts: list[str],
    generate: GenerateFn,
    max_transcript_chars: int,
    max_retries: int,
    group_size: int | None = None,
    candidates: bool = False,
) -> list[SummaryResult]:
    """Clean, generate in rounds (first try, then retries of the failures), parse strictly.

    ``group_size`` transcripts go through their rounds together: ``None`` sends all of them at
    once (batching engines: one engine call per attempt); ``1`` retries each transcript right
    after its invalid answer, while a sequential engine still holds that prompt in its cache, so
    a retry only pays for decoding. Answers are read by ``_read_answer``: ungrounded names are
    invalid, ungrounded features dropped (``candidates``: the inputs are candidate phrases).
    """
    cleaned = [clean_transcript(t, max_transcript_chars) for t in transcripts]
    results: list[SummaryResult] = [EMPTY_RESULT] * len(cleaned)
    todo = [i for i, c in enumerate(cleaned) if c]
    size = group_size or max(len(todo), 1)
    with tqdm(total=len(todo), desc="summaries", unit="transcript", leave=False, disable=size == len(todo)) as bar:
        for start in range(0, len(todo), size):
            group = todo[start : start + size]
            rounds = _attempt_rounds([cleaned[i] for i in group], generate, max_retries, candidates)
            for i, result in zip(group, rounds, strict=True):
                results[i] = result
            bar.update(len(group))
    return results


class RetryingSummarizer:
    """A backend whose answers go through the shared retry engine (``summarize_with_retries``): it gives
    ``_generate`` and its ``group_size``: 1 for a sequential engine (each transcript retried at once,
    while the engine still caches its prompt), None for a batching one (a call's failures retried together)."""

    config: GenerationConfig
    prompt: Prompt
    group_size: int | None = None

    def _generate(self, transcripts: list[str], attempt: int) -> list[Generation]:
        raise NotImplementedError

    def summarize(self, transcripts: list[str]) -> list[SummaryResult]:
        """One result per transcript, in input order."""
        return summarize_with_retries(
            transcripts,
            self._generate,
            self.config.max_transcript_chars,
            self.config.max_retries,
            group_size=self.group_size,
            candidates=self.prompt.reads_candidates,
        )


def _attempt_rounds(
    cleaned: list[str], generate: GenerateFn, max_retries: int, candidates: bool
) -> list[SummaryResult]:
    """Results of non-empty cleaned transcripts after up to ``1 + max_retries`` generation rounds."""
    results: list[SummaryResult | None] = [None] * len(cleaned)
    tokens_in = [0] * len(cleaned)
    tokens_out = [0] * len(cleaned)
    errors: dict[int, str] = {}
    engine_failed: dict[int, bool] = {}
    pending = list(range(len(cleaned)))
    attempts = 0
    while pending and attempts <= max_retries:
        generations = generate([cleaned[i] for i in pending], attempts)
        if len(generations) != len(pending):
            raise RuntimeError(f"backend returned {len(generations)} answers for {len(pending)}")
        attempts += 1
        failed = []
        for i, gen in zip(pending, generations, strict=True):
            tokens_in[i] += gen.tokens_in
            tokens_out[i] += gen.tokens_out
            engine_failed[i] = gen.error is not None
            error, name, features = _read_answer(gen, cleaned[i], candidates)
            if error is None:
                text = render_summary(name, features)
                results[i] = SummaryResult(text, "ok", None, name, features, tokens_in[i], tokens_out[i], attempts)
                continue
            errors[i] = error
            failed.append(i)
        pending = failed
    for i in pending:
        results[i] = SummaryResult(
            "", "failed", errors[i], "", [], tokens_in[i], tokens_out[i], attempts, retryable=engine_failed[i]
        )
    return results  # type: ignore[return-value]


@cache
def versioned_model_id(path: str) -> str:
    """``<file or folder name>@<first 12 hex of its content sha256>`` (hashed once per process)."""
    resolved = Path(path).resolve()
    return f"{resolved.name}@{content_hash(resolved, 'tree' if resolved.is_dir() else 'file', 12)}"
