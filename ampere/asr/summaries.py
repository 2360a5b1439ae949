"""From transcripts to summaries, the one way the pipeline and a query both take: the LLM inputs
the prompt reads (the tagger's candidate phrases, fitted on the training items, or the cleaned
transcript), summarised through the content-hash cache."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ampere.asr.cache import QueryCache, SummaryCache, SummaryStats, summarize_cached
from ampere.asr.candidates import LlmReader, TaggerConfig, llm_reader
from ampere.asr.prompts import Prompt
from ampere.asr.summarizer import Summarizer, SummaryResult


@dataclass(frozen=True)
class Summaries:
    """Row-aligned with the transcripts: what the LLM read, what it answered, and the run's figures."""

    inputs: list[str]
    results: list[SummaryResult]
    stats: SummaryStats
    reader: LlmReader  # what the LLM read through: its lineage is "none" or "title-tagger@<fingerprint>"


@dataclass
class TranscriptSummarizer:
    """A prompt's reader (fitted once), an LLM and the cache: call it with transcripts for their summaries."""

    prompt: Prompt
    reader: LlmReader
    summarizer: Summarizer
    cache: SummaryCache | QueryCache

    def __call__(self, transcripts: list[str], product_ids: list[str] | None = None) -> Summaries:
        """``product_ids`` (row-aligned) send a training product's transcripts to its fold's tagger, if the reader has folds."""
        inputs = self.reader(transcripts, product_ids)
        results, stats = summarize_cached(inputs, self.summarizer, self.prompt, self.cache)
        return Summaries(inputs=inputs, results=results, stats=stats, reader=self.reader)


def summarize_transcripts(
    prompt: Prompt,
    items: pd.DataFrame,
    transcripts: list[str],
    summarizer: Summarizer,
    cache: SummaryCache,
    tagger_config: TaggerConfig | None = None,
) -> Summaries:
    """Summaries of `transcripts`; `items` (with their splits) is the dataset whose training titles
    supervise the candidate tagger, as in `llm_reader`."""
    return TranscriptSummarizer(prompt, llm_reader(prompt, items, tagger_config), summarizer, cache)(transcripts)
