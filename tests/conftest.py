"""Shared fixtures: a real MLflow server on 127.0.0.1 and a real DVC repository in a temp folder."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
BIN = Path(sys.executable).parent


@pytest.fixture()
def one_thread():
    """Tiny models train far faster on one intra-op thread, above all on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` (sqlite store, local artifacts) on a free loopback port; stopped after the session."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--default-artifact-root",
            str(root / "artifacts"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError as error:
                if process.poll() is not None:
                    raise RuntimeError("mlflow server exited at start-up") from error
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not answer within 60 s")
        yield {"uri": url, "artifacts": str(root / "artifacts")}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def make_dvc_repo():
    """Factory: `make_dvc_repo(repo, dataset)` builds a real git + DVC repository."""
    return _make_dvc_repo


def _make_dvc_repo(repo: Path, dataset: Path) -> Path:
    """A git + DVC repository at `repo` whose `data` folder (a copy of `dataset`) is tracked by data.dvc."""
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copytree(dataset, repo / "data")
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "test@ampere.local")
    run("git", "config", "user.name", "test")
    run(str(BIN / "dvc"), "init", "-q")
    run(str(BIN / "dvc"), "config", "core.analytics", "false")
    run(str(BIN / "dvc"), "add", "-q", "data")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "data")
    return repo
