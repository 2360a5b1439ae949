"""Sharded storage of the summaries asset: one Parquet file per shard (Dagster partition).

A run may materialise any set of shards (one run covers a whole range; see
``BackfillPolicy.single_run``); each shard's rows go to their own file, so a partial re-run or a
backfill of some shards rewrites only those files. Readers get the rows of the shards they ask
for (downstream assets: all of them), as one DataFrame.
"""

import io

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext, StaticPartitionsDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ampere.asr.shards import shard_keys
from ampere.storage import Location

SUMMARY_SHARDS = StaticPartitionsDefinition(shard_keys())

# Run tags that make one run of the pipeline job cover every shard (CLI, sensor, schedule).
ALL_SHARDS_TAGS = {
    ASSET_PARTITION_RANGE_START_TAG: shard_keys()[0],
    ASSET_PARTITION_RANGE_END_TAG: shard_keys()[-1],
}


class ShardedParquetIOManager(ConfigurableIOManager):
    """Writes a DataFrame with a ``shard`` column as ``<root>/<asset>/shard-<key>.parquet`` per partition
    (``root`` a folder or an object-store URL; each file written whole)."""

    root: str

    def _path(self, asset_name: str, key: str) -> Location:
        return Location(self.root).child(asset_name, f"shard-{key}.parquet")

    def handle_output(self, context: OutputContext, obj: pd.DataFrame) -> None:
        keys = context.asset_partition_keys
        unknown = sorted(set(obj["shard"]) - set(keys))
        if unknown:
            raise ValueError(f"{context.asset_key.to_user_string()}: rows for shards {unknown} outside the run's shards")
        for key in keys:
            rows = obj[obj["shard"] == key].reset_index(drop=True)
            self._path(context.asset_key.path[-1], key).write_bytes(rows.to_parquet(index=False))

    def load_input(self, context: InputContext) -> pd.DataFrame:
        """Rows of the requested shards that have been materialised (a missing shard has no rows)."""
        name = context.asset_key.path[-1]
        paths = [self._path(name, key) for key in context.asset_partition_keys]
        frames = [pd.read_parquet(io.BytesIO(path.read_bytes())) for path in paths if path.exists()]
        if not frames:
            raise FileNotFoundError(f"{name}: no shard has been materialised under {Location(self.root).child(name).url}")
        return pd.concat(frames, ignore_index=True)
