"""Attribute recall/precision of summaries (ampere.asr.quality) and `ampere summaries quality`."""

import json

import pandas as pd
import pytest

from ampere.asr.prompts import DEFAULT_PROMPT_ID
from ampere.asr.quality import attribute_scores, load_attributes, summary_phrases, summary_quality
from ampere.asr.summarizer import SummaryResult
from ampere.models.backbones import build_text_encoder

TRUTH = {
    "product_id": "p1",
    "name": "Sable navy blue carbon fiber power bank",
    "brand": "Sable",
    "category": "power bank",
    "color": "navy blue",
    "material": "carbon fiber",
    "detail": "digital display",
    "group_id": "g1",
    "attributes": ["navy blue", "carbon fiber", "digital display", "20000mah", "pd 22.5w"],
}
MUG = {
    "product_id": "p2",
    "name": "Lyra red enamel mug",
    "brand": "Lyra",
    "category": "mug",
    "color": "red",
    "material": "enamel",
    "detail": "gold rim",
    "group_id": "g2",
    "attributes": ["red", "enamel", "gold rim", "350ml", "gift box"],
}
CHATTER = " ".join(["hello welcome to the live room follow the anchor"] * 5)  # 45 tokens


def test_exact_summary_scores_full_recall_and_precision():
    text = "Product name: Sable power bank; Features: navy blue, carbon fiber, digital display"
    assert attribute_scores(text, TRUTH) == (1.0, 1.0)


def test_case_punctuation_and_category_synonyms_match():
    recall, precision = attribute_scores("Product name: SABLE Portable-Charger!; Features: Navy Blue", TRUTH)
    assert recall == pytest.approx(3 / 5)  # brand, category (synonym), colour
    assert precision == 1.0


def test_misspelt_words_do_not_match():
    text = "Product name: Sabel power bank; Features: navy blew, carbon fiber"
    recall, precision = attribute_scores(text, TRUTH)
    assert recall == pytest.approx(2 / 5)  # category and material only
    assert precision == pytest.approx(2 / 3)  # "navy blew" is wrong


def test_multi_word_attribute_needs_all_its_words():
    recall, precision = attribute_scores("Product name: power bank; Features: blue, fiber carbon", TRUTH)
    assert recall == pytest.approx(2 / 5)  # "blue" alone is not "navy blue"; word order is free
    assert precision == pytest.approx(2 / 3)
    # recall reads the words of the whole text, precision judges each phrase on its own
    recall, precision = attribute_scores("Product name: power bank; Features: navy, blue", TRUTH)
    assert recall == pytest.approx(2 / 5)
    assert precision == pytest.approx(1 / 3)


def test_unspoken_catalogue_features_count_for_precision_not_recall():
    recall, precision = attribute_scores("Product name: gadget; Features: 20000mah, PD 22.5W", TRUTH)
    assert recall == 0.0
    assert precision == pytest.approx(2 / 3)


def test_empty_text_scores_zero():
    assert attribute_scores("", TRUTH) == (0.0, 0.0)
    assert summary_phrases("Product name: a, b; Features: c, d") == ["a, b", "c", "d"]
    assert summary_phrases("carbon fiber, navy blue, sable") == ["carbon fiber", "navy blue", "sable"]


def items(rows):
    return pd.DataFrame(rows, columns=["item_id", "product_id", "domain", "title", "asr", "media", "split"])


@pytest.fixture(scope="module")
def reads():
    """What the packaged MiniLM text encoder reads of a text (its first 32 WordPiece tokens)."""
    return build_text_encoder().readable_part


def test_raw32_baseline_misses_late_product_words(reads):
    late = CHATTER + " this one is the sable power bank navy blue colour real carbon fiber"
    frame = items([["p1-short-0", "p1", "short", "", late, "m", "train"]])
    quality = summary_quality(frame, {"p1-short-0": ""}, {"p1": TRUTH}, reads)
    assert quality["raw32_recall"] == 0.0
    assert quality["raw_recall"] == pytest.approx(4 / 5)  # no detail said
    assert quality["attribute_recall"] == 0.0 and quality["empty"] == 1


def test_raw32_counts_the_encoders_tokens_not_words(reads):
    """12 words, but the long made-up words split into many WordPiece tokens: the colour comes too late."""
    text = "zxqvbnmkwpt " * 10 + "navy blue"
    assert len(text.split()) < 32 and "navy" not in reads(text)
    frame = items([["p1-short-0", "p1", "short", "", text, "m", "train"]])
    quality = summary_quality(frame, {"p1-short-0": ""}, {"p1": TRUTH}, reads)
    assert quality["raw32_recall"] == 0.0 and quality["raw_recall"] == pytest.approx(1 / 5)


def test_summary_quality_aggregates_per_status_and_domain(reads):
    early = "the lyra muck is red enamel " + CHATTER  # "mug" misheard as "muck"
    frame = items(
        [
            ["p1-page", "p1", "page", "title", "", "m", "train"],
            ["p1-short-0", "p1", "short", "", CHATTER + " sable power bank navy blue", "m", "train"],
            ["p1-live-0", "p1", "live", "", "", "m", "train"],
            ["p2-short-0", "p2", "short", "", early, "m", "test"],
            ["p2-live-0", "p2", "live", "", early, "m", "test"],
            ["p2-live-1", "p2", "live", "", early, "m", "test"],  # not summarised: left out
        ]
    )
    failed = SummaryResult("", "failed", "invalid JSON", "", [], 10, 5, 3)
    ok = SummaryResult(
        "Product name: Lyra mug; Features: red, enamel, cute", "ok", None, "Lyra mug", ["red", "enamel", "cute"], 10, 5, 1
    )
    summaries = {
        "p1-page": "ignored",
        "p1-short-0": "Product name: Sable power bank; Features: navy blue, leather",
        "p1-live-0": SummaryResult("", "empty", None, "", [], 0, 0, 0),
        "p2-short-0": failed,
        "p2-live-0": ok,
    }
    quality = summary_quality(frame, summaries, {"p1": TRUTH, "p2": MUG}, reads)
    assert (quality["items"], quality["scored"]) == (4, 3)
    assert (quality["ok"], quality["empty"], quality["failed"]) == (2, 1, 1)
    p1_recall, p2_recall = 3 / 5, 4 / 5  # sable/power bank/navy blue; lyra/mug/red/enamel
    assert quality["attribute_recall"] == pytest.approx((p1_recall + 0 + p2_recall) / 3)
    assert quality["attribute_precision"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert quality["raw32_recall"] == pytest.approx((0 + 3 / 5 + 3 / 5) / 3)  # lyra, red, enamel
    assert quality["raw_recall"] == pytest.approx((3 / 5 + 3 / 5 + 3 / 5) / 3)
    short, live = quality["per_domain"]["short"], quality["per_domain"]["live"]
    assert (short["items"], short["scored"], short["failed"]) == (2, 2, 1)
    assert short["attribute_recall"] == pytest.approx(p1_recall / 2)
    assert (live["items"], live["scored"], live["empty"]) == (2, 1, 1)
    assert live["attribute_recall"] == pytest.approx(p2_recall)
    with pytest.raises(ValueError, match="p2"):
        summary_quality(frame, summaries, {"p1": TRUTH}, reads)


def test_load_attributes_reads_the_sidecar(tmp_path):
    (tmp_path / "attributes.jsonl").write_text(json.dumps(TRUTH) + "\n\n" + json.dumps(MUG) + "\n")
    assert load_attributes(tmp_path) == {"p1": TRUTH, "p2": MUG}
    with pytest.raises(FileNotFoundError):
        load_attributes(tmp_path / "missing")


@pytest.mark.timeout(90)
def test_cli_quality_summarises_caches_and_logs_to_mlflow(tmp_path, capsys):
    from ampere.cli import QUALITY_EXPERIMENT, main
    from ampere.data.synth import generate
    from mlflow import MlflowClient

    dataset = generate(tmp_path / "data", products=6, seed=1, clip_frames=4)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = [
        "summaries",
        "quality",
        "--dataset",
        str(dataset),
        "--split",
        "all",
        "--sample",
        "3",
        "--seed",
        "1",
        "--threads",
        "1",
        "--cache",
        str(tmp_path / "cache.sqlite"),
        "--tracking-uri",
        uri,
    ]
    main(argv)
    first = capsys.readouterr().out
    assert "| all | 3 |" in first and "| short |" in first and "| live |" in first
    main(argv)  # everything now comes from the cache
    assert " 0 LLM calls" in capsys.readouterr().out

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(QUALITY_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    for run in runs:
        metrics, params = run.data.metrics, run.data.params
        assert params["prompt_id"] == DEFAULT_PROMPT_ID and params["sample"] == "3" and params["split"] == "all"
        assert params["tagger"].startswith("title-tagger@")
        assert params["model_id"].startswith("SmolLM2-135M-Instruct")
        for key in ("attribute_recall", "attribute_precision", "raw32_recall", "raw_recall"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["ok"] + metrics["empty"] + metrics["failed"] == 3
    assert runs[0].data.metrics == runs[1].data.metrics
