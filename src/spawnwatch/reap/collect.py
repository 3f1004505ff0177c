"""What `reap` reads before it plans and acts: the ledger's leaked containers, what the
engine and their cgroups say of them now, whether a spawner still is the process an
alert named, and which processes run this very command."""

from __future__ import annotations

import os
from dataclasses import dataclass

from spawnwatch.adapters import procfs
from spawnwatch.adapters.engine import ContainerInfo, EngineError, Engines
from spawnwatch.adapters.ledger import LedgerFile
from spawnwatch.adapters.ledger import read as read_ledger
from spawnwatch.adapters.memory import cgroup_memory
from spawnwatch.reap.plan import ContainerLeak, ListedContainer, container_leaks


def ledger_leaks(state_dir: str) -> tuple[LedgerFile | None, list[ContainerLeak]]:
    """The ledger of `watch` in `state_dir` ("": none), and the leaked containers it lists.
    LedgerError: it cannot be read or trusted; KeyError, TypeError, ValueError: an alert
    in it is not a ledger's."""
    if not state_dir:
        return None, []
    kept = read_ledger(state_dir)
    if kept is None:
        return None, []
    return kept, container_leaks(kept.alerts)


def spawner_is_alive(leak: ContainerLeak) -> bool:
    """Whether the spawner's pid still is the process the alert named."""
    start = leak.spawner.get("start")
    return start is not None and procfs.same_process(leak.spawner_pid, start)


@dataclass(frozen=True, slots=True)
class ContainerState:
    """A listed container as the engine and its cgroup say now."""

    listed: ListedContainer
    info: ContainerInfo | None  # None: the engine knows it no more, or did not answer
    memory_bytes: int | None
    unknown: str | None = None  # why the engine could not say (then info is None)

    @property
    def running(self) -> bool:
        return self.info is not None and bool(self.info.running)

    def age_s(self, now: float) -> float | None:
        return now - self.info.created if self.info and self.info.created else None


def container_memory(info: ContainerInfo) -> int | None:
    """What the container's cgroup holds now, as `docker stats` counts it."""
    memory = cgroup_memory(info.pid) if info.pid else None
    return memory.used if memory else None


def survey(leak: ContainerLeak, engines: Engines) -> list[ContainerState]:
    states = []
    for listed in leak.containers:
        try:
            info = engines.of(listed.runtime).lookup(listed.id)
        except EngineError as exc:
            states.append(ContainerState(listed, None, None, unknown=f"the engine could not be reached: {exc}"))
            continue
        states.append(ContainerState(listed, info, container_memory(info) if info and info.running else None))
    return states


def self_and_ancestors() -> set[int]:
    """This command's pid and its ancestors': never stopped, never a spawner to reap."""
    pids = {os.getpid()}
    pid: int | None = os.getppid()
    while pid and pid not in pids:
        pids.add(pid)
        pid = procfs.parent_pid(pid)
    return pids
