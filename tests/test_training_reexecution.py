"""Through Dagster: a pipeline run killed (SIGKILL) during training, with the project's pools, is
found dead by the next `ampere pipeline` (marked failed, its pool slot freed) with no help; re-executed
from failure, it resumes its training from the checkpoint and continues the same MLflow run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from ampere.data.format import SplitFractions
from ampere.data.synth import generate
from ampere.training.checkpoint import latest_checkpoint, load_checkpoint
from mlflow import MlflowClient
from orchestration.instance import BASE as PROJECT_DAGSTER_YAML

STEPS, EVAL_EVERY = 24, 2


@pytest.fixture()
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh instance with the project's settings (its pools: one `accelerator` slot)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def test_a_killed_training_resumes_when_its_run_is_reexecuted(tmp_path: Path, dagster_home: Path) -> None:
    dataset = generate(tmp_path / "data", products=7, seed=3, clip_frames=4, fractions=SplitFractions(0.3, 0.3))
    out, mlflow_db = tmp_path / "out", f"sqlite:///{tmp_path}/mlflow.db"
    command = [
        str(Path(sys.executable).parent / "ampere"),
        *("pipeline", "--dataset", str(dataset), "--out", str(out), "--text-source", "none"),
        *("--tracking-uri", mlflow_db, "--artifact-root", str(tmp_path / "artifacts")),
        *("--train", f"steps={STEPS}", "--train", f"eval_every={EVAL_EVERY}", "--train", "patience=0"),
        *("--train", "batch_size=3"),
    ]
    env = {**os.environ, "AMPERE_HOME": str(dagster_home.parent)}
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not list((out / "checkpoints").glob("*/step-*.pt")):
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no training checkpoint within 600 s"
                time.sleep(0.05)
            os.killpg(first.pid, signal.SIGKILL)  # as an out-of-memory kill or a lost machine would
        finally:
            first.wait()
    [folder] = list((out / "checkpoints").iterdir())
    killed_at = load_checkpoint(latest_checkpoint(folder))["steps_done"]
    assert EVAL_EVERY <= killed_at < STEPS

    instance = DagsterInstance.get()
    [run] = instance.get_runs()
    assert folder.name == run.run_id  # checkpoints are addressed by the root run
    assert run.status == DagsterRunStatus.STARTED  # nothing marked it: the process was killed
    held = instance.event_log_storage.get_concurrency_info("accelerator").claimed_slots
    assert [slot.run_id for slot in held] == [run.run_id]  # and it still holds the training slot

    again = subprocess.run(  # no other option: the run's recorded settings name its dataset, folders and MLflow
        [*command[:1], "pipeline", "--reexecute", run.run_id],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"run {run.run_id}: its process died; marked failed and its pool slots freed" in again.stdout
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    assert not instance.event_log_storage.get_concurrency_info("accelerator").claimed_slots
    [result] = [r for r in instance.get_runs() if r.run_id != run.run_id]
    rerun = instance.get_run_by_id(result.run_id)
    assert rerun.root_run_id == run.run_id and rerun.parent_run_id == run.run_id
    # Only the steps after the last finished one ran again: raw data, summaries and features were reused.
    logs = instance.all_logs(result.run_id)
    steps = {event.step_key for event in logs if event.dagster_event and event.dagster_event.is_step_start}
    assert "trained_encoder" in steps and "backbone_features" not in steps and "raw_items" not in steps

    metadata = instance.get_latest_materialization_event(AssetKey("trained_encoder")).asset_materialization.metadata
    assert metadata["resumed"].value is True and metadata["steps_done"].value == STEPS
    history = load_checkpoint(latest_checkpoint(folder))["history"]
    assert [row["step"] for row in history] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))

    client = MlflowClient(tracking_uri=mlflow_db)
    run_id = metadata["mlflow_run_id"].value
    mlflow_run = client.get_run(run_id)
    assert mlflow_run.data.tags["dagster.run_id"] == run.run_id  # the run the killed attempt created...
    assert mlflow_run.data.tags["resumed_by_dagster_run"] == result.run_id  # ...continued by the re-execution
    curve = client.get_metric_history(run_id, "curve/val_mR1")
    assert sorted(m.step for m in curve) == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))  # one curve, no gap
    assert mlflow_run.info.status == "FINISHED"


def test_a_step_waiting_for_a_slot_names_its_holder_and_sigterm_stops_it_cleanly(tmp_path: Path, dagster_home: Path) -> None:
    """Another run holds the one `accelerator` slot: `ampere pipeline` says which run holds it while
    training waits, and SIGTERM ends the waiting run as failed or canceled, its claims released."""
    dataset = generate(tmp_path / "data", products=7, seed=3, clip_frames=4, fractions=SplitFractions(0.3, 0.3))
    instance = DagsterInstance.get()
    holder = "11111111-2222-3333-4444-555555555555"
    instance.event_log_storage.initialize_concurrency_limit_to_default("accelerator")  # the project's limit: 1
    assert instance.event_log_storage.claim_concurrency_slot("accelerator", holder, "trained_encoder").is_claimed
    command = [
        str(Path(sys.executable).parent / "ampere"),
        *("pipeline", "--dataset", str(dataset), "--out", str(tmp_path / "out"), "--text-source", "none"),
        *("--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--artifact-root", str(tmp_path / "artifacts")),
    ]
    env = {**os.environ, "AMPERE_HOME": str(dagster_home.parent), "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "waiting.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while f"waits for pool 'accelerator', held by run {holder} (step trained_encoder)" not in log_path.read_text():
                assert process.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no message about the held slot within 600 s"
                time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=120) != 0
        finally:
            process.kill()
    [run] = instance.get_runs()
    assert run.status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED), log_path.read_text()[-3000:]
    info = instance.event_log_storage.get_concurrency_info("accelerator")
    assert [slot.run_id for slot in info.claimed_slots] == [holder]
    assert not [step for step in info.pending_steps if step.run_id == run.run_id]
