"""A model on summaries records its summary engine's settings, and serving builds the LLM from them
(ampere.serve.pyfunc.summary_parts / summary_engine), not from the backend's defaults."""

import pytest

from ampere.asr.backends import build_summarizer
from ampere.asr.prompts import load_prompt
from ampere.asr.tagger_store import TaggerStore
from ampere.serve.pyfunc import ModelUnavailableError, SummaryParts, summary_engine, summary_parts

PROMPT = load_prompt()


def _lineage(backend: str = "llamacpp") -> dict[str, str]:
    return {"text_source": "summary", "backend": backend, "llm": build_summarizer("llamacpp", PROMPT).model_id, "tagger": "none"}


def test_serving_builds_the_llm_with_the_pipelines_settings(tmp_path):
    summary_parts(_lineage(), TaggerStore(tmp_path), "llamacpp", {"max_tokens": 48, "n_threads": 1}).write(tmp_path)
    engine = summary_engine(tmp_path, _lineage(), PROMPT)
    assert (engine.config.max_tokens, engine.config.n_threads) == (48, 1)
    assert engine.decoding == build_summarizer("llamacpp", PROMPT, max_tokens=48).decoding  # the cache keys match


def test_settings_of_another_backend_or_llm_are_refused_before_a_model_is_registered(tmp_path):
    with pytest.raises(ValueError, match="backend vllm, the summaries came from llamacpp"):
        summary_parts(_lineage(), TaggerStore(tmp_path), "vllm", {"model": "m"})
    with pytest.raises(ValueError, match="the summaries came from other-llm"):
        summary_parts({**_lineage(), "llm": "other-llm"}, TaggerStore(tmp_path), "llamacpp", {})


def test_an_engine_that_cannot_be_built_or_is_another_llm_makes_the_model_unavailable(tmp_path):
    assert summary_engine(tmp_path, _lineage(), PROMPT).config.max_tokens == 64  # logged before settings: defaults
    with pytest.raises(ModelUnavailableError, match="transformers summarizer cannot be built"):
        summary_engine(tmp_path, _lineage("transformers"), PROMPT)  # it needs a model path
    SummaryParts(None, {"max_tokens": 48}).write(tmp_path)
    with pytest.raises(ModelUnavailableError, match="training used other-llm"):
        summary_engine(tmp_path, {**_lineage(), "llm": "other-llm"}, PROMPT)
