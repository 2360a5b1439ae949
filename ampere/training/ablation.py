"""The text-source ablation: what summarised ASR buys over no text, raw ASR and keywords.

On the same items, split and frozen-backbone frame features, the tower is trained on the train
split, its checkpoint chosen on the validation split, and reported on the test split, once per
(text source, seed):

- `none`: visual-only (every text empty and masked);
- `raw`: page title, raw ASR transcript for short/live (the encoder reads its first 32 tokens);
- `raw-ends`: page title, a head-and-tail window of the raw transcript that the encoder reads
  whole (its first and last 16 tokens): the fairer raw baseline when product words come late;
- `keywords`: page title, KeyBERT-style MMR keywords of the transcript (non-LLM denoiser);
- `phrases`: page title, the title tagger's candidate phrases of the transcript (what the
  default prompt gives the LLM, without the LLM);
- `summary`: page title, LLM summary for short/live;
- `text-only`: the `summary` texts with every frame feature zeroed (text alone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ampere.models.features import ItemFeatures, text_features, text_inputs
from ampere.retrieval.eval import DIRECTIONS, bootstrap_r1, direction_hits, evaluate
from ampere.training.evaluator import embed
from ampere.training.train import TRAINING_SPLITS, TrainConfig, tower_config, train_tower

SOURCES = ("none", "raw", "raw-ends", "keywords", "phrases", "summary", "text-only")
R1_KEYS = [f"{d}/R@1" for d in DIRECTIONS]
# split -> source -> one ``direction_hits`` per seed
Hits = dict[str, dict[str, list[dict[str, pd.DataFrame]]]]


@dataclass
class AblationConfig:
    """Which sources and seeds; training settings shared by every cell."""

    sources: tuple[str, ...] = SOURCES
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainConfig = field(default_factory=TrainConfig)


def source_texts(items: pd.DataFrame, source: str, text_encoder=None) -> list[str]:  # noqa: ANN001 (any TextEncoder)
    """Texts of every item for one source; `items` has domain, title, asr, summary and, when those
    sources are asked for, keywords and phrases; `raw-ends` needs the `text_encoder` whose window it fits."""
    domains, titles, asrs = list(items["domain"]), list(items["title"]), list(items["asr"])
    if source == "raw-ends":
        return text_inputs(domains, titles, [text_encoder.readable_ends(a) for a in asrs], list(items["summary"]), "raw")
    if source in ("keywords", "phrases"):
        return text_inputs(domains, titles, asrs, list(items[source]), "summary")
    if source == "text-only":
        return text_inputs(domains, titles, asrs, list(items["summary"]), "summary")
    return text_inputs(domains, titles, asrs, list(items["summary"]), source)


def run_ablation(
    items: pd.DataFrame,
    frames: np.ndarray,
    text_encoder,  # noqa: ANN001 (any TextEncoder)
    config: AblationConfig,
    on_result: Callable[[dict], None] | None = None,
) -> tuple[pd.DataFrame, Hits]:
    """Per (source, seed): train on train items, choose on val items, report on test items.

    Returns one row per cell (validation mR1 of the chosen checkpoint, test mR1 and the six
    test R@1, steps) and, per split ("val", "test") and source, each seed's ``direction_hits``
    (for ``summarize``'s bootstrap intervals).
    """
    rows: list[dict] = []
    hits: Hits = {"val": {}, "test": {}}
    for source in config.sources:
        states, mask = text_features(source_texts(items, source, text_encoder), text_encoder)
        features = ItemFeatures(
            item_ids=list(items["item_id"]),
            product_ids=list(items["product_id"]),
            domains=list(items["domain"]),
            splits=list(items["split"]),
            frames=np.zeros_like(frames) if source == "text-only" else frames,
            text=states,
            text_mask=mask,
        )
        tower_cfg = tower_config(features, config.train)
        for seed in config.seeds:
            train_cfg = TrainConfig(**{**config.train.to_dict(), "seed": seed})
            result = train_tower(features.only(TRAINING_SPLITS), tower_cfg, train_cfg)
            vectors = embed(result.tower, features)  # reporting: the first read of a test item
            metrics = evaluate(vectors, features.product_ids, features.domains, features.splits, split="test")
            for split, by_source in hits.items():
                by_source.setdefault(source, []).append(
                    direction_hits(vectors, features.product_ids, features.domains, features.splits, split)
                )
            row = {"source": source, "seed": seed, "val_mR1": result.best_val_mR1, "mR1": metrics["mR1"]}
            row.update({k: metrics[k] for k in R1_KEYS})
            row.update(best_step=result.best_step, steps_done=result.steps_done)
            rows.append(row)
            if on_result is not None:
                on_result(row)
    return pd.DataFrame(rows), hits


def summarize(results: pd.DataFrame, hits: Hits | None = None) -> pd.DataFrame:
    """Per source: mean and standard deviation (over seeds, ddof=1) of validation mR1, test mR1 and
    the six test R@1, and with ``hits`` the 95% bootstrap interval over validation products of
    validation mR1 and over test products of the test figures."""
    grouped = results.groupby("source", sort=False)[["val_mR1", "mR1", *R1_KEYS]]
    mean, std = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
    table = pd.DataFrame(index=mean.index)
    for column in ["val_mR1", "mR1", *R1_KEYS]:
        table[f"{column} mean"] = mean[column]
        table[f"{column} std"] = std[column]
    if hits is not None:
        for source in table.index:
            interval = bootstrap_r1(hits["test"][source])
            for column in ["mR1", *R1_KEYS]:
                low, high = interval[column.removesuffix("/R@1")]
                table.loc[source, f"{column} low"], table.loc[source, f"{column} high"] = low, high
            low, high = bootstrap_r1(hits["val"][source])["mR1"]
            table.loc[source, "val_mR1 low"], table.loc[source, "val_mR1 high"] = low, high
    table["seeds"] = grouped.size()
    return table.reset_index()


def markdown(summary: pd.DataFrame) -> str:
    """`mean ± std [95% interval]` Markdown table, one row per source: validation mR1, then the test figures."""
    header = "| source | val mR1 | test mR1 | " + " | ".join(d for d in DIRECTIONS) + " | seeds |"
    lines = [header, "|---|" + "---:|" * (len(DIRECTIONS) + 3)]

    def cell(values: dict, column: str) -> str:
        text = f"{values[f'{column} mean']:.1f} ± {values[f'{column} std']:.1f}"
        if f"{column} low" in values:
            text += f" [{values[f'{column} low']:.1f}, {values[f'{column} high']:.1f}]"
        return text

    for values in summary.to_dict("records"):
        cells = [cell(values, "val_mR1"), cell(values, "mR1")]
        cells += [cell(values, f"{d}/R@1") for d in DIRECTIONS]
        lines.append(f"| {values['source']} | " + " | ".join(cells) + f" | {values['seeds']} |")
    return "\n".join(lines)
