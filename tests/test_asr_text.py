"""Transcript cleaning, strict answer parsing and rendering (ampere.asr.text)."""

import pytest

from ampere.asr.prompts import MAX_FEATURES, MAX_NAME_CHARS
from ampere.asr.text import (
    WINDOW_SEPARATOR,
    clean_transcript,
    grounded_features,
    parse_summary,
    render_summary,
)


def test_clean_removes_control_characters_and_collapses_whitespace():
    raw = "  pink\x00 ear\x07buds\u200b \t\n\r noise\x1b cancelling\u202e  "
    assert clean_transcript(raw, 200) == "pink earbuds noise cancelling"


@pytest.mark.parametrize(
    "token",
    [
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "[INST]",
        "[/INST]",
        "<<SYS>>",
        "</s>",
        "<transcript>",
        "</transcript>",
        "<|eot_id|>",
        "＜｜im_end｜＞",
    ],
)
def test_clean_neutralises_chat_template_tokens(token):
    cleaned = clean_transcript(f"red{token}kettle", 200)
    assert cleaned == "red kettle"


def test_clean_keeps_ordinary_text_unchanged():
    text = "this is the 1.5 L electric kettle, 50% off: link #3 <3"
    assert clean_transcript(text, 200) == text


def test_clean_long_transcript_keeps_head_and_tail_windows():
    chatter = " ".join(f"chatter{i}" for i in range(200))
    text = f"welcome everyone {chatter} finally the product is a stainless steel thermos"
    cleaned = clean_transcript(text, 120)
    assert len(cleaned) <= 120
    assert cleaned.startswith("welcome everyone")
    assert cleaned.endswith("finally the product is a stainless steel thermos")
    head, tail = cleaned.split(WINDOW_SEPARATOR)
    words = set(text.split())
    assert set(head.split()) <= words and set(tail.split()) <= words  # no word cut in half
    assert len(tail) > len(head)


def test_clean_accepts_non_utf8_bytes():
    assert clean_transcript(b"caf\xe9 \xff mug", 200) == "caf\ufffd \ufffd mug"
    assert clean_transcript(b"mug", 200) == "mug"


def test_clean_blank_and_template_only_become_empty():
    assert clean_transcript(" \n\t ", 200) == ""
    assert clean_transcript("<|im_end|>\x00", 200) == ""


def test_clean_rejects_tiny_budget():
    with pytest.raises(ValueError):
        clean_transcript("anything", 4)


def test_parse_valid_trims_dedups_and_limits():
    raw = (
        '{"product_name": "  Pink   wireless earbuds ", '
        '"features": ["ANC", " anc ", "", "40 h battery", "a", "b", "c", "d", "e", "f"]}'
    )
    name, features = parse_summary(raw)
    assert name == "Pink wireless earbuds"
    assert features == ["ANC", "40 h battery", "a", "b", "c", "d"][:MAX_FEATURES]


def test_parse_replaces_separators_inside_fields():
    name, features = parse_summary('{"product_name": "mug; blue", "features": ["a, b", "c;d"]}')
    assert name == "mug, blue"
    assert features == ["a b", "c d"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("Product name: mug", "invalid JSON"),
        ('{"product_name": "mug", "features": ["a"', "invalid JSON"),
        ('["mug"]', "JSON object"),
        ('{"product_name": "mug"}', "keys"),
        ('{"product_name": "mug", "features": [], "price": 9}', "keys"),
        ('{"product_name": 3, "features": []}', "product_name must be a string"),
        ('{"product_name": "mug", "features": "a, b"}', "list of strings"),
        ('{"product_name": "mug", "features": ["a", 2]}', "list of strings"),
        ('{"product_name": "   ", "features": []}', "empty product_name"),
        ('{"product_name": "' + "x" * (MAX_NAME_CHARS + 1) + '", "features": []}', "longer"),
    ],
)
def test_parse_rejects_invalid_answers_with_reason(raw, reason):
    with pytest.raises(ValueError, match=reason):
        parse_summary(raw)


def test_render_summary_format():
    assert render_summary("mug", ["blue", "350 ml"]) == "Product name: mug; Features: blue, 350 ml"
    assert render_summary("mug", []) == "Product name: mug; Features:"


def test_grounded_features_drops_copied_attributes():
    transcript = "this desk lamp has three colour modes and a wireless charger link nine"
    features = ["shade 999", "classic red", "three colour modes", "Wireless charging"]
    assert grounded_features(features, transcript) == ["three colour modes", "Wireless charging"]
