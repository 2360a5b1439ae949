"""A non-LLM transcript denoiser for the ablation: KeyBERT-style keyword extraction with MMR.

Candidates are the transcript's 1-2 word phrases without stop words or chatter words; the
transcript and every candidate are embedded with MiniLM (mean pooling over up to
`max_doc_tokens` tokens), and `top_k` phrases are chosen by Maximal Marginal Relevance
(relevance to the transcript minus `diversity` × similarity to the phrases already chosen).
The output is the phrases joined by ", " — the same short-text budget a summary gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

STOP_WORDS = frozenset(
    """a an the and or but if so of to in on at for with from by is are was were be been it this that these those
    you your we our i me my he she they them his her its do does did have has had not no yes very really just all any
    some one two three four five six seven eight nine ten first last more most can will would should could about up
    down out over now then here there what who how when where which why as into than too also get got go going come
    let lets let's ok okay oh wow hey hi hello please thank thanks baby family everyone guys link cart anchor follow
    like click buy price yuan dollars seconds countdown order orders coupon shipping free stock hurry quick today
    tonight welcome gift gifts live room see look this one it's don't dont miss type comments""".split()
)


@dataclass(frozen=True)
class KeywordConfig:
    """How many phrases to keep and how much to favour diversity over relevance."""

    top_k: int = 6
    diversity: float = 0.5
    max_doc_tokens: int = 256


def candidates(text: str) -> list[str]:
    """Distinct 1- and 2-word phrases of content words, in order of first appearance."""
    words = re.findall(r"[a-z0-9][a-z0-9'.-]*", text.lower())
    seen: dict[str, None] = {}
    for i, word in enumerate(words):
        if word in STOP_WORDS or word.isdigit():
            continue
        seen.setdefault(word, None)
        if i + 1 < len(words) and words[i + 1] not in STOP_WORDS and not words[i + 1].isdigit():
            seen.setdefault(f"{word} {words[i + 1]}", None)
    return list(seen)


def mmr(doc: np.ndarray, phrases: np.ndarray, top_k: int, diversity: float) -> list[int]:
    """Indices of `top_k` rows of `phrases` (L2-normalised) chosen by Maximal Marginal Relevance."""
    relevance = phrases @ doc
    chosen = [int(np.argmax(relevance))]
    while len(chosen) < min(top_k, len(phrases)):
        redundancy = (phrases @ phrases[chosen].T).max(axis=1)
        score = (1 - diversity) * relevance - diversity * redundancy
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return chosen


class KeywordExtractor:
    """Keyword denoiser over a MiniLM-style encoder (`tokenizer` + `model` attributes of a TextEncoder)."""

    def __init__(self, text_encoder, config: KeywordConfig | None = None) -> None:  # noqa: ANN001 (any TextEncoder)
        self.tokenizer = text_encoder.tokenizer
        self.model = text_encoder.model
        self.config = config or KeywordConfig()

    def _embed(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_doc_tokens, return_tensors="pt")
        with torch.inference_mode():
            states = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    def extract(self, text: str) -> str:
        """Comma-separated keywords of one transcript ("" for an empty one)."""
        phrases = candidates(text)
        if not phrases:
            return ""
        doc = self._embed([text])[0]  # embedded alone: phrases padded to the document's length would cost 10x
        picked = mmr(doc, self._embed(phrases), self.config.top_k, self.config.diversity)
        return ", ".join(phrases[i] for i in picked)
