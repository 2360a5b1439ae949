"""Repair of misheard transcript words against the vocabulary of the training products' page titles.

Speech recognition mishears product words into near neighbours ("calbon" for "carbon", "grossy"
for "glossy"); the title tagger's lift cannot score a word no title holds, and the text encoder
reads a different token. A catalogue's titles are its own lexicon: a transcript word that no
training title holds is replaced by the one title word within a small edit distance of it (same
first letter; one edit for words of up to four letters, two for longer ones) that at least
``min_titles`` training titles hold. No neighbour, or more than one at the smallest distance:
the word stays as heard; so do stop words and chatter ("first" is not a misheard "forest").
Only training titles are read, as for the tagger's labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

MIN_WORD = 4  # shorter heard words are left alone: too many near neighbours
MAX_EDITS = 2
MEMO_SIZE = 1 << 18  # remembered repairs; a long-running server asked about ever new words starts over


def edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of ``a`` and ``b``, or ``limit + 1`` once it is known to exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]


def allowed_edits(word: str) -> int:
    """Edits a repair may make to reach ``word``: one for words of up to four letters, else ``MAX_EDITS``."""
    return 1 if len(word) <= 4 else MAX_EDITS


class TitleLexicon:
    """Words of the training titles with the number of titles holding each (see the module docstring)."""

    def __init__(self, title_counts: Counter[str], said: frozenset[str] = frozenset(), min_titles: int = 2) -> None:
        self.counts = title_counts
        self.said = said
        self.min_titles = min_titles
        self._by_letter: dict[str, list[str]] = {}
        for word in sorted(title_counts):
            if word.isalpha():
                self._by_letter.setdefault(word[0], []).append(word)
        self._memo: dict[tuple[str, frozenset[str]], str] = {}

    @classmethod
    def from_titles(cls, titles: Iterable[frozenset[str]], said: frozenset[str] = frozenset()) -> TitleLexicon:
        """The lexicon of some titles' word sets; ``said``: words never respelled (see ``repair``)."""
        return cls(Counter(word for words in titles for word in words), said)

    def repair(self, word: str, leave_out: frozenset[str] = frozenset()) -> str:
        """``word`` as the lexicon spells it. Words in ``said`` (stop words and the chatter of many
        products) are what was said, not a mishearing, and stay. ``leave_out``: one title's words, counted as if that title
        were not in the lexicon (a training product repaired as if it were new)."""
        key = (word, leave_out)  # fitting repairs each training transcript twice (word counts, then features)
        repaired = self._memo.get(key)
        if repaired is None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            repaired = self._memo[key] = self._repair(word, leave_out)
        return repaired

    def _repair(self, word: str, leave_out: frozenset[str]) -> str:
        if len(word) < MIN_WORD or not word.isalpha() or word in self.said or self.counts[word] - (word in leave_out) > 0:
            return word
        best, found = MAX_EDITS + 1, []
        for target in self._by_letter.get(word[0], ()):
            if self.counts[target] - (target in leave_out) < self.min_titles:
                continue
            distance = edit_distance(word, target, min(allowed_edits(target), best))
            if distance <= allowed_edits(target) and distance < best:
                best, found = distance, [target]
            elif distance == best and distance <= allowed_edits(target):
                found.append(target)
        return found[0] if len(found) == 1 else word

    def repair_words(self, words: list[str], leave_out: frozenset[str] = frozenset()) -> list[str]:
        """Every word of ``words`` through ``repair``."""
        return [self.repair(word, leave_out) for word in words]
