"""Asset values stored per run, so that concurrent runs never read each other's intermediates.

Dagster's filesystem IO manager keeps one file per asset key: two runs at the same time (a sensor's
and a schedule's, or two datasets) would overwrite each other's values between steps. Here every
value lives under ``<base_dir>/<run id>/<asset key>``. A step reads what its own run wrote; an
input its run did not produce (a re-execution from failure, or a run of some assets only) comes
from the nearest ancestor run that has it, else from the run of the asset's latest materialisation
stored under the same base folder.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import AssetKey, ConfigurableIOManager, DagsterInstance, InputContext, OutputContext

_LATEST_RUNS = 100  # materialisations searched, newest first, for a stored value


def run_and_ancestors(instance: DagsterInstance, run_id: str) -> Iterator[str]:
    """``run_id``, then the run it re-executes, and so on up to the original run."""
    current: str | None = run_id
    while current is not None:
        yield current
        run = instance.get_run_by_id(current)
        current = run.parent_run_id if run is not None else None


class RunScopedIOManager(ConfigurableIOManager):
    """Pickled asset values under `<base_dir>/<run id>/<asset key>` (written atomically)."""

    base_dir: str

    def _path(self, run_id: str, key: AssetKey) -> Path:
        return Path(self.base_dir).joinpath(run_id, *key.path)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self._path(context.run_id, context.asset_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(staging, "wb") as f:
            pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(staging, path)
        context.add_output_metadata({"stored_at": str(path)})

    def load_input(self, context: InputContext) -> Any:
        key, instance = context.asset_key, context.instance
        for run_id in run_and_ancestors(instance, context.step_context.run_id):
            if self._path(run_id, key).exists():
                return _load(self._path(run_id, key))
        # Newest first, the latest materialisation stored under this base_dir (runs of the same instance
        # may have written to another workspace).
        for record in instance.fetch_materializations(key, limit=_LATEST_RUNS).records:
            if self._path(record.run_id, key).exists():
                return _load(self._path(record.run_id, key))
        raise FileNotFoundError(
            f"no stored value of {key.to_user_string()} for run {context.step_context.run_id} or its ancestors "
            f"under {self.base_dir}: materialise {key.to_user_string()} first"
        )


def _load(path: Path) -> Any:
    """A value this IO manager wrote (the pipeline's own files, as with Dagster's filesystem IO manager)."""
    with open(path, "rb") as f:
        return pickle.load(f)
