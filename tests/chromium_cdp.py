"""One headless Chromium for several pages: the DevTools protocol over the pipe Chromium
opens with --remote-debugging-pipe (its fd 3 reads our commands, fd 4 writes its answers,
each a JSON message ended by a NUL byte). `dump_dom` does what `chromium --dump-dom
--virtual-time-budget=2000 URL` does, in a new tab of the same browser: load the page, let
it run 2 s of virtual time, serialise the DOM. A browser start costs about half a second of
CPU; a tab, a fraction of that.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

#: what --dump-dom serialises: the doctype, then the document element
_SERIALISE = ("(document.doctype ? new XMLSerializer().serializeToString(document.doctype) + '\\n' : '')"
              " + document.documentElement.outerHTML")


class Browser:
    def __init__(self, executable: str, profile: Path, *, timeout_s: float = 60) -> None:
        self.timeout_s = timeout_s
        # the ends Chromium gets above fd 9: neither is 3 or 4 before the shell moves them
        ours_to_chromium = self._high(os.pipe())
        chromium_to_us = self._high(os.pipe())
        command = [executable, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                   "--disable-extensions", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        # bash (dash takes no fd above 9) puts the two pipe ends at fds 3 and 4, then becomes Chromium
        self._process = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$@" 3<&{ours_to_chromium[0]} 4>&{chromium_to_us[1]}', "bash", *command],
            pass_fds=(ours_to_chromium[0], chromium_to_us[1]), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(ours_to_chromium[0])
        os.close(chromium_to_us[1])
        self._out = ours_to_chromium[1]
        self._in = chromium_to_us[0]
        self._buffer = b""
        self._last_id = 0
        self._events: list[dict[str, Any]] = []

    @staticmethod
    def _high(ends: tuple[int, int]) -> tuple[int, int]:
        high = (fcntl.fcntl(ends[0], fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(ends[1], fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(ends[0])
        os.close(ends[1])
        return high

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer within {self.timeout_s:.0f} s")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium ended (exit code {self._process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return dict(json.loads(message))

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            answer = self._receive(deadline)
            if answer.get("id") == self._last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return dict(answer["result"])
            self._events.append(answer)

    def _wait_for(self, event: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not any(e.get("method") == event and e.get("sessionId") == session for e in self._events):
            self._events.append(self._receive(deadline))

    def dump_dom(self, url: str) -> str:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            self.call("Page.enable", session=session)
            self.call("Page.navigate", {"url": url}, session=session)
            self._wait_for("Page.loadEventFired", session)
            self.call("Emulation.setVirtualTimePolicy", {"policy": "pauseIfNetworkFetchesPending", "budget": 2000},
                      session=session)
            self._wait_for("Emulation.virtualTimeBudgetExpired", session)
            done = self.call("Runtime.evaluate", {"expression": _SERIALISE, "returnByValue": True}, session=session)
            return str(done["result"]["value"])
        finally:
            self.call("Target.closeTarget", {"targetId": target})
            self._events = [e for e in self._events if e.get("sessionId") != session]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError):
            self._process.kill()
        try:
            self._process.wait(timeout=30)
        finally:
            os.close(self._out)
            os.close(self._in)
