"""Embeddings kept per (registered model version, item content key), so no model embeds the same
content twice: a refresh, a re-run and a promotion embed only what is missing.

Layout of ``root``::

    <registered model>/v<version>/shard-<uuid>/keys.npy      content keys (fixed-width bytes)
                                              vectors.npy    float32 [n, dim], row-aligned

Shards are written in a staging folder and renamed into place, never changed afterwards, so
concurrent writers never clash (a key written twice is the same vector twice) and readers see whole
shards only. Vectors are memory-mapped: a lookup reads the rows it returns, not the store.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ampere.catalogue.content import KEY_LENGTH

KEY_DTYPE = f"S{KEY_LENGTH}"
MARKERS = ("keys.npy",)  # a shard is whole once its keys are there: copied to an object store after its vectors


@dataclass(frozen=True)
class Lookup:
    """The stored vectors of some keys: ``vectors`` row-aligned with the keys asked for (zeros where
    ``found`` is False)."""

    vectors: np.ndarray
    found: np.ndarray

    @property
    def missing(self) -> np.ndarray:
        """Positions of the keys that have no stored vector."""
        return np.flatnonzero(~self.found)


class EmbeddingStore:
    """The vectors each model version has embedded, by item content key."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def folder(self, model: str, version: str) -> Path:
        """Where the shards of one registered model version live."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", model) or not str(version).isdigit():
            raise ValueError(f"invalid registered model {model!r} or version {version!r}")
        return self.root / model / f"v{version}"

    def _shards(self, model: str, version: str) -> list[Path]:
        folder = self.folder(model, version)
        return sorted(shard for shard in folder.glob("shard-*") if (shard / "keys.npy").is_file()) if folder.is_dir() else []

    def lookup(self, model: str, version: str, keys: list[str], dim: int) -> Lookup:
        """The vectors of ``keys`` that version ``version`` of ``model`` has embedded."""
        wanted = np.asarray(keys, dtype=KEY_DTYPE)
        vectors = np.zeros((len(keys), dim), dtype=np.float32)
        found = np.zeros(len(keys), dtype=bool)
        for shard in self._shards(model, version):
            stored = np.load(shard / "keys.npy")
            order = np.argsort(stored)
            at = np.searchsorted(stored, wanted, sorter=order).clip(max=max(len(stored) - 1, 0))
            hit = (stored[order[at]] == wanted) & ~found if len(stored) else np.zeros(len(keys), dtype=bool)
            if hit.any():
                rows = order[at[hit]]
                shard_vectors = np.load(shard / "vectors.npy", mmap_mode="r")
                vectors[hit] = shard_vectors[rows]
                found |= hit
        return Lookup(vectors, found)

    def add(self, model: str, version: str, keys: list[str], vectors: np.ndarray) -> Path | None:
        """Stores new vectors of a model version as one shard (None when there are none)."""
        if len(keys) != len(vectors):
            raise ValueError(f"{len(keys)} keys but {len(vectors)} vectors")
        if not keys:
            return None
        folder = self.folder(model, version)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            np.save(staging / "vectors.npy", np.ascontiguousarray(vectors, dtype=np.float32))
            np.save(staging / "keys.npy", np.asarray(keys, dtype=KEY_DTYPE))
            target = folder / f"shard-{uuid.uuid4().hex}"
            os.rename(staging, target)
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def count(self, model: str, version: str) -> int:
        """How many vectors (keys written twice counted twice) one model version has stored."""
        return sum(len(np.load(shard / "keys.npy", mmap_mode="r")) for shard in self._shards(model, version))
