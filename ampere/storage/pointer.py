"""A small JSON object moved by compare-and-swap, e.g. an index store's CURRENT on an object store."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable

from ampere.storage.location import ConditionFailed, Location

_TRIES = 50


class Pointer:
    """A JSON object at ``location`` that every writer changes from the version it read: when two
    writers race, one conditional write wins and the other reads the new version and tries again,
    so no change is lost and none is applied to a stale value."""

    def __init__(self, location: Location):
        self.location = location

    def read(self) -> dict | None:
        """The pointer's value (None before the first write)."""
        try:
            return json.loads(self.location.read_bytes())
        except FileNotFoundError:
            return None

    def update(self, change: Callable[[dict | None], dict | None]) -> dict | None:
        """Applies ``change`` to the current value and writes the result (None: leave it); returns it."""
        for attempt in range(_TRIES):
            etag = self.location.etag()  # read before the bytes: a newer body with an older tag fails the write
            value = None if etag is None else self.read()
            new = change(value)
            if new is None:
                return value
            data = json.dumps(new).encode()
            try:
                if etag is None:
                    self.location.create(data)
                else:
                    self.location.replace(data, etag)
                return new
            except ConditionFailed:
                time.sleep(random.uniform(0, 0.01 * (attempt + 1)))
        raise ConditionFailed(f"{self.location.url}: {_TRIES} writers in a row changed it first")
