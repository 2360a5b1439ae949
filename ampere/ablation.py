"""The text-source ablation: what summarised ASR buys over no text, raw ASR and keywords.

On the same items, split and frozen-backbone frame features, the tower is trained and evaluated
once per (text source, seed):

- `none`: visual-only (every text empty and masked);
- `raw`: page title, raw ASR transcript for short/live;
- `keywords`: page title, KeyBERT-style MMR keywords of the transcript (non-LLM denoiser);
- `summary`: page title, LLM summary for short/live;
- `text-only`: the `summary` texts with every frame feature zeroed (text alone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ampere.eval import DIRECTIONS, evaluate
from ampere.features import ItemFeatures, text_features, text_inputs
from ampere.models.tower import TowerConfig
from ampere.train import TrainConfig, embed, train_tower

SOURCES = ("none", "raw", "keywords", "summary", "text-only")
R1_KEYS = [f"{d}/R@1" for d in DIRECTIONS]


@dataclass
class AblationConfig:
    """Which sources and seeds; training settings shared by every cell."""

    sources: tuple[str, ...] = SOURCES
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainConfig = field(default_factory=TrainConfig)


def source_texts(items: pd.DataFrame, source: str) -> list[str]:
    """Texts of every item for one source; `items` has domain, title, asr, summary, keywords."""
    domains, titles, asrs = list(items["domain"]), list(items["title"]), list(items["asr"])
    if source == "keywords":
        return text_inputs(domains, titles, asrs, list(items["keywords"]), "summary")
    if source == "text-only":
        return text_inputs(domains, titles, asrs, list(items["summary"]), "summary")
    return text_inputs(domains, titles, asrs, list(items["summary"]), source)


def run_ablation(
    items: pd.DataFrame,
    frames: np.ndarray,
    text_encoder,  # noqa: ANN001 (any TextEncoder)
    config: AblationConfig,
    on_result: Callable[[dict], None] | None = None,
) -> pd.DataFrame:
    """One row per (source, seed): mR1 and the six R@1 on the test split."""
    rows = []
    for source in config.sources:
        states, mask = text_features(source_texts(items, source), text_encoder)
        features = ItemFeatures(
            item_ids=list(items["item_id"]),
            product_ids=list(items["product_id"]),
            domains=list(items["domain"]),
            splits=list(items["split"]),
            frames=np.zeros_like(frames) if source == "text-only" else frames,
            text=states,
            text_mask=mask,
        )
        tower_cfg = TowerConfig(visual_dim=frames.shape[-1], text_dim=states.shape[-1], text_tokens=states.shape[1])
        for seed in config.seeds:
            train_cfg = TrainConfig(**{**config.train.to_dict(), "seed": seed})
            tower, history = train_tower(features, tower_cfg, train_cfg)
            metrics = evaluate(embed(tower, features), features.product_ids, features.domains, features.splits)
            row = {"source": source, "seed": seed, "mR1": metrics["mR1"], **{k: metrics[k] for k in R1_KEYS}}
            row["final_loss"] = history[-1]["loss"] if history else float("nan")
            rows.append(row)
            if on_result is not None:
                on_result(row)
    return pd.DataFrame(rows)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (over seeds, ddof=1) of mR1 and the six R@1 per source."""
    grouped = results.groupby("source", sort=False)[["mR1", *R1_KEYS]]
    mean, std = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
    table = pd.DataFrame(index=mean.index)
    for column in ["mR1", *R1_KEYS]:
        table[f"{column} mean"] = mean[column]
        table[f"{column} std"] = std[column]
    table["seeds"] = grouped.size()
    return table.reset_index()


def markdown(summary: pd.DataFrame) -> str:
    """`mean ± std` Markdown table, one row per source."""
    header = "| source | mR1 | " + " | ".join(d for d in DIRECTIONS) + " | seeds |"
    lines = [header, "|---|" + "---:|" * (len(DIRECTIONS) + 2)]
    for values in summary.to_dict("records"):
        cells = [f"{values['mR1 mean']:.1f} ± {values['mR1 std']:.1f}"]
        cells += [f"{values[f'{d}/R@1 mean']:.1f} ± {values[f'{d}/R@1 std']:.1f}" for d in DIRECTIONS]
        lines.append(f"| {values['source']} | " + " | ".join(cells) + f" | {values['seeds']} |")
    return "\n".join(lines)
