"""Refreshing a catalogue's served index without training: diff the catalogue's items against the
items the served index holds (by item id and content key), embed with the champion only the content
it has not embedded before, and build the index of every current item from stored vectors."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ampere.catalogue.embedding_store import EmbeddingStore
from ampere.retrieval.query import Query, QueryEncoder, QueryError

Embed = Callable[[pd.DataFrame], np.ndarray]  # rows of items -> their L2-normalised vectors


@dataclass(frozen=True)
class CatalogueDiff:
    """What changed between the served index and the catalogue, as item ids."""

    added: list[str]
    changed: list[str]
    removed: list[str]
    kept: list[str]

    def counts(self) -> dict[str, int]:
        """Sizes of the four groups."""
        return {"added": len(self.added), "changed": len(self.changed), "removed": len(self.removed), "kept": len(self.kept)}


def indexed_items(index_folder: str | Path | None) -> pd.DataFrame:
    """The items an index holds (none without an index): item_id, product_id, domain and content_key
    ("" for an index built before content keys were recorded, so each of its items counts as changed)."""
    columns = ["item_id", "product_id", "domain", "content_key"]
    if index_folder is None:
        return pd.DataFrame(columns=columns)
    folder = Path(index_folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    frames = []
    for domain in manifest["domains"]:
        ids = pd.read_parquet(folder / f"{domain}.ids.parquet")
        ids = ids.assign(domain=domain, content_key=ids.get("content_key", ""))
        frames.append(ids[columns])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def diff(current: pd.DataFrame, served: pd.DataFrame) -> CatalogueDiff:
    """Item ids added, changed (same id, another content key), removed and kept, from two frames
    with columns item_id and content_key."""
    now = dict(zip(current["item_id"], current["content_key"], strict=True))
    before = dict(zip(served["item_id"], served["content_key"], strict=True))
    return CatalogueDiff(
        added=[i for i in now if i not in before],
        changed=[i for i in now if i in before and before[i] != now[i]],
        removed=[i for i in before if i not in now],
        kept=[i for i in now if i in before and before[i] == now[i]],
    )


@dataclass(frozen=True)
class Embedded:
    """Every item's vector (row-aligned with the items) and how many were embedded now."""

    vectors: np.ndarray
    embedded: int
    reused: int


def vectors_for(
    items: pd.DataFrame,
    store: EmbeddingStore,
    model: str,
    version: str,
    dim: int,
    embed: Embed,
    batch_size: int = 256,
) -> Embedded:
    """The vectors of ``items`` (with a content_key column) by model ``version``: stored ones reused,
    the others embedded by ``embed`` in batches and stored, batch by batch, before the next one."""
    keys = items["content_key"].tolist()
    found = store.lookup(model, version, keys, dim)
    missing = found.missing
    vectors = found.vectors
    first = {}  # one embedding per distinct content key
    for row in missing:
        first.setdefault(keys[row], row)
    todo = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    for start in tqdm(range(0, len(todo), batch_size), desc="embedding new content", unit="batch", disable=len(todo) == 0):
        rows = todo[start : start + batch_size]
        batch = embed(items.iloc[rows])
        store.add(model, version, [keys[row] for row in rows], batch)
        vectors[rows] = batch
    if len(missing):
        by_key = {keys[row]: vectors[row] for row in todo}
        vectors[missing] = np.stack([by_key[keys[row]] for row in missing])
    return Embedded(vectors, embedded=len(todo), reused=len(items) - len(missing))


def query_embedder(encoder: QueryEncoder) -> Embed:
    """Embeds catalogue rows as raw queries through the model's own query path (`QueryEncoder`):
    a page's image with its title, a clip's media with its transcript (summarised as the model reads it)."""

    def embed_rows(rows: pd.DataFrame) -> np.ndarray:
        queries = [
            Query(domain, Path(media), title if domain == "page" else asr)
            for domain, media, title, asr in zip(rows["domain"], rows["media_path"], rows["title"], rows["asr"], strict=True)
        ]
        try:
            return encoder.embed(queries)
        except QueryError as error:
            ids = list(rows["item_id"])
            raise QueryError(f"{error} (items {ids[0]}…{ids[-1]} of this batch; nothing was published)") from error

    return embed_rows
