"""A pipeline run whose steps share no local disk (issue 28): every step in a process of its own with an empty
working directory, TMPDIR and HOME (the `isolated` executor: what a cluster's step pods get), the workspace on
a real S3 server (SeaweedFS), Dagster, MLflow and the summary cache on a real PostgreSQL. It succeeds with the
local run's metrics on the same data and seed, writes no file outside the steps' and the run worker's own
scratch folders, and `ampere serve` serves its index from the object store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests
from conftest import running_mlflow_server

from ampere.catalogue.naming import Catalogue
from ampere.data.format import SplitFractions
from ampere.data.synth import generate
from ampere.retrieval.index_store import open_index_store
from ampere.settings import PROJECT_FOLDER
from ampere.storage import Location
from orchestration.instance import POSTGRES_URL_ENV

BIN = Path(sys.executable).parent
FRACTIONS = SplitFractions(val_fraction=0.3, test_fraction=0.3)
PIPELINE = ["pipeline", "--train", "steps=4", "--train", "batch_size=3", "--train", "eval_every=2"]


def _files(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under ``root``, but those under ``skip``."""
    found = {}
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if Path(folder, name) not in skip]
        for name in names:
            path = Path(folder, name)
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue
            found[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return found


def _written(before: dict, after: dict) -> list[str]:
    return sorted(path for path, stamp in after.items() if before.get(path) != stamp)


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path, postgres):
    """A tracking server of its own (another machine for the run: its folder is not checked)."""
    with running_mlflow_server(tmp_path / "mlflow-server", postgres(f"mlflow_{uuid.uuid4().hex[:8]}")) as server:
        yield server


@pytest.mark.timeout(900)  # two pipeline runs, one of them a process per step
def test_a_run_whose_steps_share_no_disk_matches_the_local_run(tmp_path, postgres, s3_server, s3_env, mlflow_server):
    dataset = generate(tmp_path / "data", products=7, seed=5, clip_frames=8, fractions=FRACTIONS)
    base = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "AMPERE_", "DAGSTER_"))}
    base["PYTHONDONTWRITEBYTECODE"] = "1"  # the checked folders hold the project's code: no .pyc written beside it

    local_home = tmp_path / "local"
    _run([str(BIN / "ampere"), "--home", str(local_home), *PIPELINE, "--dataset", str(dataset)], base, tmp_path)
    local = json.loads((local_home / "workspace" / "metrics.json").read_text())

    worker, steps = tmp_path / "run-worker", tmp_path / "steps"  # the run's pod, and its step pods' disks
    for folder in (worker / "work", worker / "tmp", worker / "home", steps):
        folder.mkdir(parents=True)
    workspace = f"s3://{s3_server['bucket']}/{uuid.uuid4().hex[:10]}/workspace"
    home = worker / "ampere-home"  # the instance's dagster.yaml: a cluster's config map
    env = {
        **base,
        **s3_server["env"],
        "HOME": str(worker / "home"),
        "TMPDIR": str(worker / "tmp"),
        "AMPERE_HOME": str(home),
        "AMPERE_WORKSPACE": workspace,
        "AMPERE_SUMMARY_CACHE": postgres(f"cache_{uuid.uuid4().hex[:8]}"),
        "AMPERE_DAGSTER_EXECUTOR": "isolated",
        "AMPERE_STEP_SCRATCH": str(steps),
        POSTGRES_URL_ENV: postgres(f"dagster_{uuid.uuid4().hex[:8]}").replace("postgresql://", "postgresql+psycopg2://"),
        "MLFLOW_TRACKING_URI": mlflow_server["uri"],
    }
    # Not checked: each step's own folders, the run worker's own working directory, TMPDIR and HOME, and
    # the MLflow server's folder (another machine). Everything else under the test's folder (the dataset,
    # the home) and the project's folder is.
    own = (steps, worker / "work", worker / "tmp", worker / "home", tmp_path / "mlflow-server")
    checked = (tmp_path, PROJECT_FOLDER)
    before = {root: _files(root, own) for root in checked}
    temp_before = set(os.listdir(tempfile.gettempdir()))
    output = _run([str(BIN / "ampere"), *PIPELINE, "--dataset", str(dataset)], env, worker / "work")
    written = [path for root in checked for path in _written(before[root], _files(root, own))]
    # The one file outside: the instance config `ampere` writes before the run (a cluster mounts it).
    assert written == [str(home / "dagster_home" / "postgres" / "dagster.yaml")], written[:20]
    new_temp = sorted(set(os.listdir(tempfile.gettempdir())) - temp_before)
    assert not [name for name in new_temp if not name.startswith("pytest-")], new_temp

    [run] = steps.iterdir()  # one folder per step of the run, each step's compute logs on its own disk
    assert {"raw_items", "backbone_features", "trained_encoder", "embeddings", "faiss_index"} <= {p.name for p in run.iterdir()}
    assert (run / "trained_encoder" / "work" / "dagster" / "logs").is_dir() and "mR1" in output
    cluster = json.loads(Location(workspace).child("metrics.json").read_bytes())
    assert cluster == pytest.approx(local, abs=1e-9)

    index_store = Catalogue.of(dataset, home / "data").index_store(workspace)
    store = open_index_store(index_store)
    served = store.current()
    assert served is not None and store.is_published(served)
    port = _free_port()
    serve_env = {**env, "AMPERE_MIRROR": str(worker / "tmp" / "serve-mirror")}
    command = [str(BIN / "ampere"), "serve", "--port", str(port), "--store", index_store]
    command += ["--cache", env["AMPERE_SUMMARY_CACHE"]]
    server = subprocess.Popen(command, env=serve_env, cwd=worker / "work", stdout=subprocess.DEVNULL,
                              stderr=(worker / "serve.log").open("w"), start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                if requests.get(url + "/health", timeout=60).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None, (worker / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        assert requests.get(url + "/health", timeout=60).json()["index_id"] == served
        page = json.loads((dataset / "items.jsonl").read_text().splitlines()[0])["item_id"]
        response = requests.post(url + "/search", json={"item_id": page, "k": 3}, timeout=60)
        assert response.status_code == 200, response.text
        assert all(response.json()["results"][domain] for domain in ("short", "live"))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
