"""End a leaked group of identical children without restarting what spawned them.

`plan()` is pure: from a process snapshot it picks the group (signature + spawner,
optionally container), keeps the newest N members and lists every process to end:
each other member and its whole subtree, so the grandchildren a member holds are
ended with it instead of being orphaned by its death.

`refusal()` is the gate before any signal: a group is ended only when a rule of
`watch` flags it now (`flagged()` runs the very pipeline of `watch` on the same
snapshot), unless forced; pid 1 and this command's own ancestry are never the
spawner of a group it ends, forced or not.

`execute()` acts on a plan: it pins every target by (pid, start time) with a pidfd,
so a pid reused since the snapshot is never signalled; freezes the targets (SIGSTOP)
so none can spawn an escaping child, sweeps in any child spawned since the snapshot,
then sends SIGTERM, waits a grace period, and SIGKILLs what is left.
"""

from __future__ import annotations

import os
import shlex
import signal
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable, Mapping, Sequence

from spawnwatch.adapters import procfs
from spawnwatch.adapters.signals import Handle, allow_open_files, wait_exited
from spawnwatch.alerts import FIRING, ResolveContainer
from spawnwatch.config import Config
from spawnwatch.events import ProcessInfo, Snapshot
from spawnwatch.pipeline import Pipeline

MAX_SWEEPS = 8  # rounds of looking for children forked before their parent froze
INIT = 1
# Rules whose leaked processes a signal can end (zombies are dead already: only
# their parent, by waiting, or its end, clears them; an OOM kill ended its victim).
REAPABLE = ("accumulating", "orphaned", "spawn_rate")

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
    """What `execute` would end for `selection`; raises SelectionError when it is not one group."""
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
    children = _children(processes)
    targets: list[Target] = []
    for member in ended:
        targets.append(Target(member, member.pid))
        targets.extend(Target(p, member.pid) for p in _subtree(member.pid, children))
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


def flagged(config: Config, snapshot: Snapshot, resolve_container: ResolveContainer) -> frozenset[GroupId]:
    """The groups a rule of `watch` (one a signal can remedy) fires on in this snapshot."""
    pipeline = Pipeline(config, resolve_container=resolve_container)
    return frozenset(
        GroupId(alert.spawner["pid"], alert.signature, alert.container["id"] if alert.container else None)
        for alert in pipeline.feed(snapshot)
        if alert.state == FIRING and alert.rule in REAPABLE
    )


def refusal(chosen: Plan, flagged_groups: Collection[GroupId], protected: Collection[int], force: bool) -> str | None:
    """Why `chosen` must not be ended (None: it may be)."""
    protected_spawner = spawner_refusal(chosen.spawner_pid, protected)
    if protected_spawner:
        return protected_spawner
    if not force and chosen.group not in flagged_groups:
        return (
            f"no rule of `watch` ({', '.join(REAPABLE)}) flags this group now; "
            "check it with `spawnwatch tree`, or add --force to end it anyway"
        )
    return None


def spawner_refusal(spawner: int, protected: Collection[int]) -> str | None:
    """Why nothing of `spawner`'s may be ended, forced or not (None: it may be)."""
    if spawner == INIT:
        return "the spawner is pid 1 (init): its children are the system's services and adopted orphans"
    if spawner in protected:
        return f"the spawner, pid {spawner}, runs this very command (it is spawnwatch or one of its ancestors)"
    return None


def _children(processes: Iterable[ProcessInfo]) -> Mapping[int, list[ProcessInfo]]:
    children: dict[int, list[ProcessInfo]] = defaultdict(list)
    for p in processes:
        children[p.ppid].append(p)
    return children


def _subtree(pid: int, children: Mapping[int, list[ProcessInfo]]) -> list[ProcessInfo]:
    found: list[ProcessInfo] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child.pid)
    return found


@dataclass
class Outcome:
    ended: list[ProcessInfo] = field(default_factory=list)
    survived: list[ProcessInfo] = field(default_factory=list)  # still alive after SIGKILL
    gone: list[ProcessInfo] = field(default_factory=list)  # exited (or pid reused) before we acted
    zombies: list[ProcessInfo] = field(default_factory=list)  # dead already; only their parent can reap them
    killed: list[ProcessInfo] = field(default_factory=list)  # needed SIGKILL
    spared: list[ProcessInfo] = field(default_factory=list)  # this command or its ancestors: never signalled
    rss_freed: int = 0


def execute(target_plan: Plan, grace: float = 5.0) -> Outcome:
    """End the plan's targets: SIGTERM, then SIGKILL for what is alive `grace` seconds later."""
    outcome = Outcome()
    allow_open_files(len(target_plan.targets))
    handles: dict[int, Handle] = {}
    rss: dict[int, int] = {}
    info: dict[int, ProcessInfo] = {}

    # Stopping ourselves (or the shell or sudo we run under) would hang this very command.
    protected = self_and_ancestors()

    tried: set[int] = set()

    def pin(p: ProcessInfo) -> None:
        tried.add(p.pid)
        if p.pid in protected:
            outcome.spared.append(p)
            return
        handle = Handle.open(p.pid, p.start)
        if handle is None:
            outcome.gone.append(p)
        elif handle.exited():
            outcome.zombies.append(p)
            handle.close()
        else:
            handles[p.pid], info[p.pid] = handle, p
            rss[p.pid] = procfs.memory_of([p.pid]).rss_bytes
            handle.send(signal.SIGSTOP)

    try:
        for target in target_plan.targets:
            pin(target.process)
        # Frozen, they spawn nothing more; children forked between the snapshot and the
        # freeze are in the table now (and may have forked before their own freeze).
        for _ in range(MAX_SWEEPS):
            new = [p for p in _descendants_of(set(handles), procfs.snapshot().processes) if p.pid not in tried]
            if not new:
                break
            for p in new:
                pin(p)
        for handle in handles.values():
            handle.send(signal.SIGTERM)
            handle.send(signal.SIGCONT)
        left = wait_exited(handles.values(), grace)
        for handle in left:
            handle.send(signal.SIGKILL)
            outcome.killed.append(info[handle.pid])
        still = {h.pid for h in wait_exited(left, grace)}
        for pid in handles:
            (outcome.survived if pid in still else outcome.ended).append(info[pid])
        outcome.rss_freed = sum(rss[p.pid] for p in outcome.ended)
    finally:
        for handle in handles.values():
            handle.close()
    return outcome


def self_and_ancestors() -> set[int]:
    """This command's pid and its ancestors': never stopped, never a spawner to reap."""
    pids = {os.getpid()}
    pid: int | None = os.getppid()
    while pid and pid not in pids:
        pids.add(pid)
        pid = procfs.parent_pid(pid)
    return pids


def _descendants_of(roots: set[int], processes: Iterable[ProcessInfo]) -> list[ProcessInfo]:
    children = _children(processes)
    found: list[ProcessInfo] = []
    for root in roots:
        found.extend(_subtree(root, children))
    return found
