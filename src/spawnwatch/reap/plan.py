"""What `reap` would end, and whether it may: pure, from a snapshot or the ledger's alerts.

Processes: `plan()` picks the group (signature + spawner, optionally container), keeps
the newest N members and lists every process to end: each other member and its whole
subtree, so the grandchildren a member holds are ended with it instead of being
orphaned by its death.

Containers that exited `docker run` clients left running: `pick()` is the one
`orphaned_containers` alert of the ledger that a selection names.

The gate (`refusal`, `container_refusal`) stands before any signal: a group is ended
only while `watch` flags it (a rule fires on the snapshot; for containers, the ledger's
`watch` still runs and the spawner still is the process the alert named), unless
forced; pid 1 and this command's own ancestry are never the spawner of anything it
ends, forced or not.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

from spawnwatch.adapters.engine import SHORT_ID, ContainerInfo
from spawnwatch.events import ProcessInfo
from spawnwatch.detect import REAPABLE
from spawnwatch.pipeline import Judgement

INIT = 1
ORPHANED_CONTAINERS = "orphaned_containers"

SignatureOf = Callable[[ProcessInfo], str]
ContainerOf = Callable[[ProcessInfo], "str | None"]  # a container id, None on the host


class SelectionError(ValueError):
    """The selection matches no group, or more than one: the message says which."""


@dataclass(frozen=True, slots=True)
class Selection:
    signature: str  # a group signature, or a command line that normalises to one
    spawner: int | None = None  # pid of the parent the group's members share
    container: str | None = None  # container id (or id prefix) the group runs in
    keep: int = 0  # the newest members to leave alone


# --- processes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    process: ProcessInfo
    member: int  # pid of the group member whose subtree it is in (itself for a member)


@dataclass(frozen=True, slots=True)
class GroupId:
    """A group as `watch` names it in an alert: spawner pid, signature, container id."""

    spawner: int
    signature: str
    container: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    signature: str
    spawner_pid: int
    spawner: ProcessInfo | None  # None when the spawner is not in the snapshot
    container: str | None
    kept: tuple[ProcessInfo, ...]
    targets: tuple[Target, ...]  # members first (oldest first), each followed by its subtree

    @property
    def members(self) -> tuple[ProcessInfo, ...]:
        return tuple(t.process for t in self.targets if t.member == t.process.pid)

    @property
    def group(self) -> GroupId:
        return GroupId(self.spawner_pid, self.signature, self.container)


def plan(
    processes: Sequence[ProcessInfo],
    selection: Selection,
    signature_of: SignatureOf,
    container_of: ContainerOf,
) -> Plan:
    """What would be ended for `selection`; raises SelectionError when it is not one group."""
    wanted = wanted_signatures(selection.signature, signature_of)
    by_pid = {p.pid: p for p in processes}
    groups: dict[tuple[int, str | None], list[ProcessInfo]] = defaultdict(list)
    for p in processes:
        if selection.spawner is not None and p.ppid != selection.spawner:
            continue
        if signature_of(p) not in wanted:
            continue
        container = container_of(p)
        if selection.container is not None and not (container or "").startswith(selection.container):
            continue
        groups[(p.ppid, container)].append(p)
    if not groups:
        raise SelectionError(f"no process with signature {selection.signature!r} matches")
    if len(groups) > 1:
        choices = ", ".join(
            f"--spawner {spawner}" + (f" --container {c[:12]}" if c else "") + f" ({len(members)} processes)"
            for (spawner, c), members in sorted(groups.items(), key=lambda kv: -len(kv[1]))
        )
        raise SelectionError(f"signature {selection.signature!r} matches several groups; pick one: {choices}")
    (spawner, container), members = next(iter(groups.items()))
    members.sort(key=lambda p: (p.start, p.pid))
    cut = len(members) - selection.keep if selection.keep else len(members)
    ended, kept = members[:max(cut, 0)], members[max(cut, 0):]
    children = children_of(processes)
    targets: list[Target] = []
    for member in ended:
        targets.append(Target(member, member.pid))
        targets.extend(Target(p, member.pid) for p in subtree(member.pid, children))
    return Plan(
        signature=signature_of(members[0]),
        spawner_pid=spawner,
        spawner=by_pid.get(spawner),
        container=container,
        kept=tuple(kept),
        targets=tuple(targets),
    )


def wanted_signatures(signature: str, signature_of: SignatureOf) -> set[str]:
    """`--signature` as given, and the signature of it read as a command line."""
    wanted = {signature}
    try:
        argv = shlex.split(signature)
    except ValueError:  # unbalanced quotes: only an exact signature can match
        argv = []
    if argv:
        wanted.add(signature_of(ProcessInfo(pid=0, ppid=0, start=0.0, comm=argv[0], argv=tuple(argv))))
    return wanted


def flagged(judged: Judgement) -> frozenset[GroupId]:
    """The groups a rule of `watch` (one a signal can remedy) fires on in the judged snapshot."""
    return frozenset(
        GroupId(alert.spawner["pid"], alert.signature, alert.container["id"] if alert.container else None)
        for alert in judged.reapable()
    )


def children_of(processes: Iterable[ProcessInfo]) -> Mapping[int, list[ProcessInfo]]:
    children: dict[int, list[ProcessInfo]] = defaultdict(list)
    for p in processes:
        children[p.ppid].append(p)
    return children


def subtree(pid: int, children: Mapping[int, list[ProcessInfo]]) -> list[ProcessInfo]:
    found: list[ProcessInfo] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child.pid)
    return found


# --- containers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListedContainer:
    id: str
    name: str
    image: str | None
    ambiguous: bool = False  # the link to the client that started it is uncertain: never ended
    runtime: str = "docker"  # whose container: "docker" or "podman" (an older ledger's are Docker's)


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


# Runtimes that run containers for the kubelet: a container of a pod that ends is started
# again by it, so `reap` ends the processes in it and leaves the pod to the cluster.
KUBELET_RUNTIMES = frozenset({"containerd", "cri-o", "kubernetes"})
PROCESSES_ONLY = ("only the processes are ended, not their container: the kubelet starts a pod's container again "
                  "(containerd and CRI-O run them for it); to end it for good, delete the pod (kubectl delete pod)")


def processes_only(container: ContainerInfo | None) -> str | None:
    """Why `reap` leaves the container of the processes it ends to the cluster, when it does."""
    return PROCESSES_ONLY if container is not None and container.runtime in KUBELET_RUNTIMES else None


AMBIGUOUS = "which client started it is ambiguous (another engine's client may have): left out"


def container_leaks(alerts: Iterable[dict[str, Any]]) -> list[ContainerLeak]:
    """The `orphaned_containers` alerts among a ledger's (KeyError, TypeError: not a ledger's alert)."""
    return [
        ContainerLeak(
            signature=alert["signature"],
            spawner=alert["spawner"],
            container=alert.get("container"),
            containers=tuple(
                ListedContainer(c["id"], c["name"], c.get("image"), bool(alert.get("ambiguous") or c.get("ambiguous")),
                                str(c.get("runtime") or "docker"))
                for c in alert["containers"]
            ),
            listed_at=float(alert["listed_at"]),
        )
        for alert in alerts
        if alert.get("rule") == ORPHANED_CONTAINERS
    ]


def names_docker_client(selection: Selection, signature_of: SignatureOf) -> bool:
    """Whether the selection's signature is a `docker` or `podman` client's (`docker run IMAGE ...`)."""
    return any(s.split()[:1] in (["docker"], ["podman"]) for s in wanted_signatures(selection.signature, signature_of))


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


def recheck(listed: ListedContainer, info: ContainerInfo, listed_at: float) -> str | None:
    """Why a running container must be left alone after all (None: it is the one listed)."""
    if info.id != listed.id:
        return f"the engine answers with another container ({info.id[:SHORT_ID]})"
    if info.created is None:
        return "the engine does not say when it was created"
    if info.created > listed_at:
        return "created after the alert listed it"
    return None


# --- the gate ---------------------------------------------------------------------------------


def refusal(chosen: Plan, flagged_groups: Collection[GroupId], protected: Collection[int], force: bool) -> str | None:
    """Why the group of `chosen` must not be ended (None: it may be)."""
    unflagged = None if chosen.group in flagged_groups else (
        f"no rule of `watch` ({', '.join(REAPABLE)}) flags this group now; "
        "check it with `spawnwatch tree`, or add --force to end it anyway")
    return _gate(chosen.spawner_pid, unflagged, protected, force)


def container_refusal(leak: ContainerLeak, stale: str | None, spawner_alive: bool, protected: Collection[int],
                      force: bool) -> str | None:
    """Why the containers of `leak` must not be ended (None: they may be)."""
    if stale:
        unflagged: str | None = (
            f"the ledger is stale ({stale}): no rule of `watch` flags these containers now; "
            "start `spawnwatch watch` (or the service), or add --force to end them anyway")
    elif not spawner_alive:
        unflagged = (f"pid {leak.spawner_pid} is no longer the process the alert named (it ended, or the pid was "
                     "reused); add --force to end the containers anyway")
    else:
        unflagged = None
    return _gate(leak.spawner_pid, unflagged, protected, force)


def _gate(spawner: int, unflagged: str | None, protected: Collection[int], force: bool) -> str | None:
    refused = spawner_refusal(spawner, protected)
    if refused or force:
        return refused
    return unflagged


def spawner_refusal(spawner: int, protected: Collection[int]) -> str | None:
    """Why nothing of `spawner`'s may be ended, forced or not (None: it may be)."""
    if spawner == INIT:
        return "the spawner is pid 1 (init): its children are the system's services and adopted orphans"
    if spawner in protected:
        return f"the spawner, pid {spawner}, runs this very command (it is spawnwatch or one of its ancestors)"
    return None
