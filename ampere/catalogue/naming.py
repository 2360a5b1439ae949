"""A catalogue is the dataset a run reads, by name: each has its own registered model (so its own
`champion` and `challenger` aliases and version history) and its own index store (its own `CURRENT`).
A run over one catalogue can therefore never move another's champion or served index."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ampere.lineage.hashing import content_hash
from ampere.storage import is_remote

DEFAULT = "default"  # the home's own dataset
BASE_MODEL = "ampere-encoder"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Catalogue:
    """One catalogue's name and the places named after it. The home's catalogue keeps the names it
    always had (`ampere-encoder`, `workspace/index_store`); every other one is suffixed by its name."""

    name: str

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"invalid catalogue name {self.name!r}: lower-case letters, digits, '.', '_', '-' (at most 64)")

    @classmethod
    def of(cls, dataset: str | Path, home_dataset: str | Path, name: str | None = None) -> Catalogue:
        """The catalogue named ``name``, else the one a dataset folder is: the home's dataset is
        "default", any other folder its name plus a hash of its resolved path (two folders never share one)."""
        if name:
            return cls(name)
        folder = Path(dataset).resolve()
        if folder == Path(home_dataset).resolve():
            return cls(DEFAULT)
        slug = re.sub(r"[^a-z0-9._-]+", "-", folder.name.lower()).strip("-._")[:40] or "dataset"
        return cls(f"{slug}-{content_hash(str(folder), 'text', length=8)}")

    @property
    def registered_model(self) -> str:
        """The MLflow registered model of this catalogue's encoders."""
        return BASE_MODEL if self.name == DEFAULT else f"{BASE_MODEL}--{self.name}"

    def index_store(self, workspace: str | Path) -> str | Path:
        """The index store (published indexes and `CURRENT`) of this catalogue in a workspace (a folder or a URL)."""
        parts = ("index_store",) if self.name == DEFAULT else ("catalogues", self.name, "index_store")
        if is_remote(workspace):
            return "/".join([str(workspace).rstrip("/"), *parts])
        return Path(workspace).joinpath(*parts)
