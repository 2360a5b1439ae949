"""A place in the workspace named by URL: a local path, or `s3://bucket/prefix` on an object store.

Library code reads and writes local files (FAISS files, positioned reads of features, Parquet). On a
local workspace those files are the workspace's own and nothing is copied. On an object store a
process works in a local mirror of the places it uses, under its own scratch folder
(``$TMPDIR/ampere-mirror``): ``pull`` brings a place's objects down before reading, ``push`` sends a
folder's new files up after writing, its markers (``manifest.json``) last, so a reader that finds a
marker finds every file it names. A single object PUT is atomic; no rename is assumed. ``create``
and ``replace`` are conditional writes (`If-None-Match: *`, `If-Match: <etag>`): of two writers one wins.

Credentials and endpoint come from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL` for a store that is not AWS itself).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ampere.settings import Settings

MARKERS = ("manifest.json",)  # uploaded after every other file of their folder


def is_remote(url: str | Path) -> bool:
    """Whether ``url`` names an object store (a scheme other than file://)."""
    text = str(url)
    return "://" in text and not text.startswith("file://")


def mirror_root() -> Path:
    """Where this process mirrors remote places: the `mirror` setting (`ampere.settings.Settings`)."""
    return Path(Settings.resolve().mirror)


class ConditionFailed(RuntimeError):
    """A conditional write lost: the object exists (create) or changed since it was read (replace)."""


class Location:
    """A file or folder of the workspace: ``url`` a local path or an object-store URL."""

    def __init__(self, url: str | Path):
        if is_remote(url):
            self.url = str(url).rstrip("/")
            # Listings are never cached: other hosts change the store between two calls.
            self.fs, self.path = fsspec.core.url_to_fs(self.url, use_listings_cache=False)
        else:
            # Absolute, symbolic links kept: a published link (`features/features`) names itself, not its target.
            self.url = os.path.abspath(str(url).removeprefix("file://"))
            self.fs, self.path = LocalFileSystem(), self.url

    @property
    def is_local(self) -> bool:
        """A local path (files are used in place, nothing is mirrored)."""
        return isinstance(self.fs, LocalFileSystem)

    def __truediv__(self, part: str) -> Location:
        return self.child(part)

    def child(self, *parts: str) -> Location:
        """The place at ``parts`` below this one."""
        return Location("/".join([self.url, *parts]))

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def local(self) -> Path:
        """This place as a local path: itself when local, else its mirror (nothing is copied)."""
        if self.is_local:
            return Path(self.path)
        return mirror_root() / self.url.split("://", 1)[0] / self.path

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def names(self) -> list[str]:
        """The names of the files and folders directly in this folder (none when it does not exist)."""
        try:
            return sorted(Path(entry.rstrip("/")).name for entry in self.fs.ls(self.path, detail=False))
        except FileNotFoundError:
            return []

    def read_bytes(self) -> bytes:
        """The file's bytes (FileNotFoundError when missing)."""
        return self.fs.cat_file(self.path)

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def _staged(self, data: bytes) -> Path:
        """A local file of ``data`` beside this (local) file, to be renamed or linked into place."""
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        staging.write_bytes(data)
        return staging

    def write_bytes(self, data: bytes) -> None:
        """Writes the file whole, atomically: a reader sees the old bytes or the new ones."""
        if self.is_local:
            os.replace(self._staged(data), self.path)
        else:
            self.fs.pipe_file(self.path, data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def etag(self) -> str | None:
        """A tag of the file's current version (None when it does not exist), for ``replace``."""
        try:
            info = self.fs.info(self.path)
        except FileNotFoundError:
            return None
        if self.is_local:
            return f"{info['mtime']}-{info['size']}-{info.get('ino')}"
        return info["ETag"]

    def create(self, data: bytes) -> None:
        """Writes the file only if it does not exist yet (ConditionFailed otherwise): one creator wins."""
        if self.is_local:
            staging = self._staged(data)
            try:
                os.link(staging, self.path)  # fails if the target exists: an atomic create
            except FileExistsError as error:
                raise ConditionFailed(f"{self.url} exists") from error
            finally:
                staging.unlink()
            return
        try:
            self.fs.pipe_file(self.path, data, mode="create")
        except (FileExistsError, OSError) as error:
            if self.fs.exists(self.path):
                raise ConditionFailed(f"{self.url} exists") from error
            raise

    def replace(self, data: bytes, etag: str) -> None:
        """Overwrites the file only if it is still the version ``etag`` names (ConditionFailed otherwise)."""
        if self.is_local:
            import fcntl

            target = Path(self.path)
            with open(target.with_name(f".{target.name}.lock"), "a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                if self.etag() != etag:
                    raise ConditionFailed(f"{self.url} changed since it was read")
                self.write_bytes(data)
            return
        try:
            self.fs.pipe_file(self.path, data, IfMatch=etag)
        except OSError as error:
            if self.etag() != etag:
                raise ConditionFailed(f"{self.url} changed since it was read") from error
            raise

    def remove(self) -> None:
        """Deletes the file or folder (and everything under it); nothing when it does not exist."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path, recursive=True)

    def pull(self) -> Path:
        """The local path of this file or folder, downloaded first when remote (the whole tree)."""
        target = self.local()
        if self.is_local:
            return target
        if self.fs.isfile(self.path):
            target.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self.path, str(target))
            return target
        for remote in self.fs.find(self.path):
            local = target / Path(remote).relative_to(self.path)
            local.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(remote, str(local))
        target.mkdir(parents=True, exist_ok=True)
        return target

    def push(self, last: Iterable[str] = MARKERS) -> None:
        """Uploads the local mirror of this file or folder: files the store lacks (or holds at another
        size), those named in ``last`` after all others. Nothing to do when local."""
        if self.is_local:
            return
        source = self.local()
        if source.is_file():
            self.fs.put_file(str(source), self.path)
            return
        markers = set(last)
        have = {Path(p).relative_to(self.path).as_posix(): info["size"] for p, info in self._found().items()}
        files = sorted((p for p in source.rglob("*") if p.is_file()), key=lambda p: (p.name in markers, str(p)))
        for path in files:
            relative = path.relative_to(source).as_posix()
            if have.get(relative) != path.stat().st_size or path.name in markers:
                self.fs.put_file(str(path), f"{self.path}/{relative}")

    def _found(self) -> dict[str, dict]:
        try:
            return self.fs.find(self.path, detail=True)
        except FileNotFoundError:
            return {}

    def copy_to(self, target: Location, last: Iterable[str] = MARKERS) -> None:
        """Copies this file or folder to ``target`` on the same store, markers last (each object atomically)."""
        if self.fs.isfile(self.path):
            self.fs.copy(self.path, target.path)
            return
        files = sorted(self.fs.find(self.path), key=lambda p: (Path(p).name in set(last), p))
        for path in files:
            self.fs.copy(path, f"{target.path}/{Path(path).relative_to(self.path).as_posix()}")


def local_copy(url: str | Path) -> Path:
    """A local path of a saved file or folder: itself when local, else downloaded into this process's mirror."""
    return Location(url).pull()
