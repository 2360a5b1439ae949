"""The title tagger: labels from training products only, grounded phrases, grounded decoding."""

import json

import pandas as pd
import pytest

from ampere.asr.candidates import (
    LlmReader,
    TaggerConfig,
    TitleTagger,
    llm_inputs,
    no_candidates_reason,
    out_of_fold,
    title_labels,
)
from ampere.asr.prompts import PHRASE_SEPARATOR, grounded_schema, load_prompt
from ampere.asr.text import complete_features

BRANDS = ["sable", "orvella", "tavira", "pelco", "marlow", "ferro", "kayro", "lumina", "nordic", "vesta"]
KINDS = ["power bank", "kettle", "yoga mat", "desk lamp", "travel mug"]
COLORS = ["navy", "black", "green", "grey", "red"]
CHATTER = "hello family follow the anchor link three in the cart countdown five seconds"


def _items(split_of: dict[int, str]) -> pd.DataFrame:
    rows = []
    for i, split in split_of.items():
        brand, kind, color = BRANDS[i], KINDS[i % 5], COLORS[(i * 2) % 5]
        pid = f"p{i}"
        rows.append({"item_id": f"{pid}-page", "product_id": pid, "domain": "page", "split": split,
                     "title": f"New {brand} {kind} {color} best seller", "asr": ""})
        for j, domain in enumerate(("short", "live")):
            asr = f"{CHATTER} look at this {kind} from {brand} in {color} colour {CHATTER} only {19 + j}.9 dollars"
            rows.append({"item_id": f"{pid}-{domain}", "product_id": pid, "domain": domain, "split": split,
                         "title": "", "asr": asr})
    return pd.DataFrame(rows)


SPLITS = {i: "train" for i in range(7)} | {7: "val", 8: "test", 9: "test"}


def test_labels_come_from_training_products_only():
    items = _items(SPLITS)
    labels = title_labels(items)
    assert set(labels.transcripts) == {f"p{i}" for i in range(7)}
    assert labels.title_words["p0"] >= {"sable", "power", "bank"}

    before = TitleTagger.fit(items).fingerprint()
    changed = items.copy()
    held_out = changed["split"] != "train"
    changed.loc[held_out & (changed["domain"] == "page"), "title"] = "countdown anchor cart hello"
    changed.loc[held_out & (changed["domain"] != "page"), "asr"] = "sable sable navy countdown"
    assert TitleTagger.fit(changed).fingerprint() == before  # validation and test products are never read

    changed = items.copy()
    changed.loc[0, "title"] = "countdown anchor cart"
    assert TitleTagger.fit(changed).fingerprint() != before  # a training title is read


def test_phrases_keep_product_words_in_spoken_order_and_drop_chatter_and_numbers():
    tagger = TitleTagger.fit(_items(SPLITS))
    transcript = f"{CHATTER} look at this desk lamp from vesta in grey colour {CHATTER} only 49.9 dollars"
    phrases = tagger.phrases(transcript)
    words = [w for p in phrases for w in p.split()]
    assert {"vesta", "desk", "lamp", "grey"} <= set(words)
    assert not {"countdown", "anchor", "cart", "49.9", "the"} & set(words)
    assert words.index("lamp") < words.index("vesta") < words.index("grey")
    assert "desk lamp" in phrases
    assert tagger.material(transcript) == PHRASE_SEPARATOR.join(phrases)
    assert tagger.phrases("") == [] and tagger.phrases("countdown five seconds") == []
    assert "no candidate phrase" in no_candidates_reason("countdown 5 seconds", tagger.material("countdown 5 seconds"))
    assert no_candidates_reason("", "") is None and no_candidates_reason(transcript, tagger.material(transcript)) is None


def test_fit_needs_two_training_products_with_titles():
    with pytest.raises(ValueError, match="at least 2 training products"):
        TitleTagger.fit(_items({0: "train", 1: "val", 2: "test"}))


def test_llm_inputs_follow_the_prompt_input():
    items = _items(SPLITS)
    transcripts = list(items.loc[items["domain"] == "short", "asr"])
    same, lineage = llm_inputs(load_prompt("summary-v2"), items, transcripts)
    assert same == transcripts and lineage == "none"
    phrases, lineage = llm_inputs(load_prompt("summary-v3"), items, transcripts)
    assert lineage == f"title-tagger@{TitleTagger.fit(items).fingerprint()}"
    assert all(len(p) < len(t) and "countdown" not in p for p, t in zip(phrases, transcripts, strict=True))
    single, narrow = llm_inputs(load_prompt("summary-v3"), items, transcripts, TaggerConfig(top_words=1))
    assert narrow != lineage and all(len(p.split()) == 1 for p in single)


def test_grounded_schema_allows_only_the_material():
    schema = grounded_schema("vesta desk lamp | grey | 1.5m cable")
    features = schema["properties"]["features"]["items"]["enum"]
    assert features == ["vesta desk lamp", "grey", "1.5m cable"]
    pattern = schema["properties"]["product_name"]["pattern"]
    assert "1\\.5m" in pattern and "(1\\.5m|cable|desk|grey|lamp|vesta)" in pattern
    with pytest.raises(ValueError, match="no candidate phrases"):
        grounded_schema(" | ")
    json.dumps(schema)


def test_complete_features_adds_the_phrases_the_answer_left_out():
    material = "vesta desk lamp | grey | oak base"
    assert complete_features("vesta desk lamp", ["grey"], material) == ["grey", "oak base"]
    assert complete_features("vesta lamp", [], material) == ["vesta desk lamp", "grey", "oak base"]


def test_a_tagger_saved_as_its_state_picks_the_same_phrases():
    """What a registered model carries (the tagger's JSON state) scores like the fitted tagger."""
    items = _items(SPLITS)
    tagger = TitleTagger.fit(items)
    loaded = TitleTagger.from_state(json.loads(json.dumps(tagger.state())))
    transcripts = list(items["asr"][items["asr"] != ""])
    assert loaded.fingerprint() == tagger.fingerprint()
    for transcript in transcripts:
        assert loaded.word_scores(transcript) == pytest.approx(tagger.word_scores(transcript), abs=1e-6)
    assert [loaded.phrases(t) for t in transcripts] == [tagger.phrases(t) for t in transcripts]
    changed = {**tagger.state(), "features": ["something", "else"]}
    with pytest.raises(ValueError, match="features"):
        TitleTagger.from_state(changed)


def test_a_training_products_own_title_never_shapes_its_own_out_of_fold_text():
    """Out of fold, a training product's transcripts are read by a tagger that never saw its title, as
    validation, test and query transcripts are: changing that title leaves its own phrases as they
    were, while the full tagger (which saw the new title) reads the same transcript otherwise."""
    items = _items(SPLITS)
    # p0's transcript says a brand word that only p0's title could respell or lift.
    items.loc[items["product_id"] == "p0", "asr"] = f"{CHATTER} look at this power bank from zorbix in navy {CHATTER}"
    clips = items[items["domain"] != "page"]

    def read(dataset: pd.DataFrame) -> tuple[list[str], LlmReader]:
        reader = LlmReader(TitleTagger.fit(dataset), out_of_fold(dataset))
        return reader(clips["asr"], clips["product_id"]), reader

    before, _ = read(items)
    retitled = items.copy()
    retitled.loc[retitled["item_id"] == "p0-page", "title"] = "New zorbix power bank navy best seller"
    after, reader = read(retitled)
    own = [i for i, p in enumerate(clips["product_id"]) if p == "p0"]
    assert [after[i] for i in own] == [before[i] for i in own]
    assert reader([clips["asr"].iloc[own[0]]])[0] != after[own[0]]  # the full tagger: the title shaped it
    assert {len(products) for products, _ in reader.folds} == {1, 2} and len(reader.folds) == 5  # 7 products, 5 folds
