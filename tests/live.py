"""Run a live spawnwatch command (`trace --json`, `watch --json`) as a real
subprocess: wait for its ready line, let the test act, stop it with SIGTERM and
hand back every record it printed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from typing import Callable


class LiveCommand:
    def __init__(self, *args: str, ready_timeout: float = 60.0, env: dict[str, str] | None = None) -> None:
        self.argv = [sys.executable, "-m", "spawnwatch", *args]
        self.ready_timeout = ready_timeout
        self.env = env
        self.records: list[dict] = []
        self.stderr = ""
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> "LiveCommand":
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=self.env
        )
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()
        if not self._ready.wait(self.ready_timeout):
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.argv} printed no ready line; stderr: {self.stderr[-2000:]}")
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            record = json.loads(line)
            with self._lock:
                self.records.append(record)
            if record.get("kind") == "ready":
                self._ready.set()

    def _read_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.records)

    def wait_for(self, predicate: Callable[[list[dict]], bool], timeout: float = 30.0) -> list[dict]:
        """Poll until predicate(records) holds; generous deadline, no timing assertion."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.snapshot()
            if predicate(records):
                return records
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        return self.snapshot()

    def __exit__(self, *exc_info: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        self._reader.join(timeout=10)
        self._stderr_reader.join(timeout=10)

    @property
    def stats(self) -> dict:
        last = self.records[-1] if self.records else {}
        assert last.get("kind") == "stats", f"last line is not stats: {last}; stderr: {self.stderr[-2000:]}"
        return last
