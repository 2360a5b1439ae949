"""Summarizer backends, one module each, beside the shared retry engine (``ampere.asr.summarizer``):

- ``llamacpp``: a GGUF model in-process through xllamacpp (CPU); default the packaged SmolLM2-135M-Instruct;
- ``vllm``: offline batched generation with vLLM (GPU hosts; imported lazily);
- ``transformers``: any local Hugging Face causal LM folder, no constrained decoding (relies on retries).
"""

from __future__ import annotations

from typing import Any

from ampere.asr.backends.llamacpp import LlamaCppConfig, LlamaCppSummarizer
from ampere.asr.backends.transformers import TransformersConfig, TransformersSummarizer
from ampere.asr.backends.vllm import VllmConfig, VllmSummarizer
from ampere.asr.prompts import Prompt
from ampere.asr.summarizer import Summarizer

BACKENDS = {
    "llamacpp": (LlamaCppSummarizer, LlamaCppConfig),
    "vllm": (VllmSummarizer, VllmConfig),
    "transformers": (TransformersSummarizer, TransformersConfig),
}


def build_summarizer(backend: str, prompt: Prompt | None = None, **config: Any) -> Summarizer:
    """Build a backend ("llamacpp" | "vllm" | "transformers") from config keyword values."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown summarizer backend {backend!r}; choose from {sorted(BACKENDS)}")
    summarizer_cls, config_cls = BACKENDS[backend]
    return summarizer_cls(config_cls(**config), prompt=prompt)
