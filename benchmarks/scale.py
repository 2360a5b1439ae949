"""How each stage's cost grows with the data: 1k, 10k and 100k items, seconds per item and memory.

    .venv/bin/python benchmarks/scale.py                      # 1k, 10k, 100k items (about 15 min on 2 cores)
    .venv/bin/python benchmarks/scale.py --sizes 1000 10000

Each size is a generated dataset in the project's format (one product = a page image and a short
and a live clip as one-frame folders, 24x24 pixels to keep generation fast; titles and transcripts
from a 5,000-word vocabulary). Per stage, what the pipeline's own code costs there:

- validation: `read_items` (every record and every media file decoded);
- summaries: fitting the title tagger on the training products (`llm_reader`); cache hits
  (`SummaryCache.get_many` over every transcript, after storing them); cache misses: the packaged
  LLM (llama.cpp, SmolLM2-135M) timed on a sample of transcripts (`--llm-sample`);
- features: `visual_features` (ONNX Runtime EfficientNet-Lite0, decoding included) and
  `text_features` (MiniLM) timed on a sample (`--feature-sample`); features' bytes per item;
- training: `train_tower`'s samples/s at the default batch (32 products), so one epoch over the
  training items; validation time of one evaluation over the validation items (`embed`, `evaluate`);
- embeddings: `embed` over every item; index build: `build_indexes` (the default config, recall
  gate included) over every item's vector; evaluation: `evaluate` on the test and val splits.

Stages timed on a sample cost the same per item at every size (their work is per item). The table
gives seconds per item at each size and the total at the largest; the closing lines name the stage
that passes an hour first, by linear extrapolation of the measured per-item figures, and the
features' size on disk (memory per stage: ``benchmarks/memory.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu import loop_samples_per_s  # noqa: E402  (benchmarks/ is this script's folder)

from ampere.asr.backends import build_summarizer  # noqa: E402
from ampere.asr.cache import cache_key, open_summary_cache  # noqa: E402
from ampere.asr.candidates import llm_reader  # noqa: E402
from ampere.asr.prompts import DEFAULT_PROMPT_ID, load_prompt  # noqa: E402
from ampere.asr.summarizer import SummaryResult  # noqa: E402
from ampere.data.format import read_items  # noqa: E402
from ampere.device import resolve_device  # noqa: E402
from ampere.models.backbones import build_frame_encoder, build_text_encoder  # noqa: E402
from ampere.models.features import ItemFeatures, text_features, visual_features  # noqa: E402
from ampere.models.tower import AmpereTower, TowerConfig  # noqa: E402
from ampere.retrieval.eval import evaluate  # noqa: E402
from ampere.retrieval.index import build_indexes  # noqa: E402
from ampere.training.evaluator import embed  # noqa: E402

WORDS = [f"w{i:04d}" for i in range(5000)]


def tiny_dataset(folder: Path, items: int, seed: int = 0, first: int = 0) -> Path:
    """``items`` // 3 products (numbered from ``first``), each a page (PNG), a short and a live clip
    (one-frame folders), with text."""
    rng = np.random.default_rng(seed)
    (folder / "media").mkdir(parents=True)
    rows = []
    for p in range(first, first + items // 3):
        pid = f"p{p:07d}"
        words = list(rng.choice(WORDS, 6))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        Image.new("RGB", (24, 24), colour).save(folder / "media" / f"{pid}.png")
        for domain in ("short", "live"):
            (folder / "media" / f"{pid}-{domain}").mkdir()
            Image.new("RGB", (24, 24), colour[::-1]).save(folder / "media" / f"{pid}-{domain}" / "000.jpg")
        said = [" ".join([*rng.choice(WORDS, 20), *words[:4], *rng.choice(WORDS, 20)]) for _ in range(2)]
        page = {"item_id": f"{pid}-P", "product_id": pid, "domain": "page", "title": " ".join(words), "asr": ""}
        rows.append({**page, "media": f"media/{pid}.png"})
        for domain, code, transcript in (("short", "S", said[0]), ("live", "L", said[1])):
            clip = {"item_id": f"{pid}-{code}", "product_id": pid, "domain": domain, "title": "", "asr": transcript}
            rows.append({**clip, "media": f"media/{pid}-{domain}"})
    pd.DataFrame(rows).to_json(folder / "items.jsonl", orient="records", lines=True)
    return folder


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def per_item_constants(sample_items: pd.DataFrame, llm_sample: int, feature_sample: int) -> dict[str, float]:
    """Seconds per item of the stages timed on a sample (their work is per item, whatever the size)."""
    prompt = load_prompt(DEFAULT_PROMPT_ID)
    clips = sample_items[sample_items["domain"] != "page"]
    inputs = llm_reader(prompt, sample_items)(list(clips["asr"]))[:llm_sample]
    engine = build_summarizer("llamacpp", prompt=prompt)
    engine.summarize(inputs[:1])  # warm-up
    llm, _ = timed(lambda: engine.summarize(inputs))
    rows = sample_items.head(feature_sample)
    paths = list(rows["media_path"])
    frame_encoder, text_encoder = build_frame_encoder(), build_text_encoder()
    visual_features(paths[:8], frame_encoder, progress=False)  # warm-up (the ONNX export is cached)
    visual, _ = timed(lambda: visual_features(paths, frame_encoder, progress=False))
    texts = [title or asr for title, asr in zip(rows["title"], rows["asr"], strict=True)]
    text, _ = timed(lambda: text_features(texts, text_encoder, progress=False))
    tower = TowerConfig()
    samples_per_s = loop_samples_per_s(tower, 32, resolve_device("cpu"), steps=4)
    return {
        "llm per transcript": llm / len(inputs),
        "frame features": visual / len(rows),
        "text features": text / len(rows),
        "training (one epoch)": 1.0 / samples_per_s,
    }


def measure(n: int, folder: Path, constants: dict[str, float]) -> dict[str, float]:
    """Seconds per item of every stage at ``n`` items (sampled stages: the constants)."""
    dataset = tiny_dataset(folder / f"data-{n}", n)
    validation, (items, problems) = timed(lambda: read_items(dataset))
    assert not problems, problems[:3]
    prompt = load_prompt(DEFAULT_PROMPT_ID)
    tagger, reader = timed(lambda: llm_reader(prompt, items))
    clips = items[items["domain"] != "page"]
    keys = [cache_key(text, prompt, "model", {}) for text in reader(list(clips["asr"]))]
    with contextlib.closing(open_summary_cache(folder / f"cache-{n}.sqlite")) as cache:
        result = SummaryResult("Product name: x; Features: y", "ok", None, "x", ["y"], 30, 10, 1)
        stored, _ = timed(lambda: cache.put_many([(key, result) for key in keys], prompt.hash, "model"))
        hits, found = timed(lambda: cache.get_many(keys))
        assert len(found) == len(set(keys))
    rng = np.random.default_rng(0)
    tower_cfg = TowerConfig()
    tower = AmpereTower(tower_cfg).eval()
    embed_n = 3 * (min(n, 3000) // 3)
    sample = ItemFeatures(
        [f"i{i}" for i in range(embed_n)], [f"p{i // 3}" for i in range(embed_n)], ["page", "short", "live"] * (embed_n // 3),
        ["train"] * embed_n, rng.uniform(0, 6, (embed_n, tower_cfg.num_frames, tower_cfg.visual_dim)).astype(np.float32),
        rng.normal(size=(embed_n, tower_cfg.text_tokens, tower_cfg.text_dim)).astype(np.float16),
        np.ones((embed_n, tower_cfg.text_tokens), bool),
    )  # fmt: skip
    embedding, _ = timed(lambda: embed(tower, sample))
    vectors = rng.normal(size=(len(items), tower_cfg.out_dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    frame = items[["item_id", "product_id", "domain", "split"]].assign(embedding=list(vectors))
    indexing, _ = timed(lambda: build_indexes(frame, folder / f"index-{n}"))
    columns = list(items["product_id"]), list(items["domain"]), list(items["split"])
    evaluation, _ = timed(lambda: [evaluate(vectors, *columns, split=split) for split in ("test", "val")])
    transcripts = len(clips)
    return {
        "validation (read_items)": validation / n,
        "summaries: tagger fit": tagger / n,
        "summaries: cache hits": (stored + hits) / n,
        "summaries: LLM (misses)": constants["llm per transcript"] * transcripts / n,
        "frame features": constants["frame features"],
        "text features": constants["text features"],
        "training, one epoch": constants["training (one epoch)"] * (items["split"] == "train").sum() / n,
        "embeddings": embedding / embed_n,
        "index build": indexing / n,
        "evaluation": evaluation / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--llm-sample", type=int, default=16)
    parser.add_argument("--feature-sample", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ampere-scale-") as tmp:
        folder = Path(tmp)
        sample = tiny_dataset(folder / "sample", 300, seed=1)
        items, _ = read_items(sample)
        constants = per_item_constants(items, args.llm_sample, args.feature_sample)
        table = {n: measure(n, folder, constants) for n in args.sizes}
    largest = max(args.sizes)
    print(f"\ncost per item in ms (this machine: {os.cpu_count()} cores), total at {largest:,} items")
    print("\n| stage | " + " | ".join(f"{n:,} items" for n in args.sizes) + f" | total at {largest:,} |")
    print("|---|" + "---:|" * (len(args.sizes) + 1))
    for stage in table[largest]:
        cells = " | ".join(f"{1000 * table[n][stage]:.3f}" for n in args.sizes)
        print(f"| {stage} | {cells} | {table[largest][stage] * largest / 60:.1f} min |")
    hour = {stage: 3600 / cost for stage, cost in table[largest].items() if cost > 0}
    first = min(hour, key=hour.get)
    print(f"\nfirst past one hour on this machine: {first}, at about {hour[first]:,.0f} items "
          f"({table[largest][first] * 1000:.2f} ms per item); then "
          + ", ".join(f"{s} at {v:,.0f}" for s, v in sorted(hour.items(), key=lambda kv: kv[1])[1:4]))  # fmt: skip
    tower = TowerConfig()
    feature_bytes = tower.num_frames * tower.visual_dim * 4 + tower.text_tokens * tower.text_dim * 2 + tower.text_tokens
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    print("frame features here: one distinct 24x24 frame per item (identical frames are encoded once); a clip of 8 "
          "distinct frames costs up to 8 times the frame-features figure")
    print(f"features: {feature_bytes / 1024:.0f} KiB per item on disk (8 x 1280 float32 frames, 33 x 384 float16 "
          f"token states), {feature_bytes * largest / 2**30:.1f} GiB at {largest:,} items, read a batch at a time "
          f"(training holds them resident only up to resident_features_gib; this machine has {ram / 2**30:.0f} GiB): "
          "peak memory per stage is benchmarks/memory.py's")  # fmt: skip


if __name__ == "__main__":
    main()
