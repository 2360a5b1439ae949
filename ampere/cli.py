"""Library commands of the `ampere` CLI (no Dagster here); `orchestration.cli` adds `pipeline`."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from ampere.asr.backends import build_summarizer
from ampere.asr.cache import open_summary_cache, summarize_cached
from ampere.asr.candidates import llm_inputs
from ampere.asr.prompts import DEFAULT_PROMPT_ID, Prompt, load_prompt
from ampere.asr.quality import CLIP_DOMAINS, load_attributes, quality_table, summary_quality
from ampere.asr.summarizer import SummaryResult
from ampere.catalogue.naming import DEFAULT, Catalogue
from ampere.data.format import SPLITS, load_items
from ampere.data.synth import SynthConfig, add_products, generate
from ampere.data.synth_catalog import LOOKS, Look
from ampere.models.backbones import build_text_encoder
from ampere.serve.access import TOKENS_ENV, Access, is_loopback
from ampere.settings import PROJECT_FOLDER, Settings

QUALITY_EXPERIMENT = "ampere-summary-quality"
QUALITY_METRICS = ("attribute_recall", "attribute_precision", "raw32_recall", "raw_recall")
EXAMPLE_WORDS = 24
CACHE_HELP = "summary cache: a SQLite file or a postgresql:// URL (default: the home's workspace/summary_cache.sqlite)"


def build_parser() -> argparse.ArgumentParser:
    """The parser for the library's own commands."""
    parser = argparse.ArgumentParser(prog="ampere", description="AMPere: cross-domain product retrieval")
    parser.add_argument(
        "--home",
        type=Path,
        help=f"where the project's state lives: Dagster instance, MLflow store, workspace, dataset "
        f"(default: ${Settings.env_var('home')}, else the project folder {PROJECT_FOLDER})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="write a synthetic ROPE-like dataset (deterministic for a seed)")
    synth.add_argument("--products", type=int, default=100, help="number of products (or products to add with --add)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True, help="dataset folder")
    synth.add_argument("--add", action="store_true", help="append new products to an existing dataset")
    synth.add_argument("--look", choices=LOOKS, default="catalogue", help="how products look and are spoken of (Look.mode)")
    synth.add_argument("--knob", type=_knob, action="append", default=[], metavar="FIELD=VALUE",
                       help="another field of ampere.data.synth_catalog.Look (repeatable), e.g. coined_brand_rate=0.5")
    synth.set_defaults(handler=_synth)

    summaries = commands.add_parser("summaries", help="LLM summaries of ASR transcripts").add_subparsers(
        dest="summaries_command", required=True
    )
    quality = summaries.add_parser("quality", help="attribute recall/precision of one prompt's summaries, logged to MLflow")
    _add_summary_arguments(quality)
    quality.add_argument("--prompt", default=DEFAULT_PROMPT_ID, help="packaged prompt id")
    quality.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the home's MLflow store")
    quality.set_defaults(handler=_summaries_quality)
    compare = summaries.add_parser("compare", help="two prompts' summary quality side by side, with examples")
    _add_summary_arguments(compare)
    compare.add_argument("--prompt-a", default="summary-v2")
    compare.add_argument("--prompt-b", default=DEFAULT_PROMPT_ID)
    compare.add_argument("--examples", type=int, default=3, help="example rows to print")
    compare.set_defaults(handler=_summaries_compare)

    serve = commands.add_parser("serve", help="HTTP search over the served index: JSON API, a page, /health, /metrics")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--catalogue", help=CATALOGUE_HELP)
    serve.add_argument("--store", help="index store: a folder or an s3:// URL (default: the catalogue's, in the workspace)")
    serve.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else the home's MLflow store")
    serve.add_argument("--cache", dest="summary_cache", help=CACHE_HELP)
    serve.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted photo or clip")
    serve.add_argument(
        "--tokens-file",
        type=Path,
        help=f"API tokens as sha256 hex digests, one per line (also ${TOKENS_ENV}: comma-separated tokens); "
        "required with a --host other than loopback",
    )
    serve.add_argument("--guard-probes", action="store_true", help="require a token for /health and /metrics too")
    serve.add_argument("--max-decode-s", type=float, default=10.0, help="wall-clock seconds one query's media may take to decode")
    serve.set_defaults(handler=_serve)
    return parser


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from ampere.data.frames import DecodeLimits
    from ampere.serve.app import ServeConfig, create_app, limit_malloc_arenas
    from ampere.serve.parsing import Limits

    access = Access.load(args.tokens_file, guard_probes=args.guard_probes)
    if not access.enabled and not is_loopback(args.host):
        raise SystemExit(
            f"ampere serve: --host {args.host} exposes the server beyond this machine; give API tokens "
            f"(--tokens-file with sha256 digests, or ${TOKENS_ENV}) or bind 127.0.0.1"
        )
    config = ServeConfig(
        index_store=args.store,
        tracking_uri=args.tracking_uri,
        summary_cache=args.summary_cache,
        limits=Limits(max_upload_bytes=int(args.max_upload_mb * 2**20)),
        access=access,
        decoding=DecodeLimits(max_wall_s=args.max_decode_s),
    )
    limit_malloc_arenas()
    where = f"catalogue {args.catalogue or DEFAULT}, index store {args.store}, MLflow {args.tracking_uri}"
    print(f"AMPere search on http://{args.host}:{args.port}/ ({where})", flush=True)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")


def _add_summary_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, required=True, help="dataset folder with attributes.jsonl")
    parser.add_argument("--sample", type=int, help="summarise a random sample of N short/live items (default all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="val",
                        help="whose clips to summarise (default val: prompts are chosen on validation products)")
    parser.add_argument("--cache", dest="summary_cache", help=CACHE_HELP)
    parser.add_argument("--model", help="GGUF model path (default: the packaged SmolLM2)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp threads (default: all cores)")


def _knob(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    known = {f.name for f in fields(Look)} - {"mode"}
    if name not in known:
        raise argparse.ArgumentTypeError(f"unknown Look field {name!r}; one of {sorted(known)}")
    return name, float(value)


def _synth(args: argparse.Namespace) -> None:
    knobs = {name: int(value) if name == "max_edits" else value for name, value in args.knob}
    look = Look(mode=args.look, **knobs)
    if args.add:
        add_products(args.out, products=args.products, seed=args.seed, config=SynthConfig(look=look))
        print(f"added {args.products} products to {args.out}")
    else:
        generate(args.out, products=args.products, seed=args.seed, look=look)
        print(f"wrote {args.products} products to {args.out} ({look})")


def _clips(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All items of the dataset, and its short/live items of ``--split`` (or a seeded sample of them)."""
    items = load_items(args.dataset, check_media=False)
    clips = items[items["domain"].isin(CLIP_DOMAINS)]
    if args.split != "all":
        clips = clips[clips["split"] == args.split]
    if args.sample is not None and args.sample < len(clips):
        clips = clips.sample(n=args.sample, random_state=args.seed).sort_index()
    return items, clips


def _summarise(
    items: pd.DataFrame, clips: pd.DataFrame, prompt: Prompt, args: argparse.Namespace
) -> tuple[dict[str, SummaryResult], str, str]:
    """Summaries of the clips by item id (llama.cpp through the cache), the model id and the tagger."""
    summarizer = build_summarizer("llamacpp", prompt=prompt, model_path=args.model, n_threads=args.threads)
    cache = open_summary_cache(args.summary_cache)
    inputs, tagger = llm_inputs(prompt, items, list(clips["asr"]))
    results, stats = summarize_cached(inputs, summarizer, prompt, cache)
    cache.close()
    summarizer.close()
    print(f"{prompt.id}@{prompt.hash}: {stats.calls} LLM calls, {stats.cache_hits} cache hits, "
          f"{stats.failed} failed, {stats.seconds:.1f} s")
    return dict(zip(clips["item_id"], results, strict=True)), summarizer.model_id, tagger


def _quality_metrics(quality: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics: overall and per-domain figures and status counts (NaN figures left out)."""
    metrics = {key: quality[key] for key in (*QUALITY_METRICS, "ok", "empty", "failed")}
    for domain, figures in quality["per_domain"].items():
        metrics.update({f"{domain}_{key}": figures[key] for key in QUALITY_METRICS})
    return {key: float(value) for key, value in metrics.items() if not math.isnan(value)}


def _summaries_quality(args: argparse.Namespace) -> None:
    prompt = load_prompt(args.prompt)
    items, clips = _clips(args)
    summaries, model_id, tagger = _summarise(items, clips, prompt, args)
    quality = summary_quality(clips, summaries, load_attributes(args.dataset), build_text_encoder().readable_part)
    print(f"\nprompt {prompt.id}@{prompt.hash}, model {model_id}\n")
    print(quality_table(quality))
    params = {"prompt_id": prompt.id, "prompt_hash": prompt.hash, "model_id": model_id, "backend": "llamacpp",
              "tagger": tagger, "dataset": str(args.dataset), "split": args.split, "sample": len(clips),
              "seed": args.seed}
    run_id = _log_quality(args.tracking_uri, params, _quality_metrics(quality))
    print(f"\nlogged MLflow run {run_id} to experiment {QUALITY_EXPERIMENT!r} at {args.tracking_uri}")


def _log_quality(tracking_uri: str, params: dict[str, Any], metrics: dict[str, float]) -> str:
    """One finished run in the quality experiment (created if missing); returns its id."""
    from mlflow.entities import Metric, Param

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(QUALITY_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(QUALITY_EXPERIMENT)
    run_id = client.create_run(experiment_id, run_name=f"{params['prompt_id']}@{params['prompt_hash']}").info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(key, value, now, 0) for key, value in metrics.items()],
        params=[Param(key, str(value)) for key, value in params.items()],
    )
    client.set_terminated(run_id)
    return run_id


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _summaries_compare(args: argparse.Namespace) -> None:
    items, clips = _clips(args)
    attributes = load_attributes(args.dataset)
    prompts = [load_prompt(args.prompt_a), load_prompt(args.prompt_b)]
    runs = [_summarise(items, clips, prompt, args) for prompt in prompts]
    reads = build_text_encoder().readable_part
    qualities = [summary_quality(clips, summaries, attributes, reads) for summaries, _, _ in runs]
    print(f"\n{len(clips)} short/live items, model {runs[0][1]}\n")
    print("| figure | " + " | ".join(f"{p.id}@{p.hash}" for p in prompts) + " |")
    print("|---|---|---|")
    for scope in ("all", *CLIP_DOMAINS):
        for key in ("attribute_recall", "attribute_precision", "raw32_recall", "raw_recall", "failed"):
            figures = [q if scope == "all" else q["per_domain"][scope] for q in qualities]
            print(f"| {scope} {key} | " + " | ".join(_number(f[key]) for f in figures) + " |")
    print(f"\n| transcript (first {EXAMPLE_WORDS} words) | {prompts[0].id} | {prompts[1].id} |")
    print("|---|---|---|")
    for item in clips[clips["asr"].str.strip() != ""].head(args.examples).itertuples():
        head = " ".join(item.asr.split()[:EXAMPLE_WORDS])
        row = [head, *(summaries[item.item_id].text or summaries[item.item_id].status for summaries, _, _ in runs)]
        print("| " + " | ".join(_cell(cell) for cell in row) + " |")


CATALOGUE_HELP = "catalogue (default: the home's dataset, 'default'; `ampere pipeline` prints a dataset's catalogue)"


def with_settings(args: argparse.Namespace) -> argparse.Namespace:
    """`args.settings` resolved once (`ampere.settings.Settings`: the options, else the environment, else
    the home's defaults), and every unset option that names a setting filled from it."""
    names = [f.name for f in dataclasses.fields(Settings)]
    flags = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    args.settings = Settings.resolve(**flags)
    for name in names:
        if hasattr(args, name):
            setattr(args, name, getattr(args.settings, name))
    if getattr(args, "store", ...) is None:
        args.store = Catalogue(getattr(args, "catalogue", None) or DEFAULT).index_store(args.settings.workspace)
    return args


def main(argv: list[str] | None = None) -> None:
    """Entry point for the library commands alone (`python -m ampere.cli`)."""
    args = with_settings(build_parser().parse_args(argv))
    args.handler(args)


if __name__ == "__main__":
    main()
