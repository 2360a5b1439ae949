"""Asset values stored per run, so that concurrent runs never read each other's intermediates.

Values live in the workspace (``ampere.storage``): a local folder, or an object store every step's
host reaches, each value one object written whole.

Dagster's filesystem IO manager keeps one file per asset key: two runs at the same time (a sensor's
and a schedule's, or two datasets) would overwrite each other's values between steps. Here every
value lives under ``<base_dir>/<run id>/<asset key>``. A step reads what its own run wrote; an
input its run did not produce (a re-execution from failure, or a run of some assets only) comes
from the nearest ancestor run that has it, else from the run of the asset's latest materialisation
stored under the same base folder.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

from dagster import AssetKey, ConfigurableIOManager, DagsterInstance, InputContext, OutputContext

from ampere.storage import Location

_LATEST_RUNS = 100  # materialisations searched, newest first, for a stored value


def run_and_ancestors(instance: DagsterInstance, run_id: str) -> Iterator[str]:
    """``run_id``, then the run it re-executes, and so on up to the original run."""
    current: str | None = run_id
    while current is not None:
        yield current
        run = instance.get_run_by_id(current)
        current = run.parent_run_id if run is not None else None


class RunScopedIOManager(ConfigurableIOManager):
    """Pickled asset values at `<base_dir>/<run id>/<asset key>` (a folder or an object-store URL; written whole)."""

    base_dir: str

    def _place(self, run_id: str, key: AssetKey) -> Location:
        return Location(self.base_dir).child(run_id, *key.path)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        place = self._place(context.run_id, context.asset_key)
        place.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        context.add_output_metadata({"stored_at": place.url})

    def load_input(self, context: InputContext) -> Any:
        key, instance = context.asset_key, context.instance
        for run_id in run_and_ancestors(instance, context.step_context.run_id):
            if (place := self._place(run_id, key)).exists():
                return _load(place)
        # Newest first, the latest materialisation stored under this base_dir (runs of the same instance
        # may have written to another workspace).
        for record in instance.fetch_materializations(key, limit=_LATEST_RUNS).records:
            if (place := self._place(record.run_id, key)).exists():
                return _load(place)
        raise FileNotFoundError(
            f"no stored value of {key.to_user_string()} for run {context.step_context.run_id} or its ancestors "
            f"under {self.base_dir}: materialise {key.to_user_string()} first"
        )


def _load(place: Location) -> Any:
    """A value this IO manager wrote (the pipeline's own files, as with Dagster's filesystem IO manager)."""
    return pickle.loads(place.read_bytes())
