"""Run a live spawnwatch command (`trace --json`, `watch --json`) as a real
subprocess: wait for its ready line, let the test act, stop it with SIGTERM and
hand back every record it printed.  A wait that times out fails the test, saying
what it waited for, with the last records and stderr."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import msgpack

from spawnwatch.events import from_record, to_record


class LiveCommand:
    def __init__(self, *args: str, ready_timeout: float = 60.0, env: dict[str, str] | None = None,
                 wrapper: tuple[str, ...] = ()) -> None:
        # `wrapper`: a command that execs the rest (setpriv ...), so the signals reach spawnwatch.
        self.argv = [*wrapper, sys.executable, "-m", "spawnwatch", *args]
        self.ready_timeout = ready_timeout
        self.env = env
        self.records: list[dict] = []
        self._stderr_lines: list[str] = []
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
            raise AssertionError(f"{self.argv} printed no ready line; stderr: {self.stderr}")
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            record = json.loads(line)
            with self._lock:
                self.records.append(record)
            if record.get("kind") == "ready":
                self._ready.set()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            with self._lock:
                self._stderr_lines.append(line)

    @property
    def stderr(self) -> str:
        """The last 2,000 characters of stderr so far."""
        with self._lock:
            return "".join(self._stderr_lines)[-2000:]

    def stderr_lines(self) -> list[str]:
        with self._lock:
            return list(self._stderr_lines)

    def wait_for_stderr(self, predicate: Callable[[list[str]], object], what: str, timeout: float = 30.0) -> None:
        """Return once predicate(every stderr line so far) holds; fails the test as wait_for does."""
        deadline = time.monotonic() + timeout
        while not predicate(self.stderr_lines()):
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                raise AssertionError(f"{self.argv[3:]} waiting for {what} on stderr: it ended or {timeout} s passed;"
                                     f" stderr: {self.stderr}")
            time.sleep(0.1)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.records)

    def wait_for(self, predicate: Callable[[list[dict]], object], what: str = "the records it waited for",
                 timeout: float = 30.0) -> list[dict]:
        """The records once predicate(records) holds; fails the test when it does not
        within `timeout` (generous: a deadline, not a timing assertion) or the command ends."""
        deadline = time.monotonic() + timeout
        while True:
            ended = self.proc.poll()
            if ended is not None:
                self._reader.join(timeout=10)  # its last lines may still be in the pipe
            records = self.snapshot()
            if predicate(records):
                return records
            if ended is not None or time.monotonic() >= deadline:
                why = f"it ended with {ended}" if ended is not None else f"timed out after {timeout} s"
                raise AssertionError(
                    f"{self.argv[3:]} waiting for {what}: {why}; last records: {records[-5:]}; stderr: {self.stderr}"
                )
            time.sleep(0.1)

    def stop(self) -> int:
        """Its exit status after SIGTERM (SIGKILL after 60 s), once every line it printed is
        read; a command a fixture holds may be stopped by a test before the fixture ends."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.returncode = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.returncode = self.proc.wait()
        self._reader.join(timeout=10)
        self._stderr_reader.join(timeout=10)
        return self.returncode

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def stats(self) -> dict:
        last = self.records[-1] if self.records else {}
        assert last.get("kind") == "stats", f"last line is not stats: {last}; stderr: {self.stderr}"
        return last


class Recording:
    """A recording a live `watch --record` is still writing, read as it grows: watch
    flushes it after each evaluation, so it holds every record up to the last one.
    Each record as its `--json` map: an event, an array in the recording (format 2), is
    read by the project's reader (events.from_record) and told as `to_record` tells it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict] = []
        self._read_to = 0
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._read_to)
                grown = f.read()
        except FileNotFoundError:
            grown = b""
        self._read_to += len(grown)
        self._unpacker.feed(grown)
        # whole records only: a cut last one waits for its rest
        self.records.extend(record if type(record) is dict else to_record(from_record(record))
                            for record in self._unpacker)
        return self.records

    def wait_for(self, predicate: Callable[[list[dict]], object], what: str, timeout: float = 120.0) -> list[dict]:
        """The records once predicate(records) holds; fails the test when it does not within
        `timeout` (generous: a deadline, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.read()
            if predicate(records):
                return records
            if time.monotonic() >= deadline:
                raise AssertionError(f"no {what} in {self.path} within {timeout} s; last records: {records[-5:]}")
            time.sleep(0.2)


def boottime_now() -> float:
    """Now on the clock of watch's events and evaluations."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def saw_then_evaluated(pids: set[int], after: float) -> Callable[[list[dict]], bool]:
    """The positive control of a "raises nothing" check: watch recorded an event of one of
    `pids` (its own or a child's), and evaluated at `after` or later (boot clock)."""
    def holds(records: list[dict]) -> bool:
        evaluated = any(r["kind"] == "tick" and r["ts"] >= after for r in reversed(records))
        return evaluated and any(r["kind"] in ("fork", "exec", "exit", "brief", "tally")
                                 and (r["pid"] in pids or r["ppid"] in pids) for r in reversed(records))
    return holds


def alerts_of(records: list[dict], spawners: set[int]) -> list[dict]:
    return [r for r in records if r["kind"] == "alert" and r["spawner"]["pid"] in spawners]
