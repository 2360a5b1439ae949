"""Content fingerprints and code identity used to trace models and indexes back to their inputs."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def folder_fingerprint(folder: Path) -> str:
    """sha256 over every file's relative path and bytes, in sorted order (16 hex chars)."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def git_commit(repo: Path = Path(".")) -> str:
    """HEAD commit of the repository holding the code, or "unknown" outside git."""
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"
