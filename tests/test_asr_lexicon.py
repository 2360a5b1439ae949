"""Respelling misheard transcript words against the training titles (ampere.asr.lexicon)."""

from collections import Counter

from ampere.asr import lexicon as lexicon_module
from ampere.asr.candidates import TaggerConfig, TitleTagger
from ampere.asr.lexicon import TitleLexicon, edit_distance
from tests.test_asr_candidates import _items

SPLITS = {i: "train" for i in range(9)} | {9: "val"}  # "kettle" is said by 2 of 9 training products: not chatter


def test_edit_distance_counts_edits_and_stops_past_the_limit():
    assert edit_distance("calbon", "carbon", 2) == 1
    assert edit_distance("pulple", "purple", 2) == 1
    assert edit_distance("kitten", "sitting", 3) == 3
    assert edit_distance("kitten", "sitting", 1) == 2  # limit + 1 once it is known to exceed the limit
    assert edit_distance("abc", "abcdef", 2) == 3


def _lexicon(said=frozenset()) -> TitleLexicon:
    titles = [frozenset({"carbon", "fiber", "glossy"}), frozenset({"carbon", "glossy", "blue"}),
              frozenset({"fiber", "glossy", "blue", "forest"}), frozenset({"ferro", "forest"})]
    return TitleLexicon.from_titles(titles, said)


def test_a_word_no_title_holds_is_respelled_as_its_one_close_title_word():
    lexicon = _lexicon()
    assert lexicon.repair_words(["calbon", "fibel", "grossy"]) == ["carbon", "fiber", "glossy"]
    assert lexicon.repair("forrest") == "forest"


def test_words_stay_as_heard_when_titles_hold_them_or_no_single_neighbour_exists():
    lexicon = _lexicon()
    assert lexicon.repair("carbon") == "carbon"  # a title word
    assert lexicon.repair("ferru") == "ferru"  # its neighbour "ferro" is in one title only
    assert lexicon.repair("zebra") == "zebra"  # nothing near
    assert lexicon.repair("blu") == "blu"  # too short to respell
    assert lexicon.repair("bluxx") == "bluxx"  # two edits from "blue": a four-letter word may be one edit away
    assert lexicon.repair("bluex") == "blue"
    assert TitleLexicon(Counter({"fibel": 0, "fiber": 2, "fibeb": 2})).repair("fibex") == "fibex"  # two at one edit


def test_stop_words_and_chatter_are_said_not_misheard():
    assert _lexicon(said=frozenset({"first"})).repair("first") == "first"
    assert _lexicon().repair("first") == "forest"


def test_a_left_out_title_does_not_count_towards_its_own_repairs():
    lexicon = _lexicon()
    assert lexicon.repair("fibel") == "fiber"
    assert lexicon.repair("fibel", leave_out=frozenset({"fiber", "glossy", "blue"})) == "fibel"  # fiber in one title left


def test_the_memo_of_repairs_stays_bounded_and_repairs_stay_right(monkeypatch):
    monkeypatch.setattr(lexicon_module, "MEMO_SIZE", 3)
    lexicon = _lexicon()
    heard = ["calbon", "zebra", "fibel", "grossy", "zebrb", "forrest", "calbon"]
    assert lexicon.repair_words(heard) == ["carbon", "zebra", "fiber", "glossy", "zebrb", "forest", "carbon"]
    assert len(lexicon._memo) <= 3


def _misheard(items):
    """The validation product made a kettle (two training titles say "kettle"), misheard as "kettel"."""
    val = (items["split"] == "val") & (items["domain"] != "page")
    items.loc[val, "asr"] = items.loc[val, "asr"].str.replace("travel mug", "kettel")
    return items


def test_the_tagger_reads_misheard_words_respelled_and_keeps_that_through_its_state():
    items = _misheard(_items(SPLITS))
    transcript = items.loc[(items["split"] == "val") & (items["domain"] == "short"), "asr"].iloc[0]
    assert "kettel" in transcript
    repaired = TitleTagger.fit(items)
    heard = TitleTagger.fit(items, TaggerConfig(repair=False))
    assert "kettle" in " ".join(repaired.phrases(transcript))
    assert "kettel" not in " ".join(repaired.phrases(transcript))
    assert "kettle" not in " ".join(heard.phrases(transcript))
    loaded = TitleTagger.from_state(repaired.state())
    assert loaded.phrases(transcript) == repaired.phrases(transcript)
    assert loaded.fingerprint() == repaired.fingerprint() != heard.fingerprint()


def test_a_state_saved_before_the_lexicon_scores_words_as_heard():
    items = _misheard(_items(SPLITS))
    heard = TitleTagger.fit(items, TaggerConfig(repair=False))
    old = heard.state()
    del old["lexicon"], old["config"]["repair"]
    transcript = items.loc[(items["split"] == "val") & (items["domain"] == "short"), "asr"].iloc[0]
    assert TitleTagger.from_state(old).phrases(transcript) == heard.phrases(transcript)
