"""A real Alertmanager and Prometheus (Debian's packages) on loopback ports, each with
its own configuration and storage in a temp dir, for the tests that need them."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from conftest import missing_prerequisite



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server binary started with `args(root, port)`, ready when /-/ready answers."""

    binary = ""

    def __init__(self, root: Path) -> None:
        if shutil.which(self.binary) is None:
            missing_prerequisite(f"{self.binary} is not installed (sudo make setup)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"{self.binary}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([self.binary, *self.args(root)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.binary} did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def args(self, root: Path) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class AlertmanagerServer(Server):
    """Grouping by signature and container, as README advises; a receiver that sends nothing."""

    binary = "prometheus-alertmanager"

    def __init__(self, root: Path, resolve_timeout_s: int = 300) -> None:
        self.resolve_timeout_s = resolve_timeout_s
        super().__init__(root)

    def args(self, root: Path) -> list[str]:
        config = root / "alertmanager.yml"
        config.write_text(
            f"global:\n  resolve_timeout: {self.resolve_timeout_s}s\n"
            "route:\n  receiver: quiet\n  group_by: [signature, container]\n  group_wait: 1s\n"
            "receivers:\n  - name: quiet\n"
        )
        return [f"--config.file={config}", f"--storage.path={root / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="]

    def alerts(self) -> list[dict]:
        """The alerts Alertmanager holds as not resolved (its API leaves resolved ones out)."""
        return self.get("/api/v2/alerts")

    def groups(self) -> list[dict]:
        return self.get("/api/v2/alerts/groups")


class PrometheusServer(Server):
    """Scrapes `targets` ({address: extra labels}) as job "spawnwatch" every second,
    evaluates `rule_files` every second, and alerts `alertmanager`."""

    binary = "prometheus"

    def __init__(self, root: Path, targets: dict[str, dict[str, str]], rule_files: list[Path],
                 alertmanager: AlertmanagerServer) -> None:
        self.config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]},
            "scrape_configs": [{
                "job_name": "spawnwatch",
                "static_configs": [{"targets": [address], "labels": labels} for address, labels in targets.items()],
            }],
        }
        super().__init__(root)

    def args(self, root: Path) -> list[str]:
        config = root / "prometheus.yml"
        config.write_text(json.dumps(self.config))  # JSON is YAML
        return [f"--config.file={config}", f"--storage.tsdb.path={root / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]

    def query(self, expr: str) -> list[dict]:
        return self.get(f"/api/v1/query?query={urllib.parse.quote(expr)}")["data"]["result"]
