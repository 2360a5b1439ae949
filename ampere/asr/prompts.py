"""Versioned few-shot prompts for the ASR summarizer and the JSON schema of its answer.

A prompt lives in ``ampere/asr/prompts/<id>.json``. Its ``hash`` is the sha256 of the file's
canonical JSON (sorted keys, no insignificant whitespace), so any change to the wording or the
examples changes the hash, and with it every summary cache key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ampere.lineage.hashing import content_hash

PROMPT_DIR = Path(__file__).parent / "prompts"
TRANSCRIPT_PLACEHOLDER = "{transcript}"
DEFAULT_PROMPT_ID = "summary-v3"
# What a prompt's user turn holds: the cleaned transcript, or the candidate phrases that the
# title tagger (``ampere.asr.candidates``) chose from it; answers to a "candidates" prompt are
# constrained to those phrases' words (``grounded_schema``).
INPUTS = ("transcript", "candidates")

MAX_NAME_CHARS = 60
MAX_FEATURES = 6
MAX_FEATURE_CHARS = 40

SUMMARY_SCHEMA: dict = {
    "type": "object",
    "properties": {
        "product_name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
        "features": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_FEATURE_CHARS},
            "maxItems": MAX_FEATURES,
        },
    },
    "required": ["product_name", "features"],
    "additionalProperties": False,
}


PHRASE_SEPARATOR = " | "
MAX_NAME_WORDS = 5


def _alternatives(options: list[str]) -> str:
    """Regex alternation of literal options (only "." needs escaping in tokenizer words)."""
    return "(" + "|".join(o.replace(".", "\\.") for o in options) + ")"


def material_phrases(material: str) -> list[str]:
    """The distinct, whitespace-normalised phrases of a candidate material ("phrase | phrase | ...")."""
    return list(dict.fromkeys(" ".join(p.split()) for p in material.split(PHRASE_SEPARATOR.strip()) if p.strip()))


def grounded_schema(material: str) -> dict:
    """``SUMMARY_SCHEMA`` narrowed to one candidate material ("phrase | phrase | ..."): the
    product name is 1 to ``MAX_NAME_WORDS`` of its words, each feature one of its phrases."""
    phrases = material_phrases(material)
    if not phrases:
        raise ValueError("no candidate phrases to ground an answer on")
    word = _alternatives(sorted({w for p in phrases for w in p.split()}))
    return {
        **SUMMARY_SCHEMA,
        "properties": {
            "product_name": {
                "type": "string",
                "maxLength": MAX_NAME_CHARS,
                "pattern": f"^{word}( {word}){{0,{MAX_NAME_WORDS - 1}}}$",
            },
            "features": {"type": "array", "items": {"enum": phrases}, "maxItems": MAX_FEATURES},
        },
    }


def answer_schema(prompt: Prompt, material: str) -> dict:
    """The JSON schema an answer to ``prompt`` about ``material`` is constrained to."""
    return grounded_schema(material) if prompt.reads_candidates else SUMMARY_SCHEMA


def answer_json(product_name: str, features: list[str]) -> str:
    """The compact JSON answer the model is shown in examples and constrained to produce."""
    return json.dumps(
        {"product_name": product_name, "features": features},
        separators=(",", ":"),
        ensure_ascii=False,
    )


@dataclass(frozen=True)
class Example:
    """One few-shot example: a transcript and the expected answer."""

    transcript: str
    product_name: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class Prompt:
    """A loaded, versioned few-shot prompt."""

    id: str
    version: int
    system: str
    user_template: str
    examples: tuple[Example, ...]
    hash: str
    input: str = "transcript"

    @property
    def reads_candidates(self) -> bool:
        """Whether the user turn holds the title tagger's phrases (answers are then grounded on them)."""
        return self.input == "candidates"

    def user_message(self, transcript: str) -> str:
        """The user turn holding one transcript between the template's delimiters."""
        return self.user_template.replace(TRANSCRIPT_PLACEHOLDER, transcript)

    def messages(self, transcript: str) -> list[dict]:
        """Chat messages: a fixed few-shot prefix, then the transcript as the last user turn.

        Everything before the last message is byte-identical for every transcript, so the
        inference engine's prefix cache can reuse it. The transcript should already be
        cleaned with ``ampere.asr.text.clean_transcript`` (which neutralises delimiters and
        chat-template tokens).
        """
        messages = [{"role": "system", "content": self.system}]
        for example in self.examples:
            messages.append({"role": "user", "content": self.user_message(example.transcript)})
            messages.append(
                {
                    "role": "assistant",
                    "content": answer_json(example.product_name, list(example.features)),
                }
            )
        messages.append({"role": "user", "content": self.user_message(transcript)})
        return messages


def load_prompt(prompt_id: str = DEFAULT_PROMPT_ID, path: str | Path | None = None) -> Prompt:
    """Load a prompt from ``path`` or from the packaged ``prompts/<prompt_id>.json``."""
    file = Path(path) if path is not None else PROMPT_DIR / f"{prompt_id}.json"
    if not file.is_file():
        raise FileNotFoundError(f"prompt file not found: {file}")
    data = json.loads(file.read_text(encoding="utf-8"))
    missing = [k for k in ("id", "version", "system", "user_template", "examples") if k not in data]
    if missing:
        raise ValueError(f"{file}: missing fields {missing}")
    if path is None and data["id"] != prompt_id:
        raise ValueError(f"{file}: id {data['id']!r} does not match {prompt_id!r}")
    if data.get("input", "transcript") not in INPUTS:
        raise ValueError(f"{file}: input must be one of {INPUTS}, got {data['input']!r}")
    if data["user_template"].count(TRANSCRIPT_PLACEHOLDER) != 1:
        raise ValueError(f"{file}: user_template must contain {TRANSCRIPT_PLACEHOLDER} once")
    examples = tuple(
        Example(
            transcript=e["transcript"],
            product_name=e["output"]["product_name"],
            features=tuple(e["output"]["features"]),
        )
        for e in data["examples"]
    )
    return Prompt(
        id=data["id"],
        version=int(data["version"]),
        system=data["system"],
        user_template=data["user_template"],
        examples=examples,
        hash=content_hash(data, "json", 12),
        input=data.get("input", "transcript"),
    )
