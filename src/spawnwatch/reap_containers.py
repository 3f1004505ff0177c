"""End the containers that a host's exited `docker run` clients left running, through the engine.

Such a container is no process's child any more (containerd-shim holds it), so only the
ledger of a live `watch` knows which host's client started it: its firing
`orphaned_containers` alert for the host and the client's signature lists them.

`pick()` is pure: the one alert of the ledger that a selection (signature, spawner,
optionally the spawner's container) names.  `refusal()` is the gate, as for processes:
never for pid 1 or this command's own ancestry; and unless forced, only from a ledger
whose `watch` still runs (so the alert still fires) and for a spawner that still is
the process the alert named (pid and start time).  `execute()` checks each listed
container with the engine again right before ending it (it still runs, it is the very
container, created before the alert listed it), kills it, and removes it unless the
engine does so itself (`--rm`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Iterable

from spawnwatch.adapters import procfs
from spawnwatch.adapters.engine import SHORT_ID, ContainerInfo, DockerEngine, EngineError
from spawnwatch.adapters.memory import cgroup_memory
from spawnwatch.reap import Selection, SelectionError, SignatureOf, spawner_refusal, wanted_signatures

ORPHANED_CONTAINERS = "orphaned_containers"


@dataclass(frozen=True, slots=True)
class ListedContainer:
    id: str
    name: str
    image: str | None


@dataclass(frozen=True, slots=True)
class ContainerLeak:
    """An `orphaned_containers` alert as the ledger keeps it."""

    signature: str
    spawner: dict[str, Any]  # pid, ppid, argv, comm, and start (seconds since boot; None if unread)
    container: dict[str, Any] | None  # where the spawner runs
    containers: tuple[ListedContainer, ...]
    listed_at: float  # wall-clock time of the alert's record: each listed container is older

    @property
    def spawner_pid(self) -> int:
        return self.spawner["pid"]

    def spawner_is_alive(self) -> bool:
        """Whether the spawner's pid still is the process the alert named."""
        start = self.spawner.get("start")
        return start is not None and procfs.same_process(self.spawner_pid, start)


def container_leaks(alerts: Iterable[dict[str, Any]]) -> list[ContainerLeak]:
    """The `orphaned_containers` alerts among a ledger's (KeyError, TypeError: not a ledger's alert)."""
    return [
        ContainerLeak(
            signature=alert["signature"],
            spawner=alert["spawner"],
            container=alert.get("container"),
            containers=tuple(ListedContainer(c["id"], c["name"], c.get("image")) for c in alert["containers"]),
            listed_at=float(alert["listed_at"]),
        )
        for alert in alerts
        if alert.get("rule") == ORPHANED_CONTAINERS
    ]


def names_docker_client(selection: Selection, signature_of: SignatureOf) -> bool:
    """Whether the selection's signature is a `docker` client's (`docker run IMAGE ...`)."""
    return any(s.split()[:1] == ["docker"] for s in wanted_signatures(selection.signature, signature_of))


def pick(leaks: Iterable[ContainerLeak], selection: Selection, signature_of: SignatureOf) -> ContainerLeak | None:
    """The one leak `selection` names (None: none; SelectionError: several)."""
    wanted = wanted_signatures(selection.signature, signature_of)
    found = [
        leak for leak in leaks
        if leak.signature in wanted
        and (selection.spawner is None or leak.spawner_pid == selection.spawner)
        and (selection.container is None or ((leak.container or {}).get("id") or "").startswith(selection.container))
    ]
    if len(found) > 1:
        choices = ", ".join(f"--spawner {leak.spawner_pid} ({len(leak.containers)} containers)" for leak in found)
        raise SelectionError(f"signature {selection.signature!r} names several hosts' leaked containers; pick one: {choices}")
    return found[0] if found else None


def refusal(leak: ContainerLeak, stale: str | None, spawner_alive: bool, protected: Collection[int],
            force: bool) -> str | None:
    """Why the containers of `leak` must not be ended (None: they may be)."""
    refused = spawner_refusal(leak.spawner_pid, protected)
    if refused or force:
        return refused
    if stale:
        return (f"the ledger is stale ({stale}): no rule of `watch` flags these containers now; "
                "start `spawnwatch watch` (or the service), or add --force to end them anyway")
    if not spawner_alive:
        return (f"pid {leak.spawner_pid} is no longer the process the alert named (it ended, or the pid was "
                "reused); add --force to end the containers anyway")
    return None


def recheck(listed: ListedContainer, info: ContainerInfo, listed_at: float) -> str | None:
    """Why a running container must be left alone after all (None: it is the one listed)."""
    if info.id != listed.id:
        return f"the engine answers with another container ({info.id[:SHORT_ID]})"
    if info.created is None:
        return "the engine does not say when it was created"
    if info.created > listed_at:
        return "created after the alert listed it"
    return None


@dataclass(frozen=True, slots=True)
class ContainerState:
    """A listed container as the engine and its cgroup say now."""

    listed: ListedContainer
    info: ContainerInfo | None  # None: the engine knows it no more
    memory_bytes: int | None

    @property
    def running(self) -> bool:
        return self.info is not None and bool(self.info.running)

    def age_s(self, now: float) -> float | None:
        return now - self.info.created if self.info and self.info.created else None


def container_memory(info: ContainerInfo) -> int | None:
    """What the container's cgroup holds now, as `docker stats` counts it."""
    memory = cgroup_memory(info.pid) if info.pid else None
    return memory.used if memory else None


def survey(leak: ContainerLeak, engine: DockerEngine) -> list[ContainerState]:
    states = []
    for listed in leak.containers:
        info = engine.inspect(listed.id)
        states.append(ContainerState(listed, info, container_memory(info) if info and info.running else None))
    return states


@dataclass
class ContainerOutcome:
    ended: list[ListedContainer] = field(default_factory=list)
    gone: list[ListedContainer] = field(default_factory=list)  # stopped or removed before we acted
    skipped: list[tuple[ListedContainer, str]] = field(default_factory=list)  # failed the re-check, and why
    failed: list[tuple[ListedContainer, str]] = field(default_factory=list)  # still running: the engine's error
    unremoved: list[tuple[ListedContainer, str]] = field(default_factory=list)  # killed, left stopped: why
    memory_freed: int = 0


def execute(leak: ContainerLeak, engine: DockerEngine) -> ContainerOutcome:
    outcome = ContainerOutcome()
    for listed in leak.containers:
        info = engine.inspect(listed.id)
        if info is None or not info.running:
            outcome.gone.append(listed)
            continue
        why = recheck(listed, info, leak.listed_at)
        if why:
            outcome.skipped.append((listed, why))
            continue
        memory = container_memory(info) or 0
        try:
            killed = engine.kill(info.id)
        except EngineError as exc:
            now = engine.inspect(info.id)  # it may have stopped by itself meanwhile
            if now is not None and now.running:
                outcome.failed.append((listed, str(exc)))
                continue
            killed = False
        if not killed:
            outcome.gone.append(listed)
            continue
        outcome.ended.append(listed)
        outcome.memory_freed += memory
        if not info.auto_remove:  # a --rm container the engine removes once it stops
            try:
                engine.remove(info.id)
            except EngineError as exc:
                outcome.unremoved.append((listed, str(exc)))
    return outcome
