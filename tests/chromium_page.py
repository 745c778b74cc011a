"""Open a local HTML file in headless Chromium (Debian's `chromium`) through the DevTools protocol, with
websocket-client: what the page logged as errors, which requests it made, values evaluated in it, and a PNG
screenshot. Chromium is started with everything that calls home switched off; only loopback is used."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome-error:")


@dataclass
class PageRun:
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    values: dict[str, Any] = field(default_factory=dict)  # expression -> result

    @property
    def network(self) -> list[str]:
        """Requests that would leave the machine (anything but file:, data:, about:, blob:)."""
        return [url for url in self.requests if not url.startswith(LOCAL_SCHEMES)]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_page(page: Path, screenshot: Path, expressions: list[str], width: int = 1280, height: int = 2400,
              timeout: float = 60.0) -> PageRun:
    """Load `page`, wait for its load event (and `data-ready` on <html>), evaluate `expressions`, save a PNG."""
    import websocket

    executable = chromium()
    if executable is None:
        raise RuntimeError("chromium is not installed")
    profile = Path(tempfile.mkdtemp(prefix="ducho-chromium-"))
    process = subprocess.Popen(
        [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
         "--metrics-recording-only", "--mute-audio", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port = _port(profile, process, timeout)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as answer:
            targets = json.load(answer)
        url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        socket = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        try:
            return _drive(socket, page, screenshot, expressions, width, height, timeout)
        finally:
            socket.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _port(profile: Path, process: subprocess.Popen, timeout: float) -> int:
    """Chromium writes the port it picked (--remote-debugging-port=0) into the profile."""
    deadline = time.monotonic() + timeout
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}")
        if marker.is_file():
            first = marker.read_text().splitlines()[:1]
            if first and first[0].isdigit():
                return int(first[0])
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


class _Session:
    def __init__(self, socket: Any, run: PageRun, timeout: float) -> None:
        self.socket, self.run, self.timeout, self.next_id = socket, run, timeout, 0
        self.events: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.handle(message)
        raise TimeoutError(method)

    def wait(self, event: str) -> None:
        deadline = time.monotonic() + self.timeout
        while event not in self.events:
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            self.handle(json.loads(self.socket.recv()))

    def handle(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method is None:
            return
        self.events.append(method)
        if method == "Network.requestWillBeSent":
            self.run.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.run.errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                          for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.run.errors.append("exception: " + str(details.get("exception", {}).get("description")
                                                       or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.run.errors.append("log: " + params["entry"].get("text", ""))
        elif method == "Network.loadingFailed":
            self.run.errors.append("load failed: " + params.get("errorText", ""))


def _drive(socket: Any, page: Path, screenshot: Path, expressions: list[str], width: int, height: int,
           timeout: float) -> PageRun:
    run = PageRun()
    session = _Session(socket, run, timeout)
    for domain in ("Page", "Runtime", "Network", "Log"):
        session.call(f"{domain}.enable")
    session.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
    session.call("Page.navigate", url=page.resolve().as_uri())
    session.wait("Page.loadEventFired")
    deadline = time.monotonic() + timeout
    while session.call("Runtime.evaluate", expression="document.documentElement.dataset.ready || ''",
                       returnByValue=True)["result"].get("value") != "1":
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for expression in expressions:
        result = session.call("Runtime.evaluate", expression=expression, returnByValue=True)
        run.values[expression] = result.get("result", {}).get("value")
    shot = session.call("Page.captureScreenshot", format="png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return run
