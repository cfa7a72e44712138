"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (no deps).

Headless Chromium reads NUL-terminated JSON commands on file descriptor 3 and writes
replies and events on descriptor 4. `Browser.load` opens a page, waits for its load
event, and returns the console errors, uncaught exceptions and failed requests it saw,
plus the result of a JavaScript expression evaluated in the page.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """Path of the Chromium binary (Debian's ``chromium`` package), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def spawn_with_pipes(argv: list[str]) -> tuple[subprocess.Popen, int, int]:
    """Start ``argv`` reading a pipe on its fd 3 and writing one on its fd 4, as
    ``--remote-debugging-pipe`` wants; return ``(process, write_fd, read_fd)``.

    ``os.pipe`` may hand out fds 3 and 4 themselves (when the caller has them free, as
    outside pytest). Each end is first copied above 4, so neither ``dup2`` onto 3 or 4
    is a no-op (a no-op would keep the close-on-exec flag and close the pipe at exec)
    or overwrites the other end.
    """
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def wire_pipes() -> None:  # runs in the child, between fork and exec
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 5)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 5)
        os.dup2(high_r, 3, inheritable=True)
        os.dup2(high_w, 4, inheritable=True)
        os.close(high_r)
        os.close(high_w)

    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # close_fds would run after wire_pipes and close 3 and 4; os.pipe's own
        # descriptors are non-inheritable, so only the two dup2 copies reach the child.
        preexec_fn=wire_pipes, close_fds=False,
    )
    os.close(to_child_r)
    os.close(from_child_w)
    return proc, to_child_w, from_child_r


@dataclass
class PageReport:
    """What happened while a page loaded."""

    url: str
    errors: list[str] = field(default_factory=list)
    value: Any = None


class Browser:
    """One headless Chromium process driven over the DevTools pipe."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="rasplang-chromium-")
        self.proc, self._to_child, self._from_child = spawn_with_pipes(
            [binary, *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"]
        )
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium over the DevTools pipe")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events seen meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_for(self, method: str, session: str) -> dict[str, Any]:
        """Wait for an event of ``method`` in ``session`` (earlier events are kept)."""
        deadline = time.monotonic() + self.timeout
        for event in self._events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._read_message(deadline)
            self._events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    # -- pages

    def load(
        self, url: str, expression: str = "null", settle: float = 0.5, *,
        width: int = 1280, height: int = 900, screenshot: str | os.PathLike | None = None,
    ) -> PageReport:
        """Open ``url`` in a new tab of ``width`` x ``height`` CSS pixels; report its
        errors and the value of ``expression``; with ``screenshot``, save a PNG of the
        whole page there."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self._events.clear()
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session)
        self.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", session, url=url)
        self.wait_for("Page.loadEventFired", session)
        time.sleep(settle)  # let scripts that run after load report their errors
        result = self.send(
            "Runtime.evaluate", session, expression=expression, returnByValue=True,
            awaitPromise=True,
        )
        report = PageReport(url=url, value=result.get("result", {}).get("value"))
        if screenshot is not None:
            shot = self.send("Page.captureScreenshot", session, format="png",
                             captureBeyondViewport=True)
            with open(screenshot, "wb") as out:
                out.write(base64.b64decode(shot["data"]))
        report.errors = [
            text for event in self._events
            if event.get("sessionId") == session and (text := _error_text(event))
        ]
        self.send("Target.closeTarget", targetId=target)
        return report


def _error_text(event: dict[str, Any]) -> str | None:
    """A readable line for an error event, or None for anything else."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
        return "console.error: " + " ".join(args)
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        exc = details.get("exception", {}).get("description") or details.get("text")
        return f"uncaught exception: {exc}"
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return f"log error: {entry.get('text')} {entry.get('url', '')}".rstrip()
    if method == "Network.loadingFailed" and not params.get("canceled"):
        return f"request failed: {params.get('errorText')} (request {params.get('requestId')})"
    return None
