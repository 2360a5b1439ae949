"""Fitted title taggers stored by fingerprint, so the registered model carries the very tagger its
summaries were read through: the summaries step puts it, model logging gets it by the lineage
name (`title-tagger@<fingerprint>`). Never refitted later, where other data or settings could
give another tagger. Files are written once, atomically, and checked against their name on read.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ampere.asr.candidates import LlmReader, TitleTagger


class TaggerStore:
    """A folder of `<lineage name>.json` tagger states (``TitleTagger.state``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        """The file of the tagger named ``name`` ("title-tagger@<fingerprint>")."""
        return self.folder / f"{name}.json"

    def put(self, tagger: TitleTagger) -> str:
        """Stores ``tagger`` (once: the name is its content) and returns its name."""
        name = LlmReader(tagger).lineage
        target = self.path(name)
        if not target.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.folder, suffix=".tmp", delete=False) as f:
                json.dump(tagger.state(), f)
            os.replace(f.name, target)
        return name

    def get(self, name: str) -> TitleTagger:
        """The stored tagger named ``name``; a clear error when it is missing or its content is not that name's."""
        path = self.path(name)
        if not path.exists():
            raise ValueError(
                f"no stored tagger {name} in {self.folder}: re-materialise asr_summaries "
                "(its cached summaries cost no LLM call) so the tagger it reads through is stored"
            )
        tagger = TitleTagger.from_state(json.loads(path.read_text()))
        if LlmReader(tagger).lineage != name:
            raise ValueError(f"{path} holds tagger {LlmReader(tagger).lineage}, not {name}")
        return tagger
