"""Runs end in a true state: a failed step fails its MLflow runs, a run whose process died is marked
failed and frees its pool slots, a step waiting for a pool slot says which run holds it, and a
signal stops a waiting run cleanly."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import DagsterInstance, DagsterRunStatus, HookContext, RunsFilter, failure_hook
from dagster._utils.interrupts import check_captured_interrupt

from mlflow import MlflowClient
from orchestration.resources import MlflowResource

HOST_TAG, PID_TAG = "ampere/host", "ampere/pid"
GRACE_S = 5.0
LIVE_STATUSES = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def process_tags() -> dict[str, str]:
    """Tags naming the process that executes a run in process (`ampere pipeline`), for liveness checks."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def fail_mlflow_runs(client: MlflowClient, dagster_run_id: str, reason: str, step: str) -> list[str]:
    """Marks FAILED the RUNNING MLflow runs that the Dagster run opened or resumed, in any experiment
    (training runs, ablation runs), naming the step and reason."""
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    failed = []
    for tag in ("dagster.run_id", "resumed_by_dagster_run"):
        query = f"tags.`{tag}` = '{dagster_run_id}' and attributes.status = 'RUNNING'"
        for run in client.search_runs(experiments, filter_string=query):
            client.set_tag(run.info.run_id, "failed_step", step)
            client.set_tag(run.info.run_id, "failure", reason[:4000])
            client.set_terminated(run.info.run_id, "FAILED")
            failed.append(run.info.run_id)
    return failed


@failure_hook(required_resource_keys={"mlflow"})
def mlflow_runs_fail_with_their_step(context: HookContext) -> None:
    """A step failure after an MLflow run was opened marks that run FAILED with the step and error."""
    mlflow: MlflowResource = context.resources.mlflow
    error = context.op_exception
    reason = f"{type(error).__name__}: {error}" if error is not None else "step failed"
    for run_id in fail_mlflow_runs(mlflow.client(), context.run_id, reason, context.step_key):
        context.log.warning(f"MLflow run {run_id} marked FAILED (step {context.step_key})")


def reap_dead_runs(instance: DagsterInstance, mlflow: MlflowResource) -> list[str]:
    """Runs of this host whose executing process is gone: marked failed (Dagster and MLflow) and
    their pool slots freed, so the next run does not wait for them. Returns their ids."""
    host = socket.gethostname()
    reaped = []
    for run in instance.get_runs(filters=RunsFilter(statuses=LIVE_STATUSES, tags={HOST_TAG: host})):
        pid = run.tags.get(PID_TAG)
        if pid is None or _alive(int(pid)):
            continue
        reason = f"process {pid} on {host} died while the run was {run.status.value}"
        instance.report_run_failed(run, message=reason)
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        fail_mlflow_runs(mlflow.client(), run.run_id, reason, "process died")
        reaped.append(run.run_id)
    return reaped


def slot_holders(instance: DagsterInstance) -> list[str]:
    """One line per step waiting for a pool slot: the pool and the runs (steps) that hold it."""
    lines = []
    for pool in sorted(instance.event_log_storage.get_concurrency_keys()):
        info = instance.event_log_storage.get_concurrency_info(pool)
        holders = ", ".join(f"run {slot.run_id} (step {slot.step_key})" for slot in info.claimed_slots)
        for pending in info.pending_steps:
            if pending.assigned_timestamp is None:
                lines.append(f"step {pending.step_key} of run {pending.run_id} waits for pool {pool!r}, held by {holders}")
    return lines


@contextmanager
def watching_own_run(instance: DagsterInstance, mlflow: MlflowResource, every_s: float = 10.0) -> Iterator[None]:
    """While this process executes a run in process: prints (once each) which run holds a pool slot
    a step waits for, and ends the run cleanly on SIGTERM/SIGINT while it waits.

    Dagster's in-process executor only records a signal while no step code runs and never looks at
    it while steps wait for slots; a signal still unheeded after `GRACE_S` is handled here: the run
    is reported canceled, its claims and slots freed, its MLflow runs failed, and the process exits.
    """
    stop = threading.Event()
    said: set[str] = set()

    def watch() -> None:
        ticks, interrupted_for = 0, 0.0
        while not stop.wait(1.0):
            ticks += 1
            interrupted_for = interrupted_for + 1.0 if check_captured_interrupt() else 0.0
            if interrupted_for > GRACE_S:
                _cancel_own_runs(instance, mlflow)
                os._exit(128 + signal.SIGTERM)
            if ticks % every_s == 0:
                for line in slot_holders(instance):
                    if line not in said:
                        said.add(line)
                        print(line, flush=True)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _cancel_own_runs(instance: DagsterInstance, mlflow: MlflowResource) -> None:
    """Cancels the live runs this process executes and frees their claims (see `watching_own_run`).
    Claims are freed last, just before the process exits, so the waiting executor cannot renew them."""
    reason = "stopped by a signal while waiting for a pool slot"
    runs = instance.get_runs(filters=RunsFilter(statuses=LIVE_STATUSES, tags=process_tags()))
    for run in runs:
        fail_mlflow_runs(mlflow.client(), run.run_id, reason, "signal")
        instance.report_run_canceled(run, message=reason)
        print(f"run {run.run_id} canceled: {reason}", flush=True)
    for run in runs:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
