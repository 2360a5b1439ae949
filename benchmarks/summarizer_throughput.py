"""Throughput of the pipeline's summarizer against the bare inference engine, on one set of transcripts.

Both sides get the same transcripts (the first N non-empty short/live transcripts of the dataset),
the same model, engine settings, prompt messages (``Prompt.messages`` of the cleaned transcript),
response format, max_tokens, temperature and seed. The bare side calls the engine directly in a
loop; the pipeline side calls ``summarize_cached`` with a fresh, empty cache, so every transcript
costs one request (plus any retries of invalid answers, which the pipeline really pays; the bare
side keeps its invalid answers). ``--max-retries 0`` compares equal work: one request per
transcript on both sides, so the ratio is the pipeline's own overhead.

Each side is warmed up with one request first. Each round runs the transcripts in chunks (default
8 for llama.cpp; vLLM gets the whole set as one batch), every chunk on both sides, alternating
which side goes first, so that drifting machine load hits both sides alike.

  python benchmarks/summarizer_throughput.py --dataset data --transcripts 64 --rounds 2
  python benchmarks/summarizer_throughput.py --threads 1   # on a loaded machine: less contention
  python benchmarks/summarizer_throughput.py --backend vllm --model /models/Qwen2.5-1.5B-Instruct

The vLLM mode (GPU hosts) compares one batched ``LLM.chat`` call with ``VllmSummarizer``; both
engines live on the GPU at once, so each gets ``--gpu-memory-utilization`` (default 0.4).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ampere.asr.backends import LlamaCppConfig, LlamaCppSummarizer, VllmConfig, VllmSummarizer
from ampere.asr.backends.llamacpp import llamacpp_request, llamacpp_server, packaged_gguf_path
from ampere.asr.backends.vllm import vllm_engine, vllm_sampling_params
from ampere.asr.cache import open_summary_cache, summarize_cached
from ampere.asr.candidates import llm_inputs
from ampere.asr.prompts import DEFAULT_PROMPT_ID, Prompt, answer_schema, load_prompt
from ampere.asr.text import clean_transcript
from ampere.data.format import load_items
from ampere.settings import Settings


@dataclass(frozen=True)
class Measurement:
    """Time, transcripts and generated tokens summed over timed calls of one side."""

    seconds: float
    transcripts: int
    tokens_out: int


# A runner summarises every transcript once and returns (seconds, generated tokens).
Runner = Callable[[list[str]], tuple[float, int]]


def first_transcripts(dataset: Path, count: int, prompt: Prompt) -> list[str]:
    """What ``prompt`` reads of the first ``count`` non-empty short/live transcripts of the
    dataset, in file order (a "candidates" prompt: the title tagger's phrases)."""
    items = load_items(dataset, check_media=False)
    clips = items[items["domain"].isin(["short", "live"]) & (items["asr"].str.strip() != "")]
    inputs, _ = llm_inputs(prompt, items, list(clips["asr"]))
    transcripts = [text for text in inputs if text][:count]
    if len(transcripts) < count:
        raise SystemExit(f"{dataset} has only {len(transcripts)} non-empty transcripts")
    return transcripts


def pipeline_runner(summarizer: Any, prompt: Prompt, workdir: Path) -> Runner:
    """``summarize_cached`` with a new empty cache per call (every transcript is an LLM call)."""
    passes = 0

    def run(transcripts: list[str]) -> tuple[float, int]:
        nonlocal passes
        passes += 1
        cache = open_summary_cache(workdir / f"cache-{passes}.sqlite")
        start = time.perf_counter()
        _, stats = summarize_cached(transcripts, summarizer, prompt, cache)
        seconds = time.perf_counter() - start
        cache.close()
        if stats.calls != len(set(transcripts)):
            raise RuntimeError(f"expected {len(set(transcripts))} LLM calls, got {stats.calls}")
        return seconds, stats.tokens_out

    return run


def llamacpp_bare_runner(config: LlamaCppConfig, model_path: str, prompt: Prompt) -> Runner:
    """xllamacpp's server engine called directly, one request at a time (first attempts only)."""
    server = llamacpp_server(config, model_path)

    def run(transcripts: list[str]) -> tuple[float, int]:
        requests = [
            llamacpp_request(prompt, clean_transcript(t, config.max_transcript_chars), config, 0) for t in transcripts
        ]
        tokens = 0
        start = time.perf_counter()
        for request in requests:
            tokens += server.handle_chat_completions(request)["usage"]["completion_tokens"]
        return time.perf_counter() - start, tokens

    return run


def vllm_bare_runner(config: VllmConfig, prompt: Prompt) -> Runner:
    """One batched ``vllm.LLM.chat`` call over all transcripts."""
    from vllm import sampling_params as sampling_module

    llm = vllm_engine(config)

    def run(transcripts: list[str]) -> tuple[float, int]:
        cleaned = [clean_transcript(t, config.max_transcript_chars) for t in transcripts]
        conversations = [prompt.messages(t) for t in cleaned]
        params = [vllm_sampling_params(sampling_module, config, 0, answer_schema(prompt, t)) for t in cleaned]
        start = time.perf_counter()
        outputs = llm.chat(conversations, sampling_params=params, use_tqdm=False)
        seconds = time.perf_counter() - start
        return seconds, sum(len(o.outputs[0].token_ids) for o in outputs)

    return run


def measure(runners: dict[str, Runner], transcripts: list[str], rounds: int, chunk: int) -> dict[str, Measurement]:
    """Warm each runner up with one transcript, then time ``rounds`` passes over the transcripts.

    A pass runs the transcripts in chunks of ``chunk``, each chunk on every side in turn, the order
    alternating from chunk to chunk, so a change in machine load hits both sides alike.
    """
    for runner in runners.values():
        runner(transcripts[:1])
    names = list(runners)
    totals = {name: Measurement(0.0, 0, 0) for name in names}
    for r in range(rounds):
        passes = {name: Measurement(0.0, 0, 0) for name in names}
        for c, start in enumerate(range(0, len(transcripts), chunk)):
            part = transcripts[start : start + chunk]
            for name in names if (r + c) % 2 == 0 else names[::-1]:
                seconds, tokens = runners[name](part)
                m = passes[name]
                passes[name] = Measurement(m.seconds + seconds, m.transcripts + len(part), m.tokens_out + tokens)
        for name, m in passes.items():
            print(f"round {r + 1} {name:>8}: {m.transcripts / m.seconds:6.2f} transcripts/s, "
                  f"{m.tokens_out / m.seconds:7.1f} tokens/s ({m.seconds:.1f} s)", flush=True)
            t = totals[name]
            totals[name] = Measurement(t.seconds + m.seconds, t.transcripts + m.transcripts,
                                       t.tokens_out + m.tokens_out)
    return totals


def report(totals: dict[str, Measurement]) -> float:
    """Print the totals as a Markdown table; return the pipeline/bare transcripts-per-second ratio."""
    print("\n| side | transcripts/s | generated tokens/s | seconds |")
    print("|---|---|---|---|")
    for name, m in totals.items():
        print(f"| {name} | {m.transcripts / m.seconds:.2f} | {m.tokens_out / m.seconds:.1f} | "
              f"{m.seconds:.1f} |")
    rate = {name: m.transcripts / m.seconds for name, m in totals.items()}
    ratio = rate["pipeline"] / rate["bare"]
    print(f"\nratio pipeline/bare (transcripts/s): {ratio:.3f} (goal >= 0.9)")
    return ratio


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, build both sides, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=Settings.resolve().dataset)
    parser.add_argument("--transcripts", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="timed passes per side")
    parser.add_argument("--chunk", type=int, help="transcripts per alternation (default: 8 llamacpp, all vllm)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT_ID)
    parser.add_argument("--backend", choices=["llamacpp", "vllm"], default="llamacpp")
    parser.add_argument("--model", help="GGUF path (llamacpp; default packaged SmolLM2) or vLLM model")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llamacpp threads")
    parser.add_argument("--max-retries", type=int, default=2, help="pipeline retries of invalid answers (default: pipeline's)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.4, help="vLLM, per engine")
    args = parser.parse_args(argv)

    prompt = load_prompt(args.prompt)
    transcripts = first_transcripts(args.dataset, args.transcripts, prompt)
    with tempfile.TemporaryDirectory() as workdir:
        if args.backend == "llamacpp":
            config = LlamaCppConfig(model_path=args.model, n_threads=args.threads, max_retries=args.max_retries)
            summarizer = LlamaCppSummarizer(config, prompt=prompt)
            bare = llamacpp_bare_runner(config, args.model or packaged_gguf_path(), prompt)
        else:
            if not args.model:
                parser.error("--backend vllm needs --model")
            config = VllmConfig(
                model=args.model, gpu_memory_utilization=args.gpu_memory_utilization, max_retries=args.max_retries
            )
            summarizer = VllmSummarizer(config, prompt=prompt)
            bare = vllm_bare_runner(config, prompt)
        print(f"{len(transcripts)} transcripts, {args.backend}, model {summarizer.model_id}, "
              f"prompt {prompt.id}@{prompt.hash}")
        runners = {"bare": bare, "pipeline": pipeline_runner(summarizer, prompt, Path(workdir))}
        chunk = args.chunk or (8 if args.backend == "llamacpp" else len(transcripts))
        report(measure(runners, transcripts, args.rounds, chunk))


if __name__ == "__main__":
    main()
