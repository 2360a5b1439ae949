"""The ablation's text sources, its mean ± std table and one tiny end-to-end run."""

import numpy as np
import pandas as pd
import pytest

from ampere.asr.keywords import candidates, frequent_words, mmr
from ampere.models.backbones import build_text_encoder
from ampere.retrieval.eval import DIRECTIONS, bootstrap_r1
from ampere.training.ablation import AblationConfig, markdown, run_ablation, source_texts, summarize
from ampere.training.train import TrainConfig


def _items(products: int = 6) -> pd.DataFrame:
    rows = []
    for p in range(products):
        split = ("train", "val", "test")[p % 3]
        for domain in ("page", "short", "live"):
            rows.append(
                {
                    "item_id": f"p{p}-{domain}",
                    "product_id": f"p{p}",
                    "domain": domain,
                    "split": split,
                    "title": f"brand{p} mug" if domain == "page" else "",
                    "asr": "" if domain == "page" else f"hello family this is the brand{p} mug",
                    "summary": "" if domain == "page" else f"Product name: brand{p} mug; Features: ceramic",
                    "keywords": "" if domain == "page" else f"brand{p}, mug",
                    "phrases": "" if domain == "page" else f"brand{p} mug",
                }
            )
    return pd.DataFrame(rows)


def test_source_texts() -> None:
    items = _items(1)
    assert source_texts(items, "none") == ["", "", ""]
    assert source_texts(items, "raw")[1] == "hello family this is the brand0 mug"
    assert source_texts(items, "keywords") == ["brand0 mug", "brand0, mug", "brand0, mug"]
    assert source_texts(items, "phrases") == ["brand0 mug", "brand0 mug", "brand0 mug"]
    assert source_texts(items, "text-only") == source_texts(items, "summary")
    assert source_texts(items, "summary")[0] == "brand0 mug"


def test_summarize_mean_and_sample_std() -> None:
    results = pd.DataFrame(
        [
            {"source": "a", "seed": s, "val_mR1": v + 1, "mR1": v, **{f"{d}/R@1": v for d in DIRECTIONS}}
            for s, v in enumerate([10.0, 20.0, 30.0])
        ]
    )
    table = summarize(results)
    assert table.loc[0, "mR1 mean"] == pytest.approx(20.0)
    assert table.loc[0, "mR1 std"] == pytest.approx(10.0)
    assert "| a | 21.0 ± 10.0 | 20.0 ± 10.0 |" in markdown(table)


def test_bootstrap_interval_over_products() -> None:
    """Two seeds on 50 products: the interval holds the seed-mean R@1 and narrows with agreement."""
    rng = np.random.default_rng(0)
    products = [f"p{i}" for i in range(50)]

    def run(rate: float) -> dict[str, pd.DataFrame]:
        return {d: pd.DataFrame({"product_id": products, "hit": rng.random(50) < rate}) for d in DIRECTIONS}

    runs = [run(0.4), run(0.6)]
    point = np.mean([np.mean([r[d]["hit"].mean() for d in DIRECTIONS]) for r in runs]) * 100
    interval = bootstrap_r1(runs, resamples=500)
    low, high = interval["mR1"]
    assert low < point < high and high - low < 20
    every = [{d: pd.DataFrame({"product_id": products, "hit": [True] * 50}) for d in DIRECTIONS}]
    assert bootstrap_r1(every, resamples=50)["P2S"] == (100.0, 100.0)


def test_keyword_stop_words_are_published_or_learned_from_training_products() -> None:
    assert candidates("follow the anchor the Zephyr power bank 20000") == [
        "follow",
        "anchor",
        "zephyr",
        "zephyr power",
        "power",
        "power bank",
        "bank",
    ]
    by_product = {"a": ["follow the anchor"], "b": ["Follow the anchor, zephyr"], "c": ["mug"], "d": ["bank"]}
    assert frequent_words(by_product, max_df=0.25) == {"follow", "the", "anchor"}
    assert candidates("follow the anchor the Zephyr power bank", frequent_words(by_product, 0.25)) == [
        "zephyr",
        "zephyr power",
        "power",
        "power bank",
        "bank",
    ]
    doc = np.array([1.0, 0.0])
    phrases = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]])
    phrases /= np.linalg.norm(phrases, axis=1, keepdims=True)
    assert mmr(doc, phrases, top_k=2, diversity=0.0) == [0, 1]
    assert mmr(doc, phrases, top_k=2, diversity=0.9) == [0, 2]


def test_tiny_ablation_runs_every_cell() -> None:
    items = _items()
    frames = np.random.default_rng(0).normal(size=(len(items), 8, 16)).astype(np.float32)
    config = AblationConfig(sources=("none", "text-only"), seeds=(0, 1), train=TrainConfig(steps=2, batch_size=2, eval_every=1))
    seen = []
    results, hits = run_ablation(items, frames, build_text_encoder(), config, on_result=seen.append)
    assert list(zip(results["source"], results["seed"], strict=True)) == [
        ("none", 0),
        ("none", 1),
        ("text-only", 0),
        ("text-only", 1),
    ]
    assert len(seen) == 4
    assert results["mR1"].between(0, 100).all() and results["val_mR1"].between(0, 100).all()
    assert [len(h) for h in hits["test"].values()] == [2, 2] and set(hits["test"]["none"][0]["P2S"]["product_id"]) == {"p2", "p5"}
    assert set(hits["val"]["none"][0]["P2S"]["product_id"]) == {"p1", "p4"}
    table = summarize(results, hits)
    assert (table["mR1 low"] <= table["mR1 high"]).all() and "[" in markdown(table)
    assert (table["val_mR1 low"] <= table["val_mR1 high"]).all()
    # the validation hits of the chosen checkpoint give back its validation mR1
    from_hits = [100 * np.mean([h[d]["hit"].mean() for d in DIRECTIONS]) for h in hits["val"]["none"]]
    assert np.allclose(from_hits, results.loc[results["source"] == "none", "val_mR1"])


def test_raw_ends_reads_the_head_and_the_tail_of_a_long_transcript() -> None:
    """The product words of a raw transcript often come after the 32 tokens the encoder reads: the
    `raw-ends` source keeps its first and last 16 tokens, which the encoder then reads whole."""
    from ampere.models.backbones import build_text_encoder

    encoder = build_text_encoder()
    chatter = " ".join(["follow the anchor link three in the cart"] * 8)
    items = _items(1)
    items.loc[items["domain"] != "page", "asr"] = f"hello family {chatter} this is the zorbix travel mug"
    window = source_texts(items, "raw-ends", encoder)
    assert window[0] == source_texts(items, "raw")[0]  # page: its title
    assert window[1].startswith("hello family") and window[1].endswith("zorbix travel mug")
    assert len(encoder.tokenizer.tokenize(window[1])) <= encoder.max_tokens
    assert "zorbix" not in encoder.readable_part(items["asr"].iloc[1])  # what `raw` reads misses it
    short = "this is the zorbix travel mug"
    assert encoder.readable_ends(short) == short
