"""Headless Chromium for tests, driven over the DevTools protocol with no extra dependency.

How: Chromium is started with ``--remote-debugging-pipe``; it then reads DevTools (CDP) commands
from its file descriptor 3 and writes replies and events to fd 4, each message one JSON object
terminated by a NUL byte (the transport Puppeteer and Playwright use). That needs no websocket
client, no port for DevTools and no chromedriver: two `os.pipe()`s and the standard library.

`find_chromium()` finds the browser or skips the calling test with the reason: the install
hint, or, when `.ci/run` tried to install Chromium and failed, what it printed
($REGLAB_BROWSER_UNAVAILABLE). Tests never install anything themselves. `render(url)` loads a
page and returns its console errors, failed requests, the state of every image and a PNG
screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import http.server
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
INSTALL_HINT = (
    "Chromium not found: apt-get install chromium chromium-driver (or set REGLAB_CHROMIUM to the browser binary)"
)


def _which() -> str | None:
    env = os.environ.get("REGLAB_CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


def find_chromium() -> str:
    """The Chromium binary, else skip the calling test with the reason."""
    p = _which()
    if p is None:
        why = os.environ.get("REGLAB_BROWSER_UNAVAILABLE")
        pytest.skip(f"{INSTALL_HINT} ({why})" if why else INSTALL_HINT)
    return p


# ---------------------------------------------------------------------------------------------
# serving a directory
# ---------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 at an ephemeral port in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# DevTools over a pipe
# ---------------------------------------------------------------------------------------------


class CDPError(RuntimeError):
    pass


def _high_fd(fd: int) -> int:
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class PipeBrowser:
    """A headless Chromium process and a synchronous CDP client over fds 3/4."""

    def __init__(self, binary: str, width: int = 1280, height: int = 900):
        self._tmp = tempfile.TemporaryDirectory(prefix="reglab-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # the child-side ends go to fds >= 10, so the shell's 3<&N 4>&M cannot clobber them
        to_child_r, from_child_w = (_high_fd(fd) for fd in (to_child_r, from_child_w))
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={self._tmp.name}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # bash puts our pipe ends on the fds 3 and 4 that Chromium expects (dash cannot: fd >= 10)
        sh = f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w} {to_child_r}<&- {from_child_w}>&-'
        self.proc = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", sh, *args],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    # -- transport
    def _send(self, msg: dict) -> None:
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self._to_child, data)
            data = data[n:]

    def _recv(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError("timed out waiting for Chromium")
            r, _, _ = select.select([self._from_child], [], [], left)
            if not r:
                continue
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.poll() is not None else ""
                raise CDPError(f"Chromium closed the DevTools pipe (exit {self.proc.poll()}): {err}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, timeout: float = 20.0, session: bool = True) -> dict:
        self._next_id += 1
        mid = self._next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        self._send(msg)
        deadline = time.monotonic() + timeout
        while True:
            m = self._recv(deadline)
            if m.get("id") == mid:
                if "error" in m:
                    raise CDPError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def wait_event(self, method: str, timeout: float = 20.0) -> dict:
        for i, ev in enumerate(self.events):
            if ev["method"] == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            m = self._recv(deadline)
            if m.get("method") == method:
                return m
            if "method" in m:
                self.events.append(m)

    def drain(self, seconds: float) -> None:
        """Collect events for `seconds` (late console messages, failed loads)."""
        deadline = time.monotonic() + seconds
        with contextlib.suppress(CDPError):
            while True:
                m = self._recv(deadline)
                if "method" in m:
                    self.events.append(m)

    # -- lifecycle
    def open_page(self) -> None:
        targets = self.call("Target.getTargets", session=False)["targetInfos"]
        pages = [t for t in targets if t["type"] == "page"]
        target = (
            pages[0]["targetId"]
            if pages
            else self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        )
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.session = None
            self.call("Browser.close", timeout=5, session=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.proc.stderr:
            self.proc.stderr.close()
        self._tmp.cleanup()

    def __enter__(self) -> PipeBrowser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class PageReport:
    url: str
    title: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    """One dict per <img>: src (first 80 chars), complete, naturalWidth, naturalHeight."""
    screenshot: bytes = b""

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not i["complete"] or i["naturalWidth"] == 0]


_IMAGES_JS = """
JSON.stringify(Array.from(document.images).map(i => ({
  src: i.currentSrc.slice(0, 80) || i.getAttribute('src').slice(0, 80),
  complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight})))
"""

_WAIT_IMAGES_JS = """
Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null))).then(() => document.images.length)
"""


def render(
    url: str,
    screenshot: bool = True,
    full_page: bool = True,
    width: int = 1280,
    max_height: int = 16000,
    timeout: float = 30.0,
    binary: str | None = None,
) -> PageReport:
    """Load `url` in headless Chromium; report console errors, failed requests, images and a
    PNG screenshot (the whole page up to `max_height` CSS pixels when `full_page`)."""
    binary = binary or find_chromium()
    with PipeBrowser(binary, width=width) as b:
        b.open_page()
        b.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        nav = b.call("Page.navigate", {"url": url}, timeout=timeout)
        if nav.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {nav['errorText']}")
        b.wait_event("Page.loadEventFired", timeout=timeout)
        b.call("Runtime.evaluate", {"expression": _WAIT_IMAGES_JS, "awaitPromise": True}, timeout=timeout)
        b.drain(0.3)
        title = b.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True})["result"].get(
            "value", ""
        )
        images = json.loads(
            b.call("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True})["result"]["value"]
        )
        shot = b""
        if screenshot:
            params: dict = {"format": "png"}
            if full_page:
                size = b.call("Page.getLayoutMetrics")["cssContentSize"]
                h = min(int(size["height"]) + 1, max_height)
                params.update(
                    {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": h, "scale": 1}}
                )
            shot = base64.b64decode(b.call("Page.captureScreenshot", params, timeout=timeout)["data"])
        b.drain(0.2)
        rep = PageReport(url=url, title=title, images=images, screenshot=shot)
        for ev in b.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                rep.console_errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                rep.console_errors.append(
                    "console."
                    + p["type"]
                    + ": "
                    + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                )
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                en = p["entry"]
                rep.console_errors.append(f"{en.get('source')}: {en.get('text')} {en.get('url', '')}".strip())
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                rep.failed_requests.append(f"{p.get('type')}: {p.get('errorText')}")
            elif m == "Network.responseReceived" and p.get("response", {}).get("status", 200) >= 400:
                r = p["response"]
                rep.failed_requests.append(f"HTTP {r['status']}: {r.get('url')}")
        return rep
