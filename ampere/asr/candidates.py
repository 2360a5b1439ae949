"""Candidate phrases of a transcript, chosen by a word tagger supervised by product titles.

Every product has a page title. On the *training* products, the words a transcript shares with
its product's title are a free label: "sable", "carbon", "fiber" are, "countdown" and "cart"
are not. ``TitleTagger`` learns from those labels which transcript words name the product and
gives the LLM only those, as phrases in the order they were said ("sable power bank | carbon
fiber | navy blue"). The LLM then chooses and orders among them (grounded decoding,
``grounded_schema``) instead of reading 200 words of chatter.

Words no training title holds are first respelled as the titles spell their near neighbours
(``ampere.asr.lexicon``: "calbon" -> "carbon"), so a misheard product word can still be scored,
kept and read. Each distinct word of a transcript is scored by a logistic regression over features that do
not depend on the word's identity, so the tagger transfers to words never seen in training:

- ``lift``: P(word in own title | word in transcript) - P(word in a title), from the training
  products (a training product's own contribution is left out when it is scored, so the label
  never leaks into the feature), 0 for an unseen word; ``unseen``: the word is new;
- ``log_df``: log(1 + number of training products whose transcripts hold the word);
- ``stop`` / ``number`` / ``length``: shape of the word;
- ``context_mean`` / ``context_max``: lift of the three words either side (product words come
  in blocks);
- ``position``: first position / transcript length; ``log_count``: log(1 + times said).

Words of the published English stop list, numbers and words said about more than ``max_df`` of
the training products (chatter, as in ``keywords``) are never candidates. The ``top_words``
best-scored words are kept, then grouped into runs of consecutive words.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sklearn.linear_model import LogisticRegression

from ampere.asr.keywords import frequent_words, tokens
from ampere.asr.lexicon import TitleLexicon
from ampere.asr.prompts import MAX_FEATURE_CHARS, PHRASE_SEPARATOR, Prompt
from ampere.lineage.hashing import content_hash

FOLDS = 5  # out-of-fold taggers for the training products' own transcripts
FEATURES = (
    "lift", "unseen", "log_df", "stop", "number", "length",
    "context_mean", "context_max", "position", "log_count",
)  # fmt: skip
CONTEXT = 3


@dataclass(frozen=True)
class TaggerConfig:
    """How many words to keep per transcript and the chatter threshold of the stop list."""

    top_words: int = field(default=8, metadata={"doc": "title tagger: best-scored words kept per transcript"})
    max_phrases: int = field(default=8, metadata={"doc": "title tagger: phrases (runs of kept words) given to the LLM"})
    max_df: float = field(
        default=0.25, metadata={"doc": "title tagger: words said about more than this share of training products are chatter"}
    )
    smoothing: float = field(default=1.0, metadata={"doc": "title tagger: pseudo-count of the title lift"})
    repair: bool = field(
        default=True, metadata={"doc": "title tagger: respell misheard words as the training titles do (ampere.asr.lexicon)"}
    )

    def __post_init__(self) -> None:
        if self.top_words < 1 or self.max_phrases < 1:
            raise ValueError("top_words and max_phrases must be >= 1")
        if not 0 < self.max_df <= 1:
            raise ValueError(f"max_df must be in (0, 1], got {self.max_df}")


def is_number(word: str) -> bool:
    """True for digits with optional separators ("59.9", "3-5")."""
    return any(c.isdigit() for c in word) and not any(c.isalpha() for c in word)


@dataclass(frozen=True)
class TitleLabels:
    """Training transcripts with the words of their product's page title (the labels)."""

    transcripts: dict[str, list[str]]  # product id -> its short/live transcripts
    title_words: dict[str, frozenset[str]]  # product id -> words of its page title(s)


def title_labels(items: pd.DataFrame) -> TitleLabels:
    """Labels from the ``train`` products of ``items`` only (validation and test are never read).

    Products without a page title or without a transcript are left out.
    """
    train = items[items["split"] == "train"]
    pages = train[train["domain"] == "page"]
    titles: dict[str, set[str]] = {}
    for product_id, title in zip(pages["product_id"], pages["title"], strict=True):
        titles.setdefault(product_id, set()).update(tokens(title))
    clips = train[(train["domain"] != "page") & (train["asr"].str.strip() != "")]
    transcripts: dict[str, list[str]] = {}
    for product_id, asr in zip(clips["product_id"], clips["asr"], strict=True):
        if titles.get(product_id):
            transcripts.setdefault(product_id, []).append(asr)
    return TitleLabels(transcripts, {p: frozenset(titles[p]) for p in transcripts})


class TitleTagger:
    """Title-supervised word tagger (see the module docstring). Fit with ``TitleTagger.fit``."""

    def __init__(self, config: TaggerConfig, labels: TitleLabels) -> None:
        self.config = config
        self.stop_words = frozenset(ENGLISH_STOP_WORDS) | frequent_words(labels.transcripts, config.max_df)
        self.lexicon = TitleLexicon.from_titles(labels.title_words.values(), self.stop_words)
        self._product_words = {
            p: frozenset(w for t in ts for w in self.words(t, labels.title_words[p])) for p, ts in labels.transcripts.items()
        }
        self._titles = labels.title_words
        self._said = Counter(w for words in self._product_words.values() for w in words)
        self._in_own_title = Counter(w for p, words in self._product_words.items() for w in words & self._titles[p])
        self._in_titles = Counter(w for words in self._titles.values() for w in words)
        self._products = len(self._product_words)
        self._model = LogisticRegression(max_iter=1000)

    @classmethod
    def fit(cls, items: pd.DataFrame, config: TaggerConfig | None = None) -> TitleTagger:
        """Learn from the title labels of the training products of ``items``."""
        labels = title_labels(items)
        if len(labels.transcripts) < 2:
            raise ValueError(
                f"the title tagger needs at least 2 training products with a page title and a transcript, "
                f"got {len(labels.transcripts)}"
            )
        tagger = cls(config or TaggerConfig(), labels)
        rows, targets = [], []
        for product_id, transcripts in labels.transcripts.items():
            for transcript in transcripts:
                words = tagger.words(transcript, labels.title_words[product_id])
                for word, row in tagger._word_features(words, leave_out=product_id).items():
                    rows.append(row)
                    targets.append(word in labels.title_words[product_id])
        if len(set(targets)) < 2:
            raise ValueError("the title labels are all equal: transcripts never (or always) say title words")
        tagger._model.fit(np.array(rows), np.array(targets))
        return tagger

    def words(self, transcript: str, own_title: frozenset[str] = frozenset()) -> list[str]:
        """The transcript's words, misheard ones respelled by the title lexicon when ``repair`` is on;
        ``own_title``: a training product's title words, left out of the lexicon for its own transcripts."""
        words = tokens(transcript)
        return self.lexicon.repair_words(words, own_title) if self.config.repair else words

    def _said_by_others(self, word: str, leave_out: str | None) -> int:
        """Training products whose transcripts hold ``word``, ``leave_out`` not counted."""
        return self._said[word] - (leave_out is not None and word in self._product_words[leave_out])

    def _lift(self, word: str, leave_out: str | None) -> float | None:
        said = self._said_by_others(word, leave_out)
        own, titles, products = self._in_own_title[word], self._in_titles[word], self._products
        if leave_out is not None:
            own -= word in self._product_words[leave_out] and word in self._titles[leave_out]
            titles -= word in self._titles[leave_out]
            products -= 1
        if said <= 0:
            return None
        return (own + 0.5 * self.config.smoothing) / (said + self.config.smoothing) - titles / max(products, 1)

    def _word_features(self, words: list[str], leave_out: str | None = None) -> dict[str, np.ndarray]:
        """One feature row (``FEATURES``) per distinct word; ``leave_out``: the product being labelled."""
        lifts = [self._lift(w, leave_out) for w in words]
        known = [0.0 if lift is None else lift for lift in lifts]
        rows: dict[str, np.ndarray] = {}
        counts = Counter(words)
        for i, word in enumerate(words):
            if word in rows:
                continue
            context = known[max(0, i - CONTEXT) : i] + known[i + 1 : i + 1 + CONTEXT]
            rows[word] = np.array(
                [
                    known[i],
                    lifts[i] is None,
                    math.log1p(self._said_by_others(word, leave_out)),
                    word in ENGLISH_STOP_WORDS,
                    is_number(word),
                    min(len(word), 12) / 12,
                    float(np.mean(context)) if context else 0.0,
                    max(context) if context else 0.0,
                    i / len(words),
                    math.log1p(counts[word]),
                ],
                dtype=float,
            )
        return rows

    def word_scores(self, transcript: str) -> dict[str, float]:
        """Probability that each candidate word of ``transcript`` is a title word."""
        return self._scores(self.words(transcript))

    def _scores(self, words: list[str]) -> dict[str, float]:
        rows = {w: r for w, r in self._word_features(words).items() if w not in self.stop_words and not is_number(w)}
        if not rows:
            return {}
        probabilities = self._model.predict_proba(np.array(list(rows.values())))[:, 1]
        return dict(zip(rows, probabilities.tolist(), strict=True))

    def phrases(self, transcript: str) -> list[str]:
        """The best ``top_words`` words, grouped into runs of consecutive words (at most
        ``MAX_FEATURE_CHARS`` characters each), in spoken order."""
        words = self.words(transcript)
        scores = self._scores(words)
        kept = set(sorted(scores, key=lambda w: (-scores[w], w))[: self.config.top_words])
        runs: list[list[str]] = [[]]
        for word in words:
            if word in kept and len(" ".join([*runs[-1], word])) <= MAX_FEATURE_CHARS:
                runs[-1].append(word)
            elif word in kept:
                runs.append([word])
            elif runs[-1]:
                runs.append([])
        phrases = list(dict.fromkeys(" ".join(run) for run in runs if run and len(run[0]) <= MAX_FEATURE_CHARS))
        longer = [p for p in phrases if " " in p]
        phrases = [p for p in phrases if " " in p or not any(p in q.split() for q in longer)]
        return phrases[: self.config.max_phrases]

    def material(self, transcript: str) -> str:
        """What the LLM reads instead of the transcript: the phrases joined by ``PHRASE_SEPARATOR``."""
        return materials(self, [transcript])[0]

    def state(self) -> dict:
        """Everything the tagger learned and needs to score words, as JSON-able values (see ``from_state``)."""
        return {
            "config": asdict(self.config),
            "features": FEATURES,
            "coef": np.round(self._model.coef_, 8).tolist(),
            "intercept": np.round(self._model.intercept_, 8).tolist(),
            "stop_words": sorted(self.stop_words),
            "said": sorted(self._said.items()),
            "own": sorted(self._in_own_title.items()),
            "titles": sorted(self._in_titles.items()),
            "products": self._products,
            "lexicon": sorted(self.lexicon.counts.items()),
        }

    @classmethod
    def from_state(cls, state: dict) -> TitleTagger:
        """A fitted tagger from ``state()`` (it scores transcripts; it cannot be refitted)."""
        if tuple(state["features"]) != FEATURES:
            raise ValueError(f"tagger state has features {state['features']}, this code computes {FEATURES}")
        # States saved before the lexicon existed have neither "repair" nor "lexicon": they score as they did.
        tagger = cls(TaggerConfig(**{"repair": False, **state["config"]}), TitleLabels({}, {}))
        tagger.stop_words = frozenset(state["stop_words"])
        tagger._said, tagger._in_own_title, tagger._in_titles = (
            Counter(dict(state[key])) for key in ("said", "own", "titles")
        )
        tagger._products = state["products"]
        tagger.lexicon = TitleLexicon(Counter(dict(state.get("lexicon", []))), tagger.stop_words)
        tagger._model.coef_ = np.array(state["coef"])
        tagger._model.intercept_ = np.array(state["intercept"])
        tagger._model.classes_ = np.array([False, True])
        return tagger

    def fingerprint(self) -> str:
        """First 12 hex of the sha256 of everything the tagger learned (for lineage)."""
        state = self.state()
        del state["products"]  # implied by the counts; left out so fingerprints stay those of earlier versions
        return content_hash(state, "json", 12)


def materials(tagger: TitleTagger, transcripts: Iterable[str], separator: str = PHRASE_SEPARATOR) -> list[str]:
    """The tagger's phrases of each transcript joined by ``separator`` ("" stays ""): with the
    default separator, what a "candidates" prompt reads (``TitleTagger.material``)."""
    return [separator.join(tagger.phrases(t)) if t.strip() else "" for t in transcripts]


@dataclass(frozen=True)
class LlmReader:
    """What the LLM reads of each transcript under a prompt: the transcript itself (no tagger) or the
    phrases a fitted ``TitleTagger`` picks; ``lineage`` says which ("none" or "title-tagger@<fingerprint>").

    ``folds``: (training products, a tagger fitted without them), so that a training product's
    transcripts are read by a tagger that never saw its own title, as validation, test and query
    transcripts are read by ``tagger`` (``out_of_fold``). A product in no fold is read by ``tagger``.
    """

    tagger: TitleTagger | None
    folds: tuple[tuple[frozenset[str], TitleTagger], ...] = ()

    @property
    def lineage(self) -> str:
        return "none" if self.tagger is None else f"title-tagger@{self.tagger.fingerprint()}"

    def tagger_for(self, product_id: str | None) -> TitleTagger | None:
        """The tagger that reads ``product_id``'s transcripts: its fold's for a training product."""
        return next((tagger for products, tagger in self.folds if product_id in products), self.tagger)

    def __call__(
        self, transcripts: Iterable[str], product_ids: Iterable[str | None] | None = None, separator: str = PHRASE_SEPARATOR
    ) -> list[str]:
        """The LLM inputs of ``transcripts``; ``product_ids`` (row-aligned) sends training products to their fold."""
        transcripts = list(transcripts)
        if self.tagger is None:
            return transcripts
        products = [None] * len(transcripts) if product_ids is None else list(product_ids)
        return [materials(self.tagger_for(p), [t], separator)[0] for t, p in zip(transcripts, products, strict=True)]


def out_of_fold(
    items: pd.DataFrame, config: TaggerConfig | None = None, folds: int = FOLDS
) -> tuple[tuple[frozenset[str], TitleTagger], ...]:
    """Taggers for the training products' own transcripts, each fitted without a fold of them.

    The training products with a title and a transcript are ordered by a stable hash of their id and
    dealt into ``folds`` folds; a fold whose complement cannot supervise a tagger (fewer than 2
    products) is left out, and its products are read by the full tagger.
    """
    supervised = sorted(title_labels(items).transcripts, key=lambda p: content_hash(p, "text", 16))
    count = min(folds, len(supervised))
    fitted = []
    for fold in range(count):
        held = frozenset(supervised[fold::count])
        try:
            fitted.append((held, TitleTagger.fit(items[~items["product_id"].isin(held)], config)))
        except ValueError:  # too few products left to supervise it
            continue
    return tuple(fitted)


def llm_reader(prompt: Prompt, items: pd.DataFrame, config: TaggerConfig | None = None) -> LlmReader:
    """The reader of ``prompt``: a "candidates" prompt's tagger is fitted on the training products of ``items``.

    It reads every transcript as a query of it would be read: what the index embeds. What a training
    product's transcripts train on comes from ``training_reader``.
    """
    return LlmReader(TitleTagger.fit(items, config) if prompt.reads_candidates else None)


def training_reader(reader: LlmReader, items: pd.DataFrame, config: TaggerConfig | None = None) -> LlmReader:
    """``reader`` with out-of-fold taggers for the training products of ``items`` (``out_of_fold``), so
    the text a training transcript trains on never saw its own product's title; a reader without a
    tagger (the LLM reads the transcript itself) is returned as it is."""
    return reader if reader.tagger is None else LlmReader(reader.tagger, out_of_fold(items, config))


def llm_inputs(
    prompt: Prompt, items: pd.DataFrame, transcripts: list[str], config: TaggerConfig | None = None
) -> tuple[list[str], str]:
    """What the LLM reads for each transcript under ``prompt``, and what chose it (for lineage)."""
    reader = llm_reader(prompt, items, config)
    return reader(transcripts), reader.lineage


def no_candidates_reason(transcript: str, llm_input: str) -> str | None:
    """Why a non-empty transcript got an empty summary without an LLM call, or None."""
    if transcript.strip() and not llm_input.strip():
        return "no candidate phrase: every word of the transcript is chatter, a stop word or a number"
    return None
