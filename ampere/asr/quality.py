"""Attribute recall and precision of ASR summaries against a dataset's ground truth.

The ground truth is the ``attributes.jsonl`` sidecar of a synthetic dataset (product_id, name,
brand, category, color, material, detail, group_id, attributes). What a transcript can say:

- spoken attributes: brand, category, color, material and detail. The generator's product block
  always names the brand, a category synonym ("thermos flask" for a bottle), the colour and the
  material, and names the detail in about a third of transcripts. Each spoken word may be
  misrecognised ("navy blew", "calbon fiber"), and 75% of the blocks start after word 32.
- unspoken attributes: the rest of the ``attributes`` list (the group's catalogue features such
  as "20000mah"); they appear in page titles, never in transcripts.

Matching works on words: NFKC, case-folded, ``\\w+`` runs (punctuation is dropped). An attribute
matches a text when all the words of one of its accepted phrases occur in the text (in any
order): its own value and, for a category of the synthetic catalogue, any of its synonyms. A
misrecognised word does not match.

- recall of a text: share of the product's spoken attributes that match it.
- precision of a summary: share of its predicted phrases (the product name and each feature)
  that contain a ground-truth attribute (spoken or not), i.e. that are not invented or wrong.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ampere.asr.summarizer import SummaryResult
from ampere.data.synth_catalog import CATEGORIES

ATTRIBUTES_FILE = "attributes.jsonl"
SPOKEN_FIELDS = ("brand", "category", "color", "material", "detail")
CLIP_DOMAINS = ("short", "live")
STATUSES = ("ok", "empty", "failed")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Attribute:
    """One ground-truth attribute: the word sets of its accepted phrases, and whether it is spoken."""

    field: str
    value: str
    phrases: tuple[frozenset[str], ...]
    spoken: bool

    def matches(self, words: set[str] | frozenset[str]) -> bool:
        """True when all the words of one accepted phrase are in ``words``."""
        return any(phrase <= words for phrase in self.phrases)


def words(text: str) -> set[str]:
    """The normalised words of a text (NFKC, case-folded, punctuation dropped)."""
    return set(_WORD.findall(unicodedata.normalize("NFKC", text).casefold()))


def load_attributes(dataset_dir: str | Path) -> dict[str, dict]:
    """The ``attributes.jsonl`` records of a dataset, by product id."""
    path = Path(dataset_dir) / ATTRIBUTES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no ground truth {ATTRIBUTES_FILE} in {dataset_dir}")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {record["product_id"]: record for record in records}


def truth_attributes(truth: dict) -> list[Attribute]:
    """The spoken attributes of a ground-truth record, then its unspoken ones (deduplicated)."""
    attributes = []
    for field in SPOKEN_FIELDS:
        value = truth[field]
        phrases = [value]
        if field == "category" and value in CATEGORIES:
            phrases += CATEGORIES[value].synonyms
        attributes.append(Attribute(field, value, tuple(frozenset(words(p)) for p in phrases), True))
    spoken_values = {truth[field] for field in SPOKEN_FIELDS}
    for value in dict.fromkeys(truth.get("attributes", [])):
        if value not in spoken_values:
            attributes.append(Attribute("feature", value, (frozenset(words(value)),), False))
    return attributes


def summary_phrases(text: str) -> list[str]:
    """The product name and features of a rendered ``Product name: X; Features: a, b`` text, or
    the phrases of a comma-separated list (``keywords``)."""
    if not text.startswith("Product name:"):
        return [p.strip() for p in text.split(",") if p.strip()]
    name, _, features = text.partition("; Features:")
    phrases = [name.removeprefix("Product name:"), *features.split(",")]
    return [p.strip() for p in phrases if p.strip()]


def text_recall(text: str, attributes: list[Attribute]) -> float:
    """Share of the spoken attributes that match ``text``."""
    spoken = [a for a in attributes if a.spoken]
    found = words(text)
    return sum(a.matches(found) for a in spoken) / len(spoken)


def attribute_scores(text: str, truth: dict) -> tuple[float, float]:
    """(recall, precision) of a rendered summary against one ground-truth record.

    Precision is 0.0 for a text without phrases (an empty summary predicts nothing right).
    """
    attributes = truth_attributes(truth)
    phrases = summary_phrases(text)
    correct = sum(any(a.matches(words(p)) for a in attributes) for p in phrases)
    return text_recall(text, attributes), correct / len(phrases) if phrases else 0.0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _aggregate(rows: list[dict]) -> dict[str, Any]:
    """Counts and means of per-item rows (see ``summary_quality``)."""
    scored = [r for r in rows if r["transcript"]]
    ok = [r for r in scored if r["status"] == "ok"]
    counts = Counter(r["status"] for r in rows)
    return {
        "items": len(rows),
        "scored": len(scored),
        **{status: counts.get(status, 0) for status in STATUSES},
        "attribute_recall": _mean([r["recall"] for r in scored]),
        "attribute_precision": _mean([r["precision"] for r in ok]),
        "raw32_recall": _mean([r["raw32_recall"] for r in scored]),
        "raw_recall": _mean([r["raw_recall"] for r in scored]),
    }


def summary_quality(
    items_df: pd.DataFrame,
    summaries: dict[str, SummaryResult | str],
    attributes: dict[str, dict],
    encoder_reads: Callable[[str], str],
) -> dict[str, Any]:
    """Attribute quality of the summaries of the short/live items of ``items_df`` that are in ``summaries``.

    A summary is a ``SummaryResult`` or a rendered text (status "ok" when non-empty, else
    "empty"). Means are over the items with a non-empty transcript ("scored"): recall counts a
    failed or empty summary as 0; precision averages the "ok" summaries only. Baselines: the
    recall of the part of the raw transcript that the text encoder reads, ``encoder_reads(asr)``
    (its first 32 WordPiece tokens for MiniLM: ``raw32_recall``), and of the whole raw
    transcript (``raw_recall``). Returns the overall figures, the status
    counts and ``per_domain`` (short, live) with the same keys; a mean over nothing is NaN.
    """
    clips = items_df[items_df["domain"].isin(CLIP_DOMAINS) & items_df["item_id"].isin(summaries)]
    missing = sorted(set(clips["product_id"]) - set(attributes))
    if missing:
        raise ValueError(f"no ground-truth attributes for products {missing[:10]}")
    rows = []
    for item in clips.itertuples():
        summary = summaries[item.item_id]
        if isinstance(summary, str):
            text, status = summary, "ok" if summary.strip() else "empty"
        else:
            text, status = summary.text, summary.status
        truth = attributes[item.product_id]
        recall, precision = attribute_scores(text, truth)
        attrs = truth_attributes(truth)
        rows.append(
            {
                "domain": item.domain,
                "transcript": bool(item.asr.strip()),
                "status": status,
                "recall": recall,
                "precision": precision,
                "raw32_recall": text_recall(encoder_reads(item.asr), attrs),
                "raw_recall": text_recall(item.asr, attrs),
            }
        )
    result = _aggregate(rows)
    result["per_domain"] = {d: _aggregate([r for r in rows if r["domain"] == d]) for d in CLIP_DOMAINS}
    return result


def _figure(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def quality_table(quality: dict[str, Any]) -> str:
    """Markdown table of ``summary_quality``: one row for all clips, then one per domain."""
    lines = [
        "| scope | items | ok | empty | failed | recall | precision | raw-32 recall | raw recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, q in [("all", quality), *quality["per_domain"].items()]:
        lines.append(
            f"| {name} | {q['items']} | {q['ok']} | {q['empty']} | {q['failed']} | "
            f"{_figure(q['attribute_recall'])} | {_figure(q['attribute_precision'])} | "
            f"{_figure(q['raw32_recall'])} | {_figure(q['raw_recall'])} |"
        )
    return "\n".join(lines)
