"""The content key of an item: what its embedding depends on (domain, title, transcript, product)
and the digest of its media's bytes. Equal keys mean an embedding can be reused; a changed key means
the item changed."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
from tqdm.auto import tqdm

from ampere.lineage.hashing import content_hash
from ampere.models.features import media_digest

RECORD_FIELDS = ("product_id", "domain", "title", "asr")
KEY_LENGTH = 32  # hex characters (128 bits)


def content_key(record: dict[str, str], media: str) -> str:
    """The key of one record (its `RECORD_FIELDS`) whose media bytes have digest ``media``."""
    return content_hash({**{name: str(record[name]) for name in RECORD_FIELDS}, "media": media}, "json", KEY_LENGTH)


def content_keys(items: pd.DataFrame, progress: bool = True) -> list[str]:
    """The content key of every row of ``items`` (columns `RECORD_FIELDS` and `media_path`), in order."""
    rows: Iterable[dict] = items[[*RECORD_FIELDS, "media_path"]].to_dict("records")
    rows = tqdm(rows, total=len(items), desc="item content keys", unit="item", disable=not progress)
    return [content_key(row, media_digest(row["media_path"])) for row in rows]
