"""One process per step, each in a scratch folder of its own: what `k8s_job_executor` does with pods, on one host.

Every step runs as `dagster api execute_step` (the command a step pod runs) in a new process whose working
directory, TMPDIR and HOME are empty folders of its own under ``scratch`` (Python writes no bytecode:
an image ships it compiled). Steps then share only what a cluster's pods share: the Dagster instance (PostgreSQL),
MLflow, the summary cache (PostgreSQL) and the workspace (an object store); a step that reads a local
file another step wrote fails here as it would on a cluster. Select it with
`AMPERE_DAGSTER_EXECUTOR=isolated` (scratch root: `AMPERE_STEP_SCRATCH`, else a new temporary folder).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from dagster import DagsterEvent, Field, InitExecutorContext, executor, multiple_process_executor_requirements
from dagster._core.definitions.executor_definition import get_retries_config
from dagster._core.events import EngineEventData
from dagster._core.execution.retries import RetryMode
from dagster._core.executor.base import Executor
from dagster._core.executor.step_delegating import (
    CheckStepHealthResult,
    StepDelegatingExecutor,
    StepHandler,
    StepHandlerContext,
)
from dagster._core.origin import get_python_environment_entry_point
from dagster._grpc.types import ExecuteStepArgs
from dagster._serdes import ConfigurableClassData

from ampere.settings import Settings


def step_folders(scratch: Path, run_id: str, step_key: str) -> dict[str, Path]:
    """The empty folders of one step's process: its working directory, TMPDIR and HOME."""
    root = scratch / run_id / step_key
    return {name: root / name for name in ("work", "tmp", "home")}


class IsolatedStepHandler(StepHandler):
    """Starts each step as its own `dagster api execute_step` process in its own scratch folders."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self._processes: dict[tuple[str, str], subprocess.Popen] = {}

    @property
    def name(self) -> str:
        return "IsolatedStepHandler"

    @staticmethod
    def _step_key(context: StepHandlerContext) -> str:
        [step_key] = context.execute_step_args.step_keys_to_execute or [None]
        assert step_key is not None, "a step process runs one step"
        return step_key

    def launch_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        step_key = self._step_key(step_handler_context)
        folders = step_folders(self.scratch, step_handler_context.execute_step_args.run_id, step_key)
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=False)
        args = _on_own_disk(step_handler_context.execute_step_args, folders["work"] / "dagster")
        env = {
            **os.environ,
            **{entry["name"]: entry["value"] for entry in args.get_command_env()},
            "TMPDIR": str(folders["tmp"]),
            "HOME": str(folders["home"]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "DAGSTER_RUN_STEP_KEY": step_key,
        }
        env.pop(Settings.env_var("mirror"), None)  # a step's mirror of the workspace lives in its own TMPDIR
        # `python -m dagster api execute_step` of the run's own interpreter (a pod's image puts `dagster` on PATH)
        command = list(args.get_command_args(skip_serialized_namedtuple=True))
        command = [*get_python_environment_entry_point(args.job_origin.executable_path), *command[command.index("api") :]]
        process = subprocess.Popen(command, cwd=folders["work"], env=env, start_new_session=True)
        self._processes[(args.run_id, step_key)] = process
        yield DagsterEvent.engine_event(
            step_handler_context.get_step_context(step_key),
            message=f"step process {process.pid} started in {folders['work']}",
            event_specific_data=EngineEventData(),
        )

    def check_step_health(self, step_handler_context: StepHandlerContext) -> CheckStepHealthResult:
        key = (step_handler_context.execute_step_args.run_id, self._step_key(step_handler_context))
        process = self._processes.get(key)
        if process is None:
            return CheckStepHealthResult.unhealthy(f"no process of step {key[1]} was started here")
        code = process.poll()
        if code not in (None, 0):
            return CheckStepHealthResult.unhealthy(f"the process of step {key[1]} exited with code {code}")
        return CheckStepHealthResult.healthy()

    def terminate_step(self, step_handler_context: StepHandlerContext) -> Iterator[DagsterEvent]:
        step_key = self._step_key(step_handler_context)
        process = self._processes.get((step_handler_context.execute_step_args.run_id, step_key))
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        yield DagsterEvent.engine_event(
            step_handler_context.get_step_context(step_key),
            message=f"step process of {step_key} terminated",
            event_specific_data=EngineEventData(),
        )


def _on_own_disk(args: ExecuteStepArgs, folder: Path) -> ExecuteStepArgs:
    """The step's arguments with the instance's local files (compute logs, local artifacts) in ``folder``: a
    pod's instance keeps them on the pod's own disk (a cluster ships step logs with e.g. dagster-aws's
    S3ComputeLogManager; the run's events, which the UI shows, are in PostgreSQL)."""
    assert args.instance_ref is not None, "a step process opens the run's instance"
    local = lambda module, name, sub: ConfigurableClassData(module, name, yaml.safe_dump({"base_dir": str(folder / sub)}))  # noqa: E731
    ref = args.instance_ref._replace(
        compute_logs_data=local("dagster._core.storage.local_compute_log_manager", "LocalComputeLogManager", "logs"),
        local_artifact_storage_data=local("dagster._core.storage.root", "LocalArtifactStorage", "storage"),
    )
    return ExecuteStepArgs(
        job_origin=args.job_origin,
        run_id=args.run_id,
        step_keys_to_execute=args.step_keys_to_execute,
        instance_ref=ref,
        retry_mode=args.retry_mode,
        known_state=args.known_state,
        should_verify_step=args.should_verify_step,
        print_serialized_events=args.print_serialized_events,
    )


@executor(
    name="isolated_process",
    config_schema={
        "retries": get_retries_config(),
        "max_concurrent": Field(int, is_required=False, description="Step processes at once (default: no limit)."),
    },
    requirements=multiple_process_executor_requirements(),
)
def isolated_process_executor(init_context: InitExecutorContext) -> Executor:
    """Runs each step in a process of its own with its own working directory, TMPDIR and HOME."""
    config = init_context.executor_config
    scratch = Path(Settings.resolve().step_scratch or tempfile.mkdtemp(prefix="ampere-steps-"))
    return StepDelegatingExecutor(
        IsolatedStepHandler(scratch),
        retries=RetryMode.from_config(config["retries"]),  # type: ignore[arg-type]
        max_concurrent=config.get("max_concurrent"),
    )
