"""LLM summaries of noisy ASR transcripts: prompts, backends, parsing and a content-hash cache.

Heavy engines (xllamacpp, vLLM, transformers) are imported only when a backend first
generates, so importing this package is cheap.
"""

from ampere.asr.backends import (
    LlamaCppConfig,
    LlamaCppSummarizer,
    TransformersConfig,
    TransformersSummarizer,
    VllmConfig,
    VllmSummarizer,
    build_summarizer,
)
from ampere.asr.cache import SummaryCache, SummaryStats, cache_key, open_summary_cache, summarize_cached
from ampere.asr.prompts import SUMMARY_SCHEMA, Prompt, load_prompt
from ampere.asr.summarizer import Summarizer, SummaryResult
from ampere.asr.text import clean_transcript, parse_summary, render_summary

__all__ = [
    "SUMMARY_SCHEMA",
    "LlamaCppConfig",
    "LlamaCppSummarizer",
    "Prompt",
    "Summarizer",
    "SummaryCache",
    "SummaryResult",
    "SummaryStats",
    "TransformersConfig",
    "TransformersSummarizer",
    "VllmConfig",
    "VllmSummarizer",
    "build_summarizer",
    "cache_key",
    "clean_transcript",
    "load_prompt",
    "open_summary_cache",
    "parse_summary",
    "render_summary",
    "summarize_cached",
]
