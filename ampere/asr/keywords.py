"""A non-LLM transcript denoiser for the ablation: KeyBERT-style keyword extraction with MMR.

Candidates are the transcript's 1-2 word phrases without stop words; the stop words are a
generic, published English list (scikit-learn's ``ENGLISH_STOP_WORDS``, from the Glasgow IR
group) plus the words learned from the training transcripts themselves: those said about more
than ``max_df`` of the training products (host chatter names no product). No word is chosen by
hand. The transcript and every candidate are embedded with MiniLM (mean pooling over up to
`max_doc_tokens` tokens), and `top_k` phrases are chosen by Maximal Marginal Relevance
(relevance to the transcript minus `diversity` × similarity to the phrases already chosen).
The output is the phrases joined by ", " — the same short-text budget a summary gets.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

_WORD = re.compile(r"[a-z0-9][a-z0-9'.-]*")


@dataclass(frozen=True)
class KeywordConfig:
    """How many phrases to keep, how much to favour diversity over relevance, and the
    product document frequency above which a training word is chatter."""

    top_k: int = 6
    diversity: float = 0.5
    max_doc_tokens: int = 256
    max_df: float = 0.25


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of a transcript."""
    return _WORD.findall(text.lower())


def frequent_words(transcripts_by_product: Mapping[str, Iterable[str]], max_df: float) -> frozenset[str]:
    """Words found in the transcripts of more than ``max_df`` of the products (training products only)."""
    df = Counter(word for texts in transcripts_by_product.values() for word in {w for t in texts for w in tokens(t)})
    limit = max_df * len(transcripts_by_product)
    return frozenset(word for word, count in df.items() if count > limit)


def candidates(text: str, stop_words: frozenset[str] = frozenset(ENGLISH_STOP_WORDS)) -> list[str]:
    """Distinct 1- and 2-word phrases of content words, in order of first appearance."""
    words = tokens(text)
    seen: dict[str, None] = {}
    for i, word in enumerate(words):
        if word in stop_words or word.isdigit():
            continue
        seen.setdefault(word, None)
        if i + 1 < len(words) and words[i + 1] not in stop_words and not words[i + 1].isdigit():
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
    """Keyword denoiser over a MiniLM-style encoder (`tokenizer` + `model` attributes of a TextEncoder).

    ``training_transcripts``: the transcripts of each training product, from which the chatter
    words (``frequent_words``) are learned; never pass validation or test products.
    """

    def __init__(
        self,
        text_encoder,  # noqa: ANN001 (any TextEncoder)
        training_transcripts: Mapping[str, Iterable[str]],
        config: KeywordConfig | None = None,
    ) -> None:
        self.tokenizer = text_encoder.tokenizer
        self.model = text_encoder.network
        self.config = config or KeywordConfig()
        self.learned_stop_words = frequent_words(training_transcripts, self.config.max_df)
        self.stop_words = frozenset(ENGLISH_STOP_WORDS) | self.learned_stop_words

    def _embed(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_doc_tokens, return_tensors="pt")
        with torch.inference_mode():
            states = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    def extract(self, text: str) -> str:
        """Comma-separated keywords of one transcript ("" for an empty one)."""
        phrases = candidates(text, self.stop_words)
        if not phrases:
            return ""
        doc = self._embed([text])[0]  # embedded alone: phrases padded to the document's length would cost 10x
        picked = mmr(doc, self._embed(phrases), self.config.top_k, self.config.diversity)
        return ", ".join(phrases[i] for i in picked)
