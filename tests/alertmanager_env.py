"""A real Alertmanager (Debian's prometheus-alertmanager) on a loopback port, with
its own configuration and storage in a temp dir, for the tests that need one."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import missing_prerequisite

BINARY = "prometheus-alertmanager"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AlertmanagerServer:
    def __init__(self, root: Path, resolve_timeout_s: int) -> None:
        if shutil.which(BINARY) is None:
            missing_prerequisite(f"{BINARY} is not installed (sudo make setup)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "alertmanager.yml"
        config.write_text(
            f"global:\n  resolve_timeout: {resolve_timeout_s}s\n"
            "route:\n  receiver: quiet\n  group_by: [signature, container]\n"
            "receivers:\n  - name: quiet\n"
        )
        self.log = root / "alertmanager.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [BINARY, f"--config.file={config}", f"--storage.path={root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"alertmanager did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def alerts(self) -> list[dict]:
        """The alerts Alertmanager holds as not resolved (its API leaves resolved ones out)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
