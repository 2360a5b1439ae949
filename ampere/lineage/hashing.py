"""The one hashing helper: the hex digest (sha256 unless told; md5 for DVC's objects) of bytes, a
text, a JSON value (canonical form), a file, or a folder tree. Every fingerprint, cache key and
content version in AMPere is one of these modes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

HashMode = Literal["bytes", "text", "json", "file", "tree"]
CHUNK = 1 << 20


def canonical_json(value: object) -> str:
    """Deterministic JSON text: sorted keys, compact separators, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any, mode: HashMode, length: int | None = None, algorithm: str = "sha256") -> str:
    """Hex digest of `value` read as `mode`, cut to `length` characters when given.

    `tree`: every file under the folder in sorted order, as its relative POSIX path, a NUL byte and
    the digest of its bytes, so renaming a file changes the hash as editing it does.
    """
    digest = hashlib.new(algorithm)
    if mode == "bytes":
        digest.update(value)
    elif mode == "text":
        digest.update(value.encode("utf-8"))
    elif mode == "json":
        digest.update(canonical_json(value).encode("utf-8"))
    elif mode == "file":
        _update_with_file(digest, Path(value))
    elif mode == "tree":
        root = Path(value)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
            digest.update(bytes.fromhex(content_hash(path, "file", algorithm=algorithm)))
    else:
        raise ValueError(f"unknown hash mode {mode!r}")
    text = digest.hexdigest()
    return text[:length] if length else text


def _update_with_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
