"""Stable assignment of items to shards: the partitions of the summaries asset.

An item's shard depends on its id alone, so adding or changing items never moves other items
between shards, and re-running one shard touches only that shard's transcripts.
"""

from __future__ import annotations

from ampere.lineage.hashing import content_hash

SHARD_COUNT = 16


def shard_keys(count: int = SHARD_COUNT) -> list[str]:
    """The shard keys "00", "01", ... in order."""
    return [f"{i:02d}" for i in range(count)]


def shard_of(item_id: str, count: int = SHARD_COUNT) -> str:
    """The shard key of one item (sha256 of its id, modulo ``count``)."""
    digest = content_hash(item_id, "text")
    return f"{int(digest[:8], 16) % count:02d}"
