"""Summarizer backends, one module each, beside the shared retry engine (``ampere.asr.summarizer``):

- ``llamacpp``: a GGUF model in-process through xllamacpp (CPU); default the packaged SmolLM2-135M-Instruct;
- ``vllm``: offline batched generation with vLLM (GPU hosts; imported lazily);
- ``transformers``: any local Hugging Face causal LM folder, no constrained decoding (relies on retries).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ampere.asr.backends.llamacpp import LlamaCppConfig, LlamaCppSummarizer
from ampere.asr.backends.transformers import TransformersConfig, TransformersSummarizer
from ampere.asr.backends.vllm import VllmConfig, VllmSummarizer
from ampere.asr.prompts import Prompt
from ampere.asr.summarizer import GenerationConfig, Summarizer

BACKENDS = {
    "llamacpp": (LlamaCppSummarizer, LlamaCppConfig),
    "vllm": (VllmSummarizer, VllmConfig),
    "transformers": (TransformersSummarizer, TransformersConfig),
}


# A backend's model setting: the one `model` of a summarizer resource, named by each backend's config.
MODEL_FIELDS = ("model", "model_path")


def backend_settings() -> list[tuple[dataclasses.Field, Any]]:
    """(field, type) of every backend's own settings beyond the shared decoding (``GenerationConfig``) and
    the model, once per name (the first backend that declares it): what a summarizer resource may set."""
    shared = {f.name for f in dataclasses.fields(GenerationConfig)} | set(MODEL_FIELDS)
    found: dict[str, tuple[dataclasses.Field, Any]] = {}
    for _, config_cls in BACKENDS.values():
        hints = typing.get_type_hints(config_cls)
        for f in dataclasses.fields(config_cls):
            if f.name not in shared:
                found.setdefault(f.name, (f, hints[f.name]))
    return list(found.values())


def backend_config(backend: str) -> type:
    """The config class of ``backend`` ("llamacpp" | "vllm" | "transformers"); an error names the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown summarizer backend {backend!r}; choose from {sorted(BACKENDS)}")
    return BACKENDS[backend][1]


def build_summarizer(backend: str, prompt: Prompt | None = None, **config: Any) -> Summarizer:
    """Build a backend ("llamacpp" | "vllm" | "transformers") from config keyword values."""
    config_cls = backend_config(backend)
    return BACKENDS[backend][0](config_cls(**config), prompt=prompt)
