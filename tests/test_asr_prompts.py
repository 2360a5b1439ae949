"""Versioned prompt files and the answer schema (ampere.asr.prompts)."""

import json
import re

import pytest

from ampere.asr.prompts import DEFAULT_PROMPT_ID, PROMPT_DIR, SUMMARY_SCHEMA, grounded_schema, load_prompt
from ampere.asr.text import parse_summary


def test_packaged_prompt_loads_with_short_hash():
    prompt = load_prompt("summary-v1")
    assert prompt.id == "summary-v1"
    assert prompt.version == 1
    assert re.fullmatch(r"[0-9a-f]{12}", prompt.hash)
    assert 3 <= len(prompt.examples) <= 4
    assert load_prompt("summary-v1").hash == prompt.hash
    assert prompt.input == "transcript"


def test_default_prompt_reads_candidate_phrases_and_its_examples_are_grounded():
    prompt = load_prompt()
    assert prompt.id == DEFAULT_PROMPT_ID and prompt.input == "candidates"
    for example in prompt.examples:
        schema = grounded_schema(example.transcript)
        assert set(example.features) <= set(schema["properties"]["features"]["items"]["enum"])
        assert re.fullmatch(schema["properties"]["product_name"]["pattern"], example.product_name)


def test_messages_share_a_byte_identical_prefix_and_end_with_the_transcript():
    prompt = load_prompt("summary-v1")
    a = prompt.messages("first transcript about a kettle")
    b = prompt.messages("second transcript {with braces} about a lamp")
    assert json.dumps(a[:-1]) == json.dumps(b[:-1])
    assert [m["role"] for m in a] == ["system"] + ["user", "assistant"] * len(prompt.examples) + ["user"]
    last = b[-1]["content"]
    assert "<transcript>\nsecond transcript {with braces} about a lamp\n</transcript>" in last


def test_example_answers_satisfy_the_schema():
    prompt = load_prompt("summary-v1")
    for message in prompt.messages("x")[2:-1:2]:
        data = json.loads(message["content"])
        assert set(data) == set(SUMMARY_SCHEMA["required"])
        name, features = parse_summary(message["content"])
        assert name and features


def test_schema_is_strict():
    assert SUMMARY_SCHEMA["additionalProperties"] is False
    assert SUMMARY_SCHEMA["required"] == ["product_name", "features"]
    props = SUMMARY_SCHEMA["properties"]
    assert props["product_name"]["maxLength"] > 0
    assert props["features"]["maxItems"] > 0 and props["features"]["items"]["maxLength"] > 0


def test_hash_follows_content_not_formatting(tmp_path):
    data = json.loads((PROMPT_DIR / "summary-v1.json").read_text())
    reformatted = tmp_path / "same.json"
    reformatted.write_text(json.dumps(data, indent=7))
    assert load_prompt(path=reformatted).hash == load_prompt("summary-v1").hash
    data["system"] += " Be brief."
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(data))
    assert load_prompt(path=changed).hash != load_prompt("summary-v1").hash


def test_bad_prompt_files_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_prompt("summary-v999")
    data = json.loads((PROMPT_DIR / "summary-v1.json").read_text())
    data["user_template"] = "no placeholder"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="placeholder|transcript"):
        load_prompt(path=bad)
    data = json.loads((PROMPT_DIR / "summary-v1.json").read_text())
    data["input"] = "title"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="input must be one of"):
        load_prompt(path=bad)
