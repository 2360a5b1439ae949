"""A headless Chromium (Debian's `chromium`) driven through the DevTools protocol, for page tests."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """One headless Chromium page: navigate, evaluate JavaScript, set a file input, take a screenshot."""

    def __init__(self, width: int = 1280, height: int = 1600):
        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        if executable is None:
            raise RuntimeError("Debian's chromium is not installed (scripts/test.sh installs it)")
        self.profile = tempfile.TemporaryDirectory(prefix="ampere-chromium-")
        port = _free_port()
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",  # needed as root
                "--disable-gpu",
                "--no-first-run",
                f"--remote-debugging-port={port}",
                f"--user-data-dir={self.profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes share the group, so `close` can end them all
        )
        self._ids = itertools.count(1)
        self._events: list[dict] = []
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as response:
                    pages = [t for t in json.load(response) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("chromium exited at start-up")
            time.sleep(0.25)
        else:
            raise RuntimeError("chromium's DevTools endpoint did not answer within 30 s")
        self.socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=2**26)
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict:
        """Send one DevTools command and return its result (events that arrive meanwhile are kept)."""
        number = next(self._ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        """The next DevTools event of that name (one already received counts)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self._events):
                if message.get("method") == event:
                    return self._events.pop(index)
            self._events.append(json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def load(self, action: str, **params: Any) -> None:
        """Run a navigating command (or `Runtime.evaluate` of a click or submit) and wait for the page's load event."""
        self._events = [m for m in self._events if m.get("method") != "Page.loadEventFired"]
        self.call(action, **params)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def set_file(self, selector: str, path: Path) -> None:
        """Choose a file in a file input, as a person would in the file dialog."""
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", files=[str(path)], nodeId=node)

    def screenshot(self) -> bytes:
        """PNG bytes of the whole page."""
        return base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])

    def close(self) -> None:
        """Ends Chromium and every helper process it started, then removes the profile (helpers still
        writing to it made the removal fail with "Directory not empty")."""
        self.socket.close()
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(group, signal.SIGKILL)
        self.profile.cleanup()
