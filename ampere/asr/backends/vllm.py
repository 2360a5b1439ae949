"""The vLLM backend: offline batched generation on GPU hosts, JSON-schema constrained (vLLM is
imported when the engine first generates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ampere.asr.prompts import Prompt, answer_schema, load_prompt
from ampere.asr.summarizer import Generation, GenerationConfig, RetryingSummarizer, versioned_model_id


@dataclass(kw_only=True)
class VllmConfig(GenerationConfig):
    """vLLM backend settings. ``model`` is a local path or a model name vLLM can load.

    ``model_id`` overrides the cache identity; by default a local path is content-hashed
    (once per process) and a name is used as given.
    """

    model: str
    model_id: str | None = field(
        default=None, metadata={"doc": "the model's cache identity (default: a local path's content hash, a name as given)"}
    )
    tensor_parallel_size: int = field(default=1, metadata={"doc": "GPUs per vLLM engine (one summary worker each)"})
    batch_size: int = 1024  # vLLM schedules a whole call's requests together: large calls keep the GPU busy
    gpu_memory_utilization: float = field(default=0.85, metadata={"doc": "share of each GPU's memory vLLM may take"})
    max_model_len: int = field(default=4096, metadata={"doc": "vLLM's context length (tokens)"})
    dtype: str = field(default="auto", metadata={"doc": "vLLM's weight and activation dtype"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model.strip():
            raise ValueError("model must be a non-empty path or name")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")


def vllm_conversations(prompt: Prompt, transcripts: list[str]) -> list[list[dict]]:
    """One chat (shared few-shot prefix + transcript) per cleaned transcript."""
    return [prompt.messages(t) for t in transcripts]


def vllm_structured_kwargs(sampling_module: Any, schema: dict) -> dict:
    """SamplingParams keyword that constrains output to ``schema``.

    vLLM >= 0.11 has ``StructuredOutputsParams`` (``structured_outputs=``); older releases
    have ``GuidedDecodingParams`` (``guided_decoding=``).
    """
    if hasattr(sampling_module, "StructuredOutputsParams"):
        return {"structured_outputs": sampling_module.StructuredOutputsParams(json=schema)}
    if hasattr(sampling_module, "GuidedDecodingParams"):
        return {"guided_decoding": sampling_module.GuidedDecodingParams(json=schema)}
    raise RuntimeError("this vLLM has neither StructuredOutputsParams nor GuidedDecodingParams")


def vllm_sampling_params(
    sampling_module: Any, config: GenerationConfig, attempt: int, schema: dict
) -> Any:
    """``SamplingParams`` for one attempt: deterministic seed, JSON-schema constrained."""
    temperature, seed = config.attempt_params(attempt)
    return sampling_module.SamplingParams(
        max_tokens=config.max_tokens,
        temperature=temperature,
        seed=seed,
        **vllm_structured_kwargs(sampling_module, schema),
    )


def vllm_generation(output: Any) -> Generation:
    """Convert one vLLM ``RequestOutput`` into a ``Generation``."""
    if not output.outputs:
        return Generation("", error="vLLM returned no completion")
    completion = output.outputs[0]
    return Generation(
        raw=completion.text,
        tokens_in=len(output.prompt_token_ids or []),
        tokens_out=len(completion.token_ids or []),
        truncated=completion.finish_reason == "length",
    )


def vllm_engine(config: VllmConfig) -> Any:
    """The ``vllm.LLM`` engine for ``config`` (prefix caching on: every prompt shares the few-shot prefix)."""
    import vllm

    return vllm.LLM(
        model=config.model,
        tensor_parallel_size=config.tensor_parallel_size,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_model_len=config.max_model_len,
        dtype=config.dtype,
        seed=config.seed,
        enable_prefix_caching=True,
    )


class VllmSummarizer(RetryingSummarizer):
    """Offline batched generation with vLLM; the engine is created on first use."""

    def __init__(self, config: VllmConfig, prompt: Prompt | None = None):
        self.config = config
        self.prompt = prompt or load_prompt()
        if config.model_id:
            self.model_id = config.model_id
        elif Path(config.model).exists():
            self.model_id = versioned_model_id(config.model)
        else:
            self.model_id = config.model
        self.decoding = config.decoding("vllm", "json_schema", self.prompt)
        self.batch_size = config.batch_size
        self._llm: Any = None

    def _generate(self, transcripts: list[str], attempt: int) -> list[Generation]:
        from vllm import sampling_params as sampling_module

        if self._llm is None:
            self._llm = vllm_engine(self.config)
        params = [
            vllm_sampling_params(sampling_module, self.config, attempt, answer_schema(self.prompt, t))
            for t in transcripts
        ]  # one per request: a "candidates" prompt narrows the schema to each request's phrases
        outputs = self._llm.chat(
            vllm_conversations(self.prompt, transcripts), sampling_params=params, use_tqdm=True
        )
        return [vllm_generation(o) for o in outputs]
