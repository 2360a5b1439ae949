"""The ablation's text sources, its mean ± std table and one tiny end-to-end run."""

import numpy as np
import pandas as pd
import pytest

from ampere.ablation import AblationConfig, markdown, run_ablation, source_texts, summarize
from ampere.asr.keywords import candidates, mmr
from ampere.models.backbones import build_text_encoder
from ampere.train import TrainConfig


def _items(products: int = 4) -> pd.DataFrame:
    rows = []
    for p in range(products):
        split = "train" if p % 2 == 0 else "test"
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
                }
            )
    return pd.DataFrame(rows)


def test_source_texts() -> None:
    items = _items(1)
    assert source_texts(items, "none") == ["", "", ""]
    assert source_texts(items, "raw")[1] == "hello family this is the brand0 mug"
    assert source_texts(items, "keywords") == ["brand0 mug", "brand0, mug", "brand0, mug"]
    assert source_texts(items, "text-only") == source_texts(items, "summary")
    assert source_texts(items, "summary")[0] == "brand0 mug"


def test_summarize_mean_and_sample_std() -> None:
    results = pd.DataFrame(
        [
            {"source": "a", "seed": s, "mR1": v, **{f"{d}/R@1": v for d in ("P2S", "P2L", "S2P", "S2L", "L2P", "L2S")}}
            for s, v in enumerate([10.0, 20.0, 30.0])
        ]
    )
    table = summarize(results)
    assert table.loc[0, "mR1 mean"] == pytest.approx(20.0)
    assert table.loc[0, "mR1 std"] == pytest.approx(10.0)
    assert "| a | 20.0 ± 10.0 |" in markdown(table)


def test_keyword_candidates_and_mmr() -> None:
    assert candidates("follow the anchor the Zephyr power bank 20000") == [
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
    config = AblationConfig(sources=("none", "text-only"), seeds=(0, 1), train=TrainConfig(epochs=1, batch_size=2))
    seen = []
    results = run_ablation(items, frames, build_text_encoder(), config, on_result=seen.append)
    assert list(zip(results["source"], results["seed"], strict=True)) == [
        ("none", 0),
        ("none", 1),
        ("text-only", 0),
        ("text-only", 1),
    ]
    assert len(seen) == 4
    assert results["mR1"].between(0, 100).all()
