"""Code and content versions (ampere.lineage.versions) and the one hashing helper."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ampere.lineage.hashing import content_hash
from ampere.lineage.versions import DIRTY, code_version, folder_fingerprint


def _repo(root: Path) -> str:
    run = lambda *cmd: subprocess.run(cmd, cwd=root, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "test@ampere.local")
    run("git", "config", "user.name", "test")
    (root / "ampere").mkdir()
    (root / "ampere" / "code.py").write_text("x = 1\n")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "code")
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()


def test_code_version_names_a_dirty_tree_by_a_hash_of_its_changes(tmp_path: Path) -> None:
    commit = _repo(tmp_path)
    assert code_version(tmp_path) == commit
    (tmp_path / "dvc.lock").write_text("a record beside the code\n")
    assert code_version(tmp_path) == commit  # not code
    (tmp_path / "ampere" / "code.py").write_text("x = 2\n")
    edited = code_version(tmp_path)
    assert edited.startswith(commit + DIRTY) and edited == code_version(tmp_path)
    (tmp_path / "ampere" / "notes.py").write_text("y = 1\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "ampere" / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with_untracked = code_version(tmp_path)
    assert with_untracked.startswith(commit + DIRTY) and with_untracked != edited
    (tmp_path / "ampere" / "code.py").write_text("x = 1\n")
    for name in ("notes.py", "link"):
        (tmp_path / "ampere" / name).unlink()
    (tmp_path / "elsewhere").rmdir()
    assert code_version(tmp_path) == commit


def test_tree_hash_sees_names_and_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_bytes(b"one")
    first = folder_fingerprint(tmp_path)
    assert len(first) == 16 and first == content_hash(tmp_path, "tree", 16)
    (tmp_path / "a" / "f.txt").rename(tmp_path / "a" / "g.txt")
    assert folder_fingerprint(tmp_path) != first
    assert content_hash(b"one", "bytes") == content_hash("one", "text") == content_hash(tmp_path / "a" / "g.txt", "file")
    assert content_hash({"b": 1, "a": [2]}, "json") == content_hash('{"a":[2],"b":1}', "text")
    with pytest.raises(ValueError, match="unknown hash mode"):
        content_hash("x", "nope")  # type: ignore[arg-type]
