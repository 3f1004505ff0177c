"""The leak reproduction: a leaky MCP supervisor to point spawnwatch at.

The supervisor itself is node (`data/mcp-servers/supervisor.js`, beside the stdio servers
it starts with `npm exec --package=file:`), so the very same program also runs in a
busybox+node container.  This module runs it:

- `run()` in the foreground, as `spawnwatch simulate` does.  The calling process becomes
  a child subreaper: orphans of killed children are reparented to it rather than to init,
  and it reaps them (and the zombie mode's zombies) and checks that nothing survives.
- `Simulation`, a context manager that runs `spawnwatch simulate --json` in the
  background for tests and demos.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

PACKAGE = Path(__file__).resolve().parent / "data" / "mcp-servers"
SUPERVISOR = "supervisor.js"
SERVERS = tuple(json.loads((PACKAGE / "package.json").read_text())["bin"])
LEAK_MODES = ("accumulate", "orphan", "zombie")
HEALTHY_MODES = ("pool", "respawn")
MODES = LEAK_MODES + HEALTHY_MODES

PR_SET_CHILD_SUBREAPER = 36
# Beyond the supervisor's own stop (3 s grace, then SIGKILL), for the last reaps.
CLEANUP_TIMEOUT = 10.0

Record = dict[str, Any]

# The supervisor's records (supervisor.js writes them, one JSON object a line), by kind:
SIMULATE = "simulate"  # the first: the supervisor's pid, mode, servers and memory per server
SPAWN = "spawn"  # a child started, leading its own process group
UP = "up"  # a child's server answered (its pid, how long it took)
KILL = "kill"  # orphan mode: only a child's launcher killed, its server left orphaned
HANGUP = "hangup"  # orphan mode: the orphaned server's stdin closed, so it ends under its adopter
EXIT = "exit"  # a child ended: its status, or never waited for (a zombie)
ERROR = "error"  # the supervisor failed: why (a stop follows)
STOP = "stop"  # the supervisor ends everything it started: why, and how many it spawned


class SimulationError(RuntimeError):
    """The supervisor could not run, failed, or left processes behind."""


@dataclass(frozen=True)
class Settings:
    """Options of the supervisor; None leaves its default (see `supervisor.js --help`)."""

    mode: str
    interval: float | None = None
    servers: int | None = None
    memory_mb: float | None = None
    children: int | None = None
    lifetime: float | None = None
    max_spawns: int | None = None
    duration: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")

    def args(self) -> list[str]:
        """The command line, the same for supervisor.js and `spawnwatch simulate`."""
        flags = {
            "--interval": self.interval,
            "--servers": self.servers,
            "--memory": self.memory_mb,
            "--children": self.children,
            "--lifetime": self.lifetime,
            "--max": self.max_spawns,
            "--duration": self.duration,
        }
        args = [self.mode]
        for flag, value in flags.items():
            if value is not None:
                args += [flag, str(value)]
        return args


def node_executable() -> str:
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        raise SimulationError("the simulation needs node and npm on PATH (sudo make setup installs them)")
    return node


@contextmanager
def package_dir() -> Iterator[Path]:
    """The shipped package when npm can use it in place, else a private copy.

    `npm exec --package=file:DIR` chmods DIR's bin files, which needs a writable file
    system and owning them (or root), as after an editable or a user install.
    """
    bins = [PACKAGE / "bin" / f"{server}.js" for server in SERVERS]
    euid = os.geteuid()
    read_only = os.statvfs(PACKAGE).f_flag & os.ST_RDONLY
    if not read_only and all(euid in (0, path.stat().st_uid) for path in bins):
        yield PACKAGE
        return
    with tempfile.TemporaryDirectory(prefix="spawnwatch-simulate-") as tmp:
        copy = Path(tmp) / PACKAGE.name
        shutil.copytree(PACKAGE, copy)
        yield copy


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SimulationError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


def group_members(groups: set[int]) -> list[psutil.Process]:
    """Every process, zombies included, in one of the process groups `groups`."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups:
                members.append(proc)
        except ProcessLookupError:
            continue
    return members


def _reap_own_children() -> None:
    """Collect every exited child: as a subreaper, those include the supervisor's orphans."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _clean_up(groups: set[int]) -> None:
    """Reap what the supervisor left to us; kill and report anything it failed to end."""
    deadline = time.monotonic() + CLEANUP_TIMEOUT
    survivors: dict[int, str] = {}
    while True:
        _reap_own_children()
        members = group_members(groups)
        if not members:
            break
        for proc in members:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    survivors.setdefault(proc.pid, " ".join(proc.cmdline()))
                    proc.kill()
            except psutil.NoSuchProcess:
                continue
        if time.monotonic() > deadline:
            raise SimulationError(f"processes still there after cleanup: {', '.join(map(str, members))}")
        time.sleep(0.1)
    if survivors:
        described = "; ".join(f"{pid} ({argv})" for pid, argv in survivors.items())
        raise SimulationError(f"the supervisor's cleanup left processes running (now killed): {described}")


def run(settings: Settings, on_record: Callable[[Record], None]) -> int:
    """Run the supervisor until its --duration, SIGINT or SIGTERM; return its exit status.

    Every record it prints goes to `on_record` as a dict.  SIGINT, SIGTERM and SIGHUP to
    this process make the supervisor stop and clean up.  Must run in the main thread.
    """
    node = node_executable()
    become_subreaper()
    groups: set[int] = set()
    with package_dir() as package:
        supervisor = subprocess.Popen(
            [node, str(package / SUPERVISOR), *settings.args()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )

        def stop_supervisor(signum: int, frame: object) -> None:
            if supervisor.poll() is None:
                supervisor.send_signal(signal.SIGTERM)

        stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {signum: signal.signal(signum, stop_supervisor) for signum in stops}
        try:
            assert supervisor.stdout is not None
            for line in supervisor.stdout:
                record = json.loads(line)
                if record["kind"] == SPAWN:
                    groups.add(record["pid"])  # each child leads its own process group
                on_record(record)
        finally:
            stop_supervisor(signal.SIGTERM, None)  # a no-op unless on_record failed
            status = supervisor.wait()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            _clean_up(groups)
    return status


class Simulation:
    """`spawnwatch simulate MODE --json` in the background.

        with Simulation("accumulate", interval=0.5, memory_mb=5) as sim:
            sim.pid                                   # the supervisor: the leaking spawner
            sim.wait_for(lambda records: sum(r["kind"] == UP for r in records) >= 3)

    Entering returns once the first server answered; leaving stops the simulation and
    raises SimulationError if it failed or if any process it started is still there.
    """

    def __init__(self, mode: str, *, startup_timeout: float = 60.0, **settings: Any) -> None:
        self.settings = Settings(mode, **settings)
        self.startup_timeout = startup_timeout
        self._records: list[Record] = []
        self._changed = threading.Condition()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.pid = 0

    @property
    def records(self) -> list[Record]:
        with self._changed:
            return list(self._records)

    def spawned_groups(self) -> set[int]:
        return {record["pid"] for record in self.records if record["kind"] == SPAWN}

    def __enter__(self) -> Simulation:
        node_executable()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "spawnwatch", "simulate", *self.settings.args(), "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="simulation-reader", daemon=True)
        self._reader.start()
        try:
            first = self.wait_for(lambda records: any(r["kind"] == UP for r in records), self.startup_timeout)
        except BaseException:
            self._stop()
            raise
        self.pid = next(r["pid"] for r in first if r["kind"] == SIMULATE)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        problem = self._stop()
        if problem and exc_type is None:
            raise SimulationError(problem)

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            with self._changed:
                self._records.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[Record]], bool], timeout: float = 30.0) -> list[Record]:
        """Wait until `predicate(records so far)` holds; return those records."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self._records):
                remaining = deadline - time.monotonic()
                if self._process.poll() is not None and not self._reader_alive():
                    raise SimulationError(f"the simulation ended (status {self._process.returncode}) first")
                if remaining <= 0:
                    raise TimeoutError(f"no such records within {timeout} s; last: {self._records[-3:]}")
                self._changed.wait(min(remaining, 0.5))
            return list(self._records)

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def _stop(self) -> str | None:
        """Stop the simulation; describe what went wrong, if anything."""
        assert self._process is not None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            status = self._process.wait(timeout=30 + CLEANUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            status = self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        left = [proc.pid for proc in group_members(self.spawned_groups())]
        if left:
            return f"processes left behind: {left}"
        if status != 0:
            return f"spawnwatch simulate exited with status {status}"
        return None
