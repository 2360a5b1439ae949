"""The registered model carries the tagger its summaries were read through, stored by fingerprint
(ampere.asr.tagger_store), never a refit with other data or settings."""

import json

import pytest

from ampere.asr.backends import build_summarizer
from ampere.asr.candidates import LlmReader, TaggerConfig, TitleTagger
from ampere.asr.tagger_store import TaggerStore
from ampere.serve.pyfunc import SUMMARIZER, TAGGER, summary_parts
from tests.test_asr_candidates import _items

SPLITS = {i: "train" for i in range(8)} | {8: "val", 9: "test"}
LLM = build_summarizer("llamacpp").model_id  # the packaged GGUF (nothing loads until a call)


def test_a_stored_tagger_comes_back_by_its_lineage_name(tmp_path):
    store = TaggerStore(tmp_path / "taggers")
    tagger = TitleTagger.fit(_items(SPLITS), TaggerConfig(repair=False))  # settings other than the defaults
    name = store.put(tagger)
    assert name == LlmReader(tagger).lineage and store.path(name).exists()
    assert store.put(tagger) == name and len(list(store.folder.iterdir())) == 1  # written once, no temporary left
    again = store.get(name)
    assert LlmReader(again).lineage == name and again.config == tagger.config
    assert again.phrases("a red ceramic lumine mug") == tagger.phrases("a red ceramic lumine mug")


def test_a_missing_or_mislabelled_tagger_is_a_clear_error(tmp_path):
    store = TaggerStore(tmp_path)
    with pytest.raises(ValueError, match="re-materialise asr_summaries"):
        store.get("title-tagger@000000000000")
    other = TitleTagger.fit(_items(SPLITS))
    store.path("title-tagger@000000000000").write_text(json.dumps(other.state()))
    with pytest.raises(ValueError, match=f"holds tagger {LlmReader(other).lineage}, not title-tagger@000000000000"):
        store.get("title-tagger@000000000000")


def test_a_model_on_summaries_carries_the_stored_tagger_of_its_lineage(tmp_path):
    store = TaggerStore(tmp_path / "taggers")
    tagger = TitleTagger.fit(_items(SPLITS), TaggerConfig(repair=False))
    lineage = {"text_source": "summary", "backend": "llamacpp", "llm": LLM, "tagger": store.put(tagger)}
    assert summary_parts({**lineage, "text_source": "raw"}, store, "llamacpp", {}) is None  # no tagger, no LLM
    parts = summary_parts(lineage, store, "llamacpp", {"max_tokens": 48})
    parts.write(tmp_path)
    assert json.loads((tmp_path / TAGGER).read_text()) == json.loads(json.dumps(tagger.state()))
    assert json.loads((tmp_path / SUMMARIZER).read_text()) == {"max_tokens": 48}
    with pytest.raises(ValueError, match="re-materialise asr_summaries"):
        summary_parts({**lineage, "tagger": "title-tagger@000000000000"}, store, "llamacpp", {})
