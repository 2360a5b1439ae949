"""What each way of denoising ASR keeps, measured on one split (validation by default):
attribute recall and precision against the dataset's ``attributes.jsonl`` and seconds per
transcript, for the raw transcript (what the encoder reads of it, and all of it), the keyword
extractor, the title tagger's phrases alone, and the LLM under each prompt given.

Keywords and the tagger learn from the training products only. Every LLM figure is measured
with a fresh, empty cache, so each non-empty input costs one LLM call. Usage:

    python benchmarks/summary_sources.py --dataset data [--prompts summary-v1 summary-v2 summary-v3]
"""

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from ampere.asr.backends import build_summarizer
from ampere.asr.cache import open_summary_cache, summarize_cached
from ampere.asr.candidates import TaggerConfig, TitleTagger, llm_inputs, materials
from ampere.asr.keywords import KeywordExtractor
from ampere.asr.prompts import load_prompt
from ampere.asr.quality import CLIP_DOMAINS, load_attributes, summary_quality
from ampere.data.format import SPLITS, load_items
from ampere.models.backbones import build_text_encoder
from ampere.settings import Settings


def _row(name: str, quality: dict, seconds: float | None, recall_key: str = "attribute_recall") -> dict:
    scored = quality["scored"]
    return {
        "text": name,
        "attribute recall": round(quality[recall_key], 3),
        "attribute precision": "-" if recall_key != "attribute_recall" else round(quality["attribute_precision"], 3),
        "failed": f"{quality['failed']}/{scored} ({100 * quality['failed'] / max(scored, 1):.1f} %)",
        "s / transcript": "-" if seconds is None else f"{seconds:.3f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Settings.resolve().dataset)
    parser.add_argument("--split", choices=SPLITS, default="val")
    parser.add_argument("--prompts", nargs="*", default=["summary-v1", "summary-v2", "summary-v3"])
    args = parser.parse_args()

    items = load_items(args.dataset, check_media=False)
    clips = items[items["domain"].isin(CLIP_DOMAINS) & (items["split"] == args.split)]
    spoken = clips[clips["asr"].str.strip() != ""]
    attributes = load_attributes(args.dataset)
    encoder = build_text_encoder()

    def quality(texts: list) -> dict:
        return summary_quality(clips, dict(zip(clips["item_id"], texts, strict=True)), attributes, encoder.readable_part)

    raw = quality(list(clips["asr"]))
    rows = [_row("raw, first 32 tokens (what the encoder reads)", raw, None, "raw32_recall"),
            _row("raw, whole transcript", raw, None, "raw_recall")]

    train = items[(items["split"] == "train") & items["domain"].isin(CLIP_DOMAINS)]
    extractor = KeywordExtractor(encoder, train.groupby("product_id")["asr"].apply(list).to_dict())
    started = time.perf_counter()
    keywords = [extractor.extract(t) if t.strip() else "" for t in clips["asr"]]
    rows.append(_row("keywords (MMR over MiniLM)", quality(keywords), (time.perf_counter() - started) / len(spoken)))

    for config, how in ((TaggerConfig(repair=False), "words as heard"), (TaggerConfig(), "misheard words respelled")):
        started = time.perf_counter()
        tagger = TitleTagger.fit(items, config)
        phrases = materials(tagger, clips["asr"], separator=", ")
        seconds = (time.perf_counter() - started) / len(spoken)
        label = f"title-tagger phrases, {how}, no LLM (title-tagger@{tagger.fingerprint()})"
        rows.append(_row(label, quality(phrases), seconds))

    for prompt_id in args.prompts:
        prompt = load_prompt(prompt_id)
        summarizer = build_summarizer("llamacpp", prompt=prompt)
        summarizer.summarize(["warm-up: load the model before timing"])
        with tempfile.TemporaryDirectory() as folder:
            cache = open_summary_cache(Path(folder) / "cache.sqlite")
            started = time.perf_counter()
            inputs, _ = llm_inputs(prompt, items, list(clips["asr"]))
            results, stats = summarize_cached(inputs, summarizer, prompt, cache)
            seconds = (time.perf_counter() - started) / len(spoken)
            cache.close()
        summarizer.close()
        label = f"LLM {summarizer.model_id.split('@')[0]}, {prompt.id} (input: {prompt.input})"
        rows.append(_row(label, quality(results), seconds))
        print(f"{prompt.id}: {stats.calls} LLM calls, {stats.failed} failed, {stats.seconds:.1f} s", flush=True)

    print(f"\n{len(clips)} {args.split} clips ({len(spoken)} with a transcript) of {args.dataset}\n")
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
