"""Two `ampere pipeline` processes at the same time over two datasets (two data versions) in one home,
with Dagster on PostgreSQL and the PostgreSQL-backed MLflow server: each run ends with its own metrics,
embeddings and lineage, because every intermediate lives in its run's own folder; the two datasets
are two catalogues, so each promotes its own first champion and serves its own index, and the registry
is changed by one promotion at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import running_mlflow_server
from dagster import AssetKey, DagsterEventType, DagsterInstance

from ampere.catalogue.naming import Catalogue
from ampere.data.format import SplitFractions, read_items
from ampere.data.synth import generate
from ampere.retrieval.eval import evaluate
from mlflow import MlflowClient
from orchestration.instance import POSTGRES_URL_ENV
from orchestration.jobs import DATASET_TAG

FRACTIONS = SplitFractions(val_fraction=0.3, test_fraction=0.3)


@pytest.fixture
def mlflow_server(tmp_path, postgres):
    """Its own MLflow server (the session's registry is the end-to-end tests': these runs must not promote there)."""
    with running_mlflow_server(tmp_path / "mlflow", postgres("mlflow_concurrent")) as server:
        yield server


def test_two_runs_at_once_each_end_with_their_own_metrics_and_lineage(tmp_path, postgres, mlflow_server, monkeypatch):
    datasets = {}
    for name, products in (("a", 7), ("b", 8)):  # different items, so a mixed-up file shows
        datasets[name] = generate(tmp_path / f"data-{name}", products=products, seed=products, clip_frames=8, fractions=FRACTIONS)
    home = tmp_path / "home"
    dagster_url = postgres("dagster_concurrent").replace("postgresql://", "postgresql+psycopg2://")
    env = {**os.environ, "AMPERE_HOME": str(home), POSTGRES_URL_ENV: dagster_url, "MLFLOW_TRACKING_URI": mlflow_server["uri"]}
    env.pop("DAGSTER_HOME", None)
    command = [str(Path(sys.executable).parent / "ampere"), "pipeline", "--text-source", "raw"]
    command += ["--train", "steps=2", "--train", "eval_every=1"]
    processes = {
        name: subprocess.Popen(
            [*command, "--dataset", str(folder)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, folder in datasets.items()
    }
    outputs = {name: process.communicate(timeout=1500)[0] for name, process in processes.items()}
    for name, process in processes.items():
        assert process.returncode == 0, outputs[name][-4000:]

    monkeypatch.setenv(POSTGRES_URL_ENV, dagster_url)
    with DagsterInstance.from_config(str(home / "dagster_home" / "postgres")) as instance:
        runs = {run.tags[DATASET_TAG]: run for run in instance.get_runs()}
        assert set(runs) == {str(folder.resolve()) for folder in datasets.values()}
        stats = [instance.get_run_stats(run.run_id) for run in runs.values()]
        promotions = sorted(_promotion(instance, run.run_id) for run in runs.values())
    assert stats[0].start_time < stats[1].end_time and stats[1].start_time < stats[0].end_time  # they overlapped
    (_, first_end, first), (second_start, _, second) = promotions
    assert first_end <= second_start  # the `registry` pool: one promotion step at a time
    for decision in (first, second):  # neither saw the other catalogue's champion
        assert decision["previous_champion"] == "None" and decision["promoted"] == "True"
    assert first["registered_model"] != second["registered_model"]
    assert first["served_index"] != second["served_index"]

    client = MlflowClient(tracking_uri=mlflow_server["uri"], registry_uri=mlflow_server["uri"])
    versions = set()
    for name, folder in datasets.items():
        run_id = runs[str(folder.resolve())].run_id
        own = home / "workspace" / "runs" / run_id
        embedded = pd.read_parquet(own / "embeddings.parquet")
        items, problems = read_items(folder, FRACTIONS)
        assert not problems and sorted(embedded["item_id"]) == sorted(items["item_id"])
        metrics = json.loads((own / "metrics.json").read_text())
        vectors = np.stack(embedded["embedding"].to_numpy())
        columns = [list(embedded[column]) for column in ("product_id", "domain", "split")]
        recomputed = evaluate(vectors, *columns, split="test")
        assert recomputed["mR1"] == pytest.approx(metrics["mR1"])
        assert f"mR1 {metrics['val/mR1']:.1f}" in outputs[name]  # the CLI reported its own run's figures
        [training] = client.search_runs(
            [client.get_experiment_by_name("ampere").experiment_id], f"tags.`dagster.run_id` = '{run_id}'"
        )
        assert training.data.metrics["mR1"] == pytest.approx(metrics["mR1"])
        assert training.data.tags["lineage.dataset"] == str(folder.resolve())
        assert training.data.tags["lineage.data_version"].startswith("content:")
        catalogue = Catalogue.of(folder, home / "data")
        assert catalogue.name == training.data.tags["lineage.catalogue"]
        assert client.get_model_version_by_alias(catalogue.registered_model, "champion").run_id == training.info.run_id
        assert (catalogue.index_store(home / "workspace") / "CURRENT").exists()
        versions.add(training.data.tags["lineage.data_version"])
    assert len(versions) == 2


def _promotion(instance: DagsterInstance, run_id: str) -> tuple[float, float, dict[str, str]]:
    """Start and end time of a run's `champion_promotion` step, and its decision (the materialisation's metadata)."""
    steps = DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS
    entries = [e for e in instance.all_logs(run_id, of_type=set(steps)) if e.step_key == "champion_promotion"]
    times = {e.dagster_event_type: e.timestamp for e in entries}
    [record] = [
        e.asset_materialization
        for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        if e.asset_materialization.asset_key == AssetKey("champion_promotion")
    ]
    return times[steps[0]], times[steps[1]], {k: str(v.value) for k, v in record.metadata.items()}
