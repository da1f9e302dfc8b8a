"""Headless Debian Chromium driven over the DevTools protocol (websocket), enough to open a page with basic auth,
wait for an element the page's JavaScript renders, and take a screenshot."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.support import stop_process

CHROMIUM = "/usr/bin/chromium"


def chromium_binary() -> str | None:
    return shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)


class Page:
    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            # Long: a navigation to a sleeping service returns once the proxy has woken it.
            message = json.loads(self._socket.recv(timeout=600))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float) -> Any:
        """Polls a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"{expression!r} stayed falsy for {timeout_s:.0f}s; page text: {self.text()[:500]!r}")

    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''") or "")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def headless_page(authorization: str | None = None, extra_args: Sequence[str] = ()) -> Iterator[Page]:
    """A page in a fresh headless Chromium; `authorization` is sent with every request the page makes; `extra_args`
    add command-line switches (a fake microphone, say)."""
    binary = chromium_binary()
    assert binary is not None, "chromium is not installed"
    with tempfile.TemporaryDirectory(prefix="stack-chromium-") as profile:
        process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # tests may run as root, where the sandbox refuses to start
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--ignore-certificate-errors",  # the TLS tests verify the certificate; this one is about the page
                "--host-resolver-rules=MAP *.localhost 127.0.0.1",
                "--window-size=1280,900",
                *extra_args,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = _devtools_port(Path(profile), process)
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page_target = next(target for target in targets if target["type"] == "page")
            with connect(page_target["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as socket:
                page = Page(socket)
                page.call("Page.enable")
                page.call("Network.enable")
                if authorization:
                    page.call("Network.setExtraHTTPHeaders", headers={"Authorization": authorization})
                yield page
        finally:
            # The whole group (renderer, GPU, crashpad helpers), so none still writes into the profile
            # when it is removed.
            stop_process(process)


def _devtools_port(profile: Path, process: subprocess.Popen, timeout_s: float = 30) -> int:
    """With --remote-debugging-port=0 Chromium picks a free port and writes it to DevToolsActivePort."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}")
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().splitlines()[0])
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")
