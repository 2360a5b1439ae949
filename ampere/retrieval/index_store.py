"""Index lifecycle over a root folder: immutable published indexes, an atomic CURRENT pointer, a hot-reloading reader.

Layout of ``root``::

    indexes/<index_id>/   published index folders: complete, manifest-verified, never modified
    .staging-<uuid>/      builds in progress, each flock-held by its publisher while it lives
    CURRENT               {"index_id", "previous", "swapped_at"}, replaced atomically (os.replace + fsync)
    HISTORY.jsonl         append-only log of publish / swap / rollback / gc events
    .lock                 flock that serialises writers (publish's rename, swap, rollback, gc)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ampere.lineage.hashing import content_hash
from ampere.retrieval.index import DomainIndex, load_index, verify_manifest
from ampere.storage import Location, is_remote

if TYPE_CHECKING:
    from ampere.retrieval.object_index_store import ObjectIndexStore

logger = logging.getLogger(__name__)

_INDEX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class IndexConflictError(ValueError):
    """An index id is already published with different content (published indexes are immutable)."""


class NoPreviousIndexError(RuntimeError):
    """rollback() found no previous index to return to."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "x"


def check_index_id(index_id: str) -> str:
    """``index_id`` when it is a valid index id (a ValueError otherwise)."""
    if not _INDEX_ID.fullmatch(index_id):
        raise ValueError(f"invalid index id {index_id!r}: letters, digits, '.', '_', '-' only")
    return index_id


def index_key(model_version: str, data_version: str) -> str:
    """The index id of a (model version, data version) pair: readable slugs plus a hash that keeps it unique."""
    digest = hashlib.blake2b(f"{model_version}\0{data_version}".encode(), digest_size=4).hexdigest()
    return f"m{_slug(model_version)}--d{_slug(data_version)}--{digest}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (so a rename publishes durable bytes)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        else:
            _fsync_dir(path)
    _fsync_dir(folder)


def _tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): content_hash(p, "file") for p in sorted(folder.rglob("*")) if p.is_file()}


class IndexStore:
    """Publishes immutable index folders under ``root`` and moves the CURRENT pointer between them."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        (self.root / "indexes").mkdir(parents=True, exist_ok=True)

    def path(self, index_id: str) -> Path:
        """The folder of a published (or to be published) index id."""
        return self.root / "indexes" / check_index_id(index_id)

    def where(self, index_id: str) -> str:
        """Where a published index lives, for lineage and messages: its folder."""
        return str(self.path(index_id))

    def is_published(self, index_id: str) -> bool:
        """Whether ``index_id`` is published."""
        return self.path(index_id).is_dir()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield

    def publish(self, build: str | Path | Callable[[Path], object], index_id: str) -> Path:
        """Publish an index folder as ``indexes/<index_id>`` and return its path.

        ``build`` is a finished folder (copied) or a callable that writes the index into the folder
        it is given. Either way the files land in ``.staging-<uuid>`` first, are checked against
        their manifest.json and fsynced, and only then renamed into place. Publishing an existing
        id is a no-op when the bytes are identical and an IndexConflictError otherwise.
        """
        target = self.path(index_id)
        with self._locked():
            self._clean_staging()
            staging = self.root / f".staging-{uuid.uuid4().hex}"
            staging.mkdir()
            owner = os.open(staging, os.O_RDONLY)
            fcntl.flock(owner, fcntl.LOCK_EX)  # marks the staging folder live until this process closes it or dies
        try:
            if callable(build):
                build(staging)
            else:
                shutil.copytree(build, staging, dirs_exist_ok=True)
            verify_manifest(staging)
            _fsync_tree(staging)
            with self._locked():
                if target.exists():
                    if _tree_digest(target) != _tree_digest(staging):
                        raise IndexConflictError(f"index {index_id!r} is already published with different content")
                    return target
                os.rename(staging, target)
                _fsync_dir(target.parent)
                self._log({"event": "publish", "index_id": index_id})
            return target
        finally:
            if staging.exists():
                shutil.rmtree(staging)
            os.close(owner)

    def clean_staging(self) -> list[str]:
        """Remove staging and trash folders (and pointer temp files) left by dead processes; returns the folders' names."""
        with self._locked():
            return self._clean_staging()

    def _clean_staging(self) -> list[str]:
        for tmp in self.root.glob(".CURRENT.*.tmp"):
            tmp.unlink()  # pointer writes run under the lock, so any left now were abandoned
        removed = []
        for folder in sorted(self.root.glob(".staging-*")) + sorted(self.root.glob(".trash-*")):
            fd = os.open(folder, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live publisher holds it
            finally:
                os.close(fd)
            shutil.rmtree(folder)
            removed.append(folder.name)
        return removed

    def _pointer(self) -> dict | None:
        try:
            return json.loads((self.root / "CURRENT").read_text())
        except FileNotFoundError:
            return None

    def current(self) -> str | None:
        """The current index id, or None before the first swap."""
        pointer = self._pointer()
        return pointer["index_id"] if pointer else None

    def about(self, index_id: str) -> dict[str, str]:
        """The "about" of a published index's manifest: its model and data versions (and a refresh's counts)."""
        return json.loads((self.path(index_id) / "manifest.json").read_text()).get("about", {})

    def swap(self, index_id: str) -> None:
        """Point CURRENT at a published index after verifying its files; the old one becomes previous."""
        target = self.path(index_id)
        with self._locked():
            if not target.is_dir():
                raise FileNotFoundError(f"index {index_id!r} is not published in {self.root}")
            verify_manifest(target)
            current = self.current()
            if current != index_id:
                self._set_current(index_id, current, {"event": "swap"})

    def rollback(self) -> str:
        """Point CURRENT back at the previous index and return its id; the rolled-back one is not kept as previous."""
        with self._locked():
            pointer = self._pointer()
            if pointer is None or pointer["previous"] is None:
                current = pointer["index_id"] if pointer else None
                raise NoPreviousIndexError(f"{self.root}: no previous index to roll back to (current: {current})")
            previous = pointer["previous"]
            verify_manifest(self.path(previous))
            self._set_current(previous, None, {"event": "rollback", "rolled_back_from": pointer["index_id"]})
            return previous

    def _set_current(self, index_id: str, previous: str | None, event: dict) -> None:
        pointer = {"index_id": index_id, "previous": previous, "swapped_at": _now()}
        tmp = self.root / f".CURRENT.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as f:
            json.dump(pointer, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.root / "CURRENT")
        _fsync_dir(self.root)
        self._log({**event, **pointer})

    def _log(self, event: dict) -> None:
        with open(self.root / "HISTORY.jsonl", "a") as f:
            f.write(json.dumps({"at": _now(), **event}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def history(self) -> list[dict]:
        """Every logged event, oldest first (an unfinished last line from a crash is skipped)."""
        try:
            text = (self.root / "HISTORY.jsonl").read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]

    def gc(self, keep: int) -> list[str]:
        """Remove published indexes except current, previous and the ``keep`` most recently published; returns ids removed."""
        with self._locked():
            pointer = self._pointer() or {}
            published = [e["index_id"] for e in self.history() if e["event"] == "publish"]
            protected = {pointer.get("index_id"), pointer.get("previous"), *list(dict.fromkeys(reversed(published)))[:keep]}
            removed = []
            for folder in sorted((self.root / "indexes").iterdir()):
                if folder.name not in protected:
                    trash = self.root / f".trash-{uuid.uuid4().hex}"
                    os.rename(folder, trash)  # leaves indexes/ in one step; the delete happens outside it
                    shutil.rmtree(trash)
                    removed.append(folder.name)
            if removed:
                self._log({"event": "gc", "removed": removed})
            return removed


@dataclass(frozen=True)
class IndexSnapshot:
    """One complete published index, as loaded: its id, its manifest's "about" (model and data
    versions) and its domain galleries. A request that holds one sees one index throughout."""

    index_id: str
    about: dict[str, str]
    domains: dict[str, DomainIndex]

    def search(self, domain: str, queries: np.ndarray, k: int) -> list[list[tuple[str, str, float]]]:
        """Top-k (item_id, product_id, score) per query row from the ``domain`` gallery."""
        if domain not in self.domains:
            raise KeyError(f"index {self.index_id} has no {domain!r} gallery (has {sorted(self.domains)})")
        return self.domains[domain].search(queries, k)

    def find(self, item_id: str) -> tuple[str, np.ndarray] | None:
        """(domain, indexed vector) of an item of any gallery, or None when the index does not hold it."""
        for domain, gallery in self.domains.items():
            vector = gallery.vector(item_id)
            if vector is not None:
                return domain, vector
        return None


class IndexReader:
    """Searches the current index of a store and follows CURRENT as it moves.

    Each call re-reads the small CURRENT file; when it names another index, one thread loads and
    sha256-verifies every domain of that index while the others keep searching the old one, and
    the in-memory handle switches only once all of it is open: a search sees one complete index,
    never a mix. If the new target cannot be loaded, the reader logs it and keeps serving the old.
    """

    def __init__(self, root: str | Path, retry_s: float = 5.0):
        self.root = Location(root)  # a folder, or an object store's prefix (the index is downloaded to open it)
        self.retry_s = retry_s  # a CURRENT that failed to open is tried again after this long
        self._loading = threading.Lock()
        self._raw: bytes | None = None
        self._snapshot: IndexSnapshot | None = None
        self._failed: tuple[bytes, float] | None = None  # (pointer, when) of the last failed open

    def _pointer(self) -> bytes | None:
        try:
            return (self.root / "CURRENT").read_bytes()
        except FileNotFoundError:
            return None

    def _due(self, pointer: bytes | None) -> bool:
        """Whether ``pointer`` should be opened now: it moved, and it did not just fail to open."""
        if pointer == self._raw:
            return False
        failed = self._failed
        return failed is None or failed[0] != pointer or time.monotonic() - failed[1] >= self.retry_s

    def snapshot(self) -> IndexSnapshot:
        """The current index (loaded again if CURRENT moved since the last call)."""
        if self._due(self._pointer()) and self._loading.acquire(blocking=self._snapshot is None):
            try:
                self._refresh()
            finally:
                self._loading.release()
        snapshot = self._snapshot
        if snapshot is None:
            raise LookupError(f"{self.root.url}: no current index (no CURRENT file)")
        return snapshot

    def _refresh(self) -> None:
        raw = self._pointer()  # read again under the lock, so the newest pointer wins
        if raw is None or raw == self._raw:
            return
        try:
            snapshot = self._open(json.loads(raw)["index_id"])
        except (OSError, ValueError, KeyError) as exc:
            if self._snapshot is None:
                raise
            self._failed = (raw, time.monotonic())
            logger.warning(
                "keeping index %s: cannot open the current one (tried again in %.0f s): %s",
                self._snapshot.index_id, self.retry_s, exc,
            )  # fmt: skip
            return
        self._snapshot, self._raw, self._failed = snapshot, raw, None

    def _open(self, index_id: str) -> IndexSnapshot:
        if self._snapshot is not None and self._snapshot.index_id == index_id:
            return self._snapshot
        folder = self.root.child("indexes", check_index_id(index_id)).pull()
        manifest = json.loads((folder / "manifest.json").read_text())
        domains = {domain: load_index(folder, domain) for domain in manifest["domains"]}
        return IndexSnapshot(index_id, manifest.get("about", {}), domains)

    @property
    def index_id(self) -> str:
        """The id of the index the next search would use."""
        return self.snapshot().index_id

    def search(self, domain: str, queries: np.ndarray, k: int) -> list[list[tuple[str, str, float]]]:
        """Top-k (item_id, product_id, score) per query row from the current index's ``domain`` gallery."""
        return self.snapshot().search(domain, queries, k)


def open_index_store(root: str | Path) -> IndexStore | ObjectIndexStore:
    """The index store at ``root``: a local folder (`IndexStore`) or an object-store URL (`ObjectIndexStore`)."""
    if is_remote(root):
        from ampere.retrieval.object_index_store import ObjectIndexStore

        return ObjectIndexStore(str(root))
    return IndexStore(root)
