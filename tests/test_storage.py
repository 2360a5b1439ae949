"""Workspace places by URL (ampere.storage) on a local folder and on a real S3 server (SeaweedFS), and a DVC
remote on that server."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ampere.storage import ConditionFailed, Location, Pointer

BIN = Path(sys.executable).parent


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path, monkeypatch) -> Location:
    """An empty folder of the workspace: local, or a prefix in a new bucket of the suite's S3 server."""
    monkeypatch.setenv("AMPERE_MIRROR", str(tmp_path / "mirror"))
    if request.param == "local":
        return Location(tmp_path / "workspace")
    request.getfixturevalue("s3_env")
    bucket = request.getfixturevalue("s3_server")["bucket"]
    return Location(f"s3://{bucket}/{uuid.uuid4().hex[:10]}/workspace")


def test_files_are_written_whole_and_read_back(place):
    target = place.child("runs", "r1", "metrics.json")
    assert not target.exists()
    with pytest.raises(FileNotFoundError):
        target.read_bytes()
    target.write_text('{"mR1": 1}')
    target.write_text('{"mR1": 2}')
    assert target.read_text() == '{"mR1": 2}' and place.child("runs", "r1").names() == ["metrics.json"]


def test_a_create_loses_to_an_existing_file_and_a_replace_to_a_newer_version(place):
    pointer = place / "CURRENT"
    pointer.create(b"first")
    with pytest.raises(ConditionFailed):
        pointer.create(b"second")
    seen = pointer.etag()
    pointer.replace(b"third", seen)
    with pytest.raises(ConditionFailed):
        pointer.replace(b"fourth", seen)  # the version read is gone
    assert pointer.read_bytes() == b"third"


def test_a_folder_pushed_from_one_mirror_is_pulled_whole_into_another(place, tmp_path, monkeypatch):
    folder = place.child("features")
    written = folder.local()
    (written / "sub").mkdir(parents=True)
    (written / "frames.bin").write_bytes(b"\0" * 1000)
    (written / "sub" / "ids.npy").write_bytes(b"ids")
    (written / "manifest.json").write_text("{}")
    folder.push()
    monkeypatch.setenv("AMPERE_MIRROR", str(tmp_path / "other-host"))
    read = folder.pull()
    assert sorted(p.relative_to(read).as_posix() for p in read.rglob("*") if p.is_file()) == [
        "frames.bin", "manifest.json", "sub/ids.npy",
    ]  # fmt: skip
    assert (read / "frames.bin").read_bytes() == b"\0" * 1000
    assert place.is_local == (read == written)


def test_markers_are_uploaded_after_every_other_file(place, tmp_path, monkeypatch):
    """A reader that sees manifest.json sees the files it names: the manifest is the last object written."""
    if place.is_local:
        pytest.skip("a local folder is used in place")
    folder = place.child("index")
    for name in ("manifest.json", "a.faiss", "z.faiss"):
        (folder.local() / name).parent.mkdir(parents=True, exist_ok=True)
        (folder.local() / name).write_bytes(name.encode())
    order = []
    put_file = folder.fs.put_file
    def recorded(local, remote, **kwargs):
        order.append(Path(remote).name)
        return put_file(local, remote, **kwargs)

    monkeypatch.setattr(folder.fs, "put_file", recorded)
    folder.push()
    assert order[-1] == "manifest.json" and sorted(order) == ["a.faiss", "manifest.json", "z.faiss"]


def _increment(url: str, mirror: str, times: int, barrier) -> None:
    os.environ["AMPERE_MIRROR"] = mirror
    pointer = Pointer(Location(url))
    barrier.wait()
    for _ in range(times):
        pointer.update(lambda value: {"count": (value or {"count": 0})["count"] + 1})


def test_two_processes_moving_a_pointer_at_once_lose_no_move(place, tmp_path):
    """Compare-and-swap: each writer changes the version it read, so 2 x 25 increments make 50."""
    context = multiprocessing.get_context("spawn")
    url = (place / "CURRENT").url
    with context.Manager() as manager, context.Pool(2) as pool:
        barrier = manager.Barrier(2)
        pool.starmap(_increment, [(url, str(tmp_path / f"host-{i}"), 25, barrier) for i in range(2)])
    assert Pointer(place / "CURRENT").read() == {"count": 50}


def test_dvc_pushes_to_and_pulls_from_an_s3_remote(tmp_path, s3_server, s3_env, make_dvc_repo):
    """`dvc[s3]` on the suite's S3 server: a dataset pushed from one clone is pulled into another."""
    bucket = s3_server["bucket"]
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "items.jsonl").write_text('{"item_id": "a"}\n')
    repo = make_dvc_repo(tmp_path / "repo", dataset)
    dvc = lambda *args, cwd=repo: subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, check=True, capture_output=True, text=True)  # noqa: E731
    dvc("remote", "add", "-d", "store", f"s3://{bucket}/dvc-{uuid.uuid4().hex[:10]}")
    dvc("remote", "modify", "store", "endpointurl", s3_server["endpoint"])
    subprocess.run(["git", "commit", "-qam", "remote"], cwd=repo, check=True)
    dvc("push")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert not (clone / "data").exists()
    dvc("pull", cwd=clone)
    assert (clone / "data" / "items.jsonl").read_text() == '{"item_id": "a"}\n'


def test_publishing_over_an_earlier_runs_link_leaves_that_run_alone(tmp_path):
    """`features/features` links to the latest run's folder; the next publish replaces the link, never the
    folder it points to (paths are made absolute without following links)."""
    from orchestration.resources import WorkspaceResource

    workspace = WorkspaceResource(root=str(tmp_path))
    first = workspace.folder("runs", "a", "features", "features")
    (first / "ids").write_text("a")
    workspace.publish(first, "features", "features")
    second = workspace.folder("runs", "b", "features", "features")
    (second / "ids").write_text("b")
    workspace.publish(second, "features", "features")
    assert not first.is_symlink() and (first / "ids").read_text() == "a"
    assert (tmp_path / "features" / "features").resolve() == second
