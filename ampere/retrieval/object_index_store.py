"""The index store on an object store (`s3://…`): what `IndexStore` does with renames and flock, done with
whole-object writes, manifests written last and a compare-and-swap CURRENT, so that hosts sharing no disk
publish, swap and serve one store.

Layout under ``root`` (the same names as on a local disk)::

    indexes/<index_id>/...        published index files; manifest.json is uploaded last, so an index
                                  is published exactly when its manifest exists (and never changed after)
    CURRENT                       {"index_id", "previous", "swapped_at"}, changed only by a conditional
                                  write on the version read (ampere.storage.Pointer): two writers never both win
    HISTORY/<time>-<uuid>.json    one object per publish / swap / rollback / gc event
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ampere.retrieval.index import verify_manifest
from ampere.retrieval.index_store import IndexConflictError, NoPreviousIndexError, _tree_digest, check_index_id
from ampere.storage import Location, Pointer


def _now() -> str:
    return datetime.now(UTC).isoformat()


class ObjectIndexStore:
    """Publishes immutable index folders under an object-store ``root`` and moves its CURRENT pointer."""

    def __init__(self, root: str | Location):
        self.location = root if isinstance(root, Location) else Location(root)
        self.root = self.location.url
        self.pointer = Pointer(self.location / "CURRENT")

    def _index(self, index_id: str) -> Location:
        return self.location.child("indexes", check_index_id(index_id))

    def is_published(self, index_id: str) -> bool:
        """Whether ``index_id`` is published (its manifest, written last, exists)."""
        return (self._index(index_id) / "manifest.json").exists()

    def where(self, index_id: str) -> str:
        """Where a published index lives, for lineage and messages: its URL."""
        return self._index(index_id).url

    def published(self) -> list[str]:
        """The ids of the published indexes (an object store may keep a removed index's empty folder)."""
        return [index_id for index_id in (self.location / "indexes").names() if self.is_published(index_id)]

    def path(self, index_id: str) -> Path:
        """A local copy of a published index in this process's mirror (downloaded unless the mirror holds
        files that verify against the published manifest: indexes never change); a folder that does not
        exist when ``index_id`` is not published."""
        index = self._index(index_id)
        local = index.local()
        try:
            published = (index / "manifest.json").read_bytes()
        except FileNotFoundError:
            return local / ".not-published"
        with contextlib.suppress(OSError, KeyError, ValueError):
            if (local / "manifest.json").read_bytes() == published:
                verify_manifest(local)
                return local
        shutil.rmtree(local, ignore_errors=True)
        return index.pull()

    def publish(self, build: str | Path | Callable[[Path], object], index_id: str) -> str:
        """Publish an index folder as ``indexes/<index_id>`` (manifest last) and return its URL; an id already
        published is a no-op with identical bytes and an IndexConflictError otherwise."""
        index = self._index(index_id)
        with tempfile.TemporaryDirectory(prefix="ampere-index-") as scratch:
            staging = Path(scratch) / index_id
            if callable(build):
                staging.mkdir()
                build(staging)
            else:
                shutil.copytree(build, staging)
            verify_manifest(staging)
            if self.is_published(index_id):
                if _tree_digest(self.path(index_id)) != _tree_digest(staging):
                    raise IndexConflictError(f"index {index_id!r} is already published with different content")
                return index.url
            local = index.local()
            shutil.rmtree(local, ignore_errors=True)
            shutil.copytree(staging, local)
        index.push()
        self._log({"event": "publish", "index_id": index_id})
        return index.url

    def clean_staging(self) -> list[str]:
        """Nothing to clean: an upload that died left no manifest, and its id can be published again."""
        return []

    def _pointer(self) -> dict | None:
        return self.pointer.read()

    def current(self) -> str | None:
        """The current index id, or None before the first swap."""
        pointer = self.pointer.read()
        return pointer["index_id"] if pointer else None

    def about(self, index_id: str) -> dict[str, str]:
        """The "about" of a published index's manifest: its model and data versions (and a refresh's counts)."""
        return json.loads((self._index(index_id) / "manifest.json").read_bytes()).get("about", {})

    def swap(self, index_id: str) -> None:
        """Point CURRENT at a published index after verifying its files; the old one becomes previous."""
        if not self.is_published(index_id):
            raise FileNotFoundError(f"index {index_id!r} is not published in {self.root}")
        verify_manifest(self.path(index_id))
        done = {}

        def move(pointer: dict | None) -> dict | None:
            current = pointer["index_id"] if pointer else None
            if current == index_id:
                return None
            done.update(index_id=index_id, previous=current, swapped_at=_now())
            return dict(done)

        if self.pointer.update(move) is not None and done:
            self._log({"event": "swap", **done})

    def rollback(self) -> str:
        """Point CURRENT back at the previous index and return its id; the rolled-back one is not kept as previous."""
        done = {}

        def back(pointer: dict | None) -> dict:
            if pointer is None or pointer["previous"] is None:
                current = pointer["index_id"] if pointer else None
                raise NoPreviousIndexError(f"{self.root}: no previous index to roll back to (current: {current})")
            done.update(index_id=pointer["previous"], previous=None, swapped_at=_now(), rolled_back_from=pointer["index_id"])
            return {key: done[key] for key in ("index_id", "previous", "swapped_at")}

        pointer = self.pointer.read()
        if pointer is not None and pointer["previous"] is not None:
            verify_manifest(self.path(pointer["previous"]))
        self.pointer.update(back)
        self._log({"event": "rollback", **done})
        return done["index_id"]

    def _log(self, event: dict) -> None:
        at = _now()
        (self.location.child("HISTORY", f"{at}-{uuid.uuid4().hex}.json")).create(json.dumps({"at": at, **event}).encode())

    def history(self) -> list[dict]:
        """Every logged event, oldest first."""
        folder = self.location / "HISTORY"
        return [json.loads((folder / name).read_bytes()) for name in folder.names()]

    def gc(self, keep: int) -> list[str]:
        """Remove published indexes except current, previous and the ``keep`` most recently published; returns ids removed."""
        pointer = self.pointer.read() or {}
        published = [e["index_id"] for e in self.history() if e["event"] == "publish"]
        protected = {pointer.get("index_id"), pointer.get("previous"), *list(dict.fromkeys(reversed(published)))[:keep]}
        removed = []
        for index_id in self.published():
            if index_id not in protected:
                (self._index(index_id) / "manifest.json").remove()  # unpublished first, then its files
                self._index(index_id).remove()
                removed.append(index_id)
        if removed:
            self._log({"event": "gc", "removed": removed})
        return removed
