"""Content fingerprints and code identity used to trace models and indexes back to their inputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ampere.lineage.hashing import content_hash

CODE_ROOT = Path(__file__).resolve().parent.parent
DIRTY = "+dirty."
CODE_PATHS = ("ampere", "orchestration", "pyproject.toml")  # what runs; the same as dvc.yaml's code deps


def folder_fingerprint(folder: Path) -> str:
    """The content hash of a folder's tree (16 hex chars)."""
    return content_hash(folder, "tree", 16)


def git_commit(repo: Path) -> str:
    """HEAD commit of the git repository at `repo`, or "unknown" outside git."""
    result = _git(repo, "rev-parse", "HEAD")
    return result.stdout.decode().strip() if result.returncode == 0 else "unknown"


def code_version(repo: Path = CODE_ROOT) -> str:
    """The code's commit; `<commit>+dirty.<12 hex>` when its code (`CODE_PATHS`) differs from it
    (sha256 of `git diff HEAD` and of every untracked, non-ignored file there); "unknown" outside
    git. Records of runs beside the code (dvc.lock, the figures of README.md and docs/) do not make it dirty."""
    commit = git_commit(repo)
    if commit == "unknown":
        return commit
    paths = [path for path in CODE_PATHS if (repo / path).exists()]
    diff = _git(repo, "diff", "HEAD", "--binary", "--", *paths).stdout
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "-z", "--", *paths).stdout.split(b"\0")
    if not diff and untracked == [b""]:
        return commit
    names = sorted(name for name in untracked if name)
    state = diff + b"".join(b"\0" + name + b"\0" + _blob(repo / name.decode()) for name in names)
    return commit + DIRTY + content_hash(state, "bytes", 12)


def _blob(path: Path) -> bytes:
    """What git would store for an untracked entry: a symlink's target, else the file's digest."""
    return os.readlink(path).encode() if path.is_symlink() else bytes.fromhex(content_hash(path, "file"))


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True)
