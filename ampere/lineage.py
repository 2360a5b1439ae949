"""Content fingerprints and code identity used to trace models and indexes back to their inputs."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parent.parent
DIRTY = "+dirty."


def folder_fingerprint(folder: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order (16 hex chars)."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def git_commit(repo: Path) -> str:
    """HEAD commit of the git repository at `repo`, or "unknown" outside git."""
    result = _git(repo, "rev-parse", "HEAD")
    return result.stdout.decode().strip() if result.returncode == 0 else "unknown"


def code_version(repo: Path = CODE_ROOT) -> str:
    """The code's commit; `<commit>+dirty.<12 hex>` when the tree differs from it (sha256 of
    `git diff HEAD` and of every untracked, non-ignored file); "unknown" outside git."""
    commit = git_commit(repo)
    if commit == "unknown":
        return commit
    diff = _git(repo, "diff", "HEAD", "--binary").stdout
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "-z").stdout.split(b"\0")
    if not diff and untracked == [b""]:
        return commit
    digest = hashlib.sha256(diff)
    for name in sorted(n for n in untracked if n):
        digest.update(b"\0" + name + b"\0")
        digest.update(hashlib.sha256((repo / name.decode()).read_bytes()).digest())
    return commit + DIRTY + digest.hexdigest()[:12]


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True)
