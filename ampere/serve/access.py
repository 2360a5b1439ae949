"""Who may query a server exposed beyond this host: bearer tokens (FastAPI's `HTTPBearer`), kept as
sha256 digests in a file or given in the environment; tokens themselves are never stored or logged."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TOKENS_ENV = "AMPERE_API_TOKENS"  # comma-separated tokens (e.g. from a secret), beside or instead of a digest file
OPEN_PATHS = frozenset({"/health", "/metrics"})  # probes and Prometheus, unless the server is told to guard them


def digest(token: str) -> str:
    """The sha256 hex digest a tokens file holds for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or `localhost`) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    """The digests of the accepted tokens (none: no token needed) and the paths open without one."""

    digests: frozenset[str] = frozenset()
    open_paths: frozenset[str] = OPEN_PATHS

    @classmethod
    def load(cls, tokens_file: Path | None, environ: Mapping[str, str] = os.environ, guard_probes: bool = False) -> Access:
        """The tokens of ``tokens_file`` (one sha256 hex digest per line; `#` comments) and of `TOKENS_ENV`."""
        digests = {digest(token.strip()) for token in environ.get(TOKENS_ENV, "").split(",") if token.strip()}
        if tokens_file is not None:
            for number, line in enumerate(Path(tokens_file).read_text().splitlines(), 1):
                value = line.split("#")[0].strip().lower()
                if not value:
                    continue
                if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                    raise ValueError(f"{tokens_file}:{number}: not a sha256 hex digest (printf %s TOKEN | sha256sum)")
                digests.add(value)
        return cls(frozenset(digests), frozenset() if guard_probes else OPEN_PATHS)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def allows(self, path: str, token: str | None) -> bool:
        """Whether a request for ``path`` bearing ``token`` may pass (constant-time comparison of digests)."""
        if not self.enabled or path in self.open_paths:
            return True
        if not token:
            return False
        given = digest(token)
        return any(hmac.compare_digest(given, known) for known in self.digests)
