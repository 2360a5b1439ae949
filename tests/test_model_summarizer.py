"""A model on summaries records its summary engine's settings, and serving builds the LLM from them
(ampere.serve.pyfunc.write_summarizer / summary_engine), not from the backend's defaults."""

import pytest

from ampere.asr.prompts import load_prompt
from ampere.asr.summarizer import build_summarizer
from ampere.serve.pyfunc import SUMMARIZER, ModelUnavailableError, summary_engine, write_summarizer

PROMPT = load_prompt()


def _lineage(backend: str = "llamacpp") -> dict[str, str]:
    return {"text_source": "summary", "backend": backend, "llm": build_summarizer("llamacpp", PROMPT).model_id}


def test_serving_builds_the_llm_with_the_pipelines_settings(tmp_path):
    write_summarizer(tmp_path, _lineage(), "llamacpp", {"max_tokens": 48, "n_threads": 1})
    engine = summary_engine(tmp_path, _lineage(), PROMPT)
    assert (engine.config.max_tokens, engine.config.n_threads) == (48, 1)
    assert engine.decoding == build_summarizer("llamacpp", PROMPT, max_tokens=48).decoding  # the cache keys match


def test_settings_are_recorded_only_for_a_model_on_summaries_of_the_same_backend(tmp_path):
    write_summarizer(tmp_path, {**_lineage(), "text_source": "raw"}, "llamacpp", {"max_tokens": 48})
    assert not (tmp_path / SUMMARIZER).exists()
    with pytest.raises(ValueError, match="backend vllm, the training summaries came from llamacpp"):
        write_summarizer(tmp_path, _lineage(), "vllm", {"model": "m"})


def test_an_engine_that_cannot_be_built_or_is_another_llm_makes_the_model_unavailable(tmp_path):
    assert summary_engine(tmp_path, _lineage(), PROMPT).config.max_tokens == 64  # logged before settings: defaults
    with pytest.raises(ModelUnavailableError, match="transformers summarizer cannot be built"):
        summary_engine(tmp_path, _lineage("transformers"), PROMPT)  # it needs a model path
    with pytest.raises(ModelUnavailableError, match="training used other-llm"):
        summary_engine(tmp_path, {**_lineage(), "llm": "other-llm"}, PROMPT)
