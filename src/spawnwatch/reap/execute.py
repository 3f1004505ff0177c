"""Acting on a plan: the only part of `reap` that signals processes or asks the engine
to end containers.

Processes: each target is pinned by (pid, start time) with a pidfd, so a pid reused
since the snapshot is never signalled; the targets are frozen (SIGSTOP) so none can
spawn an escaping child, children spawned since the snapshot are swept in, then
SIGTERM, a grace period, and SIGKILL for what is left.  No target is ever left frozen:
whatever ends the run early (Ctrl-C, SIGTERM, SIGHUP, a pidfd that cannot be opened)
resumes every one it stopped before the error goes on, and nothing is ended then.

Containers: each listed container is looked up again right before it is ended (it
still runs, it is the very container, created before the alert listed it), killed,
and removed unless the engine does so itself (`--rm`).  Only a container the engine
says does not exist is gone; an engine that does not answer is a failure.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any, Iterable

from spawnwatch.adapters import procfs
from spawnwatch.adapters.engine import EngineError, Engines
from spawnwatch.adapters.signals import Handle, allow_open_files, open_files_left, wait_exited
from spawnwatch.events import ProcessInfo
from spawnwatch.reap.collect import container_memory, self_and_ancestors
from spawnwatch.reap.plan import AMBIGUOUS, ContainerLeak, ListedContainer, Plan, children_of, recheck, subtree

MAX_SWEEPS = 8  # rounds of looking for children forked before their parent froze
# Files the reads of /proc beside the held pidfds need: without them a process would
# read as gone (its /proc files unreadable) instead of being held.
SPARE_FILES = 16
INTERRUPTIONS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ReapError(Exception):
    """The targets could not all be held; every one stopped was resumed, none ended."""


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP came while targets were stopped: every one was resumed, none ended."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        super().__init__(self.signal.name)


@dataclass
class Outcome:
    ended: list[ProcessInfo] = field(default_factory=list)
    survived: list[ProcessInfo] = field(default_factory=list)  # still alive after SIGKILL
    gone: list[ProcessInfo] = field(default_factory=list)  # exited (or pid reused) before we acted
    zombies: list[ProcessInfo] = field(default_factory=list)  # dead already; only their parent can reap them
    killed: list[ProcessInfo] = field(default_factory=list)  # needed SIGKILL
    spared: list[ProcessInfo] = field(default_factory=list)  # this command or its ancestors: never signalled
    rss_freed: int = 0


def end_processes(target_plan: Plan, grace: float = 5.0) -> Outcome:
    """End the plan's targets: SIGTERM, then SIGKILL for what is alive `grace` seconds later.
    ReapError, Interrupted (or any other error): every target stopped was resumed, none ended."""
    outcome = Outcome()
    allow_open_files(len(target_plan.targets))
    room = open_files_left() - SPARE_FILES  # processes held at once
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
        if len(handles) >= room:
            raise ReapError(f"the open-files limit leaves room to hold {max(room, 0)} processes at once, "
                            f"not pid {p.pid} too: raise it (`ulimit -n`)")
        try:
            handle = Handle.open(p.pid, p.start)
        except OSError as exc:  # EMFILE: files opened meanwhile by another thread
            raise ReapError(f"cannot hold pid {p.pid} to signal it safely: {exc.strerror} ({len(handles)} held; "
                            "raise the open-files limit, `ulimit -n`)") from exc
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
        with _HeldInterruptions() as interruptions:
            try:
                for target in target_plan.targets:
                    interruptions.raise_if_interrupted()
                    pin(target.process)
                # Frozen, they spawn nothing more; children forked between the snapshot and the
                # freeze are in the table now (and may have forked before their own freeze).
                for _ in range(MAX_SWEEPS):
                    interruptions.raise_if_interrupted()
                    new = [p for p in _descendants_of(set(handles), procfs.snapshot().processes) if p.pid not in tried]
                    if not new:
                        break
                    for p in new:
                        pin(p)
                interruptions.raise_if_interrupted()
                for handle in handles.values():
                    handle.send(signal.SIGTERM)
                    handle.send(signal.SIGCONT)
            except BaseException:
                for handle in handles.values():
                    handle.send(signal.SIGCONT)
                raise
        left = wait_exited(handles.values(), grace)
        for handle in left:
            handle.send(signal.SIGKILL)
            outcome.killed.append(info[handle.pid])
        still = {h.pid for h in wait_exited(left, grace)}
    finally:
        for handle in handles.values():
            handle.close()
    for pid in handles:
        (outcome.survived if pid in still else outcome.ended).append(info[pid])
    outcome.rss_freed = sum(rss[p.pid] for p in outcome.ended)
    return outcome


class _HeldInterruptions:
    """SIGINT, SIGTERM and SIGHUP wait while targets are stopped, to be taken at the next
    `raise_if_interrupted`: acted on at once, SIGTERM's and SIGHUP's default would end this
    process with its targets still frozen, and a handler that raises could do so inside the
    very cleanup that resumes them.  Each is only noted, by a handler harmless wherever it
    runs; not blocked, which holds a signal back from the blocking thread alone (the kernel
    hands a process's signal to any thread that takes it)."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_HeldInterruptions":
        self._previous = {signum: signal.signal(signum, self._note) for signum in INTERRUPTIONS}
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if self.pending is not None:  # came after the last look: acted on as it would have been
            signal.raise_signal(self.pending)

    def _note(self, signum: int, _frame: object) -> None:
        if self.pending is None:
            self.pending = signum

    def raise_if_interrupted(self) -> None:
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise Interrupted(signum)


def _descendants_of(roots: set[int], processes: Iterable[ProcessInfo]) -> list[ProcessInfo]:
    children = children_of(processes)
    found: list[ProcessInfo] = []
    for root in roots:
        found.extend(subtree(root, children))
    return found


@dataclass
class ContainerOutcome:
    ended: list[ListedContainer] = field(default_factory=list)
    gone: list[ListedContainer] = field(default_factory=list)  # the engine says it stopped or is removed
    skipped: list[tuple[ListedContainer, str]] = field(default_factory=list)  # failed the re-check, and why
    failed: list[tuple[ListedContainer, str]] = field(default_factory=list)  # may still run: why
    unremoved: list[tuple[ListedContainer, str]] = field(default_factory=list)  # killed, left stopped: why
    memory_freed: int = 0


def end_containers(leak: ContainerLeak, engines: Engines) -> ContainerOutcome:
    outcome = ContainerOutcome()
    for listed in leak.containers:
        if listed.ambiguous:
            outcome.skipped.append((listed, AMBIGUOUS))
            continue
        engine = engines.of(listed.runtime)
        try:
            info = engine.lookup(listed.id)
        except EngineError as exc:
            outcome.failed.append((listed, f"the engine could not be reached: {exc}"))
            continue
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
            try:
                now = engine.lookup(info.id)  # it may have stopped by itself meanwhile
            except EngineError:
                now = info
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
