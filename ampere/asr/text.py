"""Transcript cleaning before the LLM, strict parsing of its JSON answer, summary rendering."""

from __future__ import annotations

import json
import re
import unicodedata

from ampere.asr.prompts import MAX_FEATURE_CHARS, MAX_FEATURES, MAX_NAME_CHARS, material_phrases

WINDOW_SEPARATOR = " … "
MIN_TRANSCRIPT_CHARS = 16

# Chat-template control tokens of common model families (ChatML/SmolLM/Qwen "<|...|>",
# Llama/Mistral "[INST]", "<<SYS>>", "<s>", Gemma turns) and the prompt's own delimiters.
# Left in a transcript, the tokenizer may read them as real special tokens.
_TEMPLATE_TOKENS = re.compile(
    r"<\|[^|<>]{0,64}\|>|\[/?INST\]|<</?SYS>>|</?s>|</?transcript>|<(?:start|end)_of_turn>",
    re.IGNORECASE,
)
_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from in is it no not of on or so the this to"
    " very with".split()
)
_REMOVED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


def _strip_control(text: str) -> str:
    """Drop control/format/unassigned characters; whitespace becomes a plain space."""
    out = []
    for ch in text:
        if ch.isspace():
            out.append(" ")
        elif unicodedata.category(ch) not in _REMOVED_CATEGORIES:
            out.append(ch)
    return "".join(out)


def _head_tail(text: str, max_chars: int) -> str:
    """Keep the first third and the last two thirds of the budget, cut at word boundaries."""
    budget = max_chars - len(WINDOW_SEPARATOR)
    head_len = budget // 3
    tail_len = budget - head_len
    head = text[:head_len]
    if text[head_len] != " " and " " in head:
        head = head[: head.rfind(" ")]
    tail = text[-tail_len:]
    if text[-tail_len - 1] != " " and " " in tail:
        tail = tail[tail.find(" ") + 1 :]
    return head.rstrip() + WINDOW_SEPARATOR + tail.lstrip()


def clean_transcript(text: str | bytes, max_chars: int) -> str:
    """Make a raw ASR transcript safe and short enough to put in a prompt.

    Steps: decode bytes as UTF-8 (invalid bytes become U+FFFD); NFKC-normalise (full-width
    look-alikes become ASCII); drop control, format and unassigned characters; replace
    chat-template tokens such as ``<|im_end|>`` or ``[INST]`` by a space; collapse whitespace.
    A result longer than ``max_chars`` keeps a head window (1/3 of the budget) and a tail window
    (2/3) joined by `` … ``: hosts tend to name the product late, after the chatter, so the end
    of a transcript is worth more than its middle.
    """
    if max_chars < MIN_TRANSCRIPT_CHARS:
        raise ValueError(f"max_chars must be >= {MIN_TRANSCRIPT_CHARS}, got {max_chars}")
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = _strip_control(unicodedata.normalize("NFKC", text))
    text = _TEMPLATE_TOKENS.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    if len(text) > max_chars:
        text = _head_tail(text, max_chars)
    return text


def _clean_field(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip()


def parse_summary(raw: str) -> tuple[str, list[str]]:
    """Parse the model's JSON answer strictly into ``(product_name, features)``.

    Raises ValueError (with the reason) on invalid JSON, a non-object, missing or unknown keys,
    wrong types, an empty or over-long product name, or an over-long feature. Features are
    trimmed, empty ones dropped, duplicates (case-insensitive) removed and at most
    ``MAX_FEATURES`` kept. ";" in the name and ";" or "," in a feature are replaced so that the
    rendered summary stays unambiguous.
    """
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    keys = set(data)
    if keys != {"product_name", "features"}:
        raise ValueError(f"expected keys product_name and features, got {sorted(keys)}")
    name, features = data["product_name"], data["features"]
    if not isinstance(name, str):
        raise ValueError(f"product_name must be a string, got {type(name).__name__}")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ValueError("features must be a list of strings")
    name = _clean_field(name.replace(";", ","))
    if not name:
        raise ValueError("empty product_name")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"product_name longer than {MAX_NAME_CHARS} characters")
    kept: list[str] = []
    seen: set[str] = set()
    for feature in features:
        feature = _clean_field(feature.replace(";", " ").replace(",", " "))
        if len(feature) > MAX_FEATURE_CHARS:
            raise ValueError(f"feature longer than {MAX_FEATURE_CHARS} characters")
        if feature and feature.casefold() not in seen:
            seen.add(feature.casefold())
            kept.append(feature)
    return name, kept[:MAX_FEATURES]


def render_summary(product_name: str, features: list[str]) -> str:
    """``Product name: <name>; Features: <a, b, c>`` (the text the encoder reads)."""
    return f"Product name: {product_name}; Features: {', '.join(features)}".rstrip()


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.casefold()) if len(w) > 1 and w not in _STOPWORDS}


def is_grounded(text: str, transcript: str) -> bool:
    """Whether ``text`` shares at least one content word with ``transcript``."""
    return bool(_content_words(text) & _content_words(transcript))


def grounded_features(features: list[str], transcript: str) -> list[str]:
    """Keep the features that share at least one content word with the transcript.

    Small models copy the attributes of the prompt's last few-shot example into unrelated
    answers ("shade 999, classic red" for a desk lamp); such features are not in the
    transcript and would make different products look alike, so they are dropped.
    """
    words = _content_words(transcript)
    return [f for f in features if _content_words(f) & words]


def complete_features(product_name: str, features: list[str], material: str) -> list[str]:
    """``features``, then every candidate phrase of ``material`` that the answer left out.

    For a "candidates" prompt the tagger already chose the phrases worth reading; the LLM names
    the product and orders the features, and dropping a phrase would only lose recall.
    """
    said = _content_words(" ".join([product_name, *features]))
    out = list(features)
    for phrase in material_phrases(material):
        if len(out) < MAX_FEATURES and not _content_words(phrase) <= said:
            out.append(phrase)
            said |= _content_words(phrase)
    return out
