"""Containers and the processes that asked for them: the book behind `orphaned_containers`.

A stdio MCP server run as `docker run -i --rm IMAGE` lives in a container, not under its
host: when the host kills the `docker run` client and the server ignores the end of its
stdin, the container runs on under containerd-shim and the process tree shows nothing.
This book joins the two sides:

  clients     processes whose argv is a `docker run` / `create` / `start` (Signer.container_client),
              heard from the lineage when they exec (`changed`), or, when they ran before the
              session (or their exec was lost), from the /proc snapshot or a resync (`seeded`);
  containers  the engine's create / start / die / destroy events (ContainerEvent); a container
              already running when the session began comes as the create and start the
              engine sent before it, dated by the engine (the resolver's `found_running`).

A create is claimed by the oldest pending run/create client that names it (`--name`), or,
when the client gave no name, that asked for its image, whose labels (`--label`) the
container carries when the engine told them, and started within `match_window_s`
before it (the engine's event stream may lag, and a pull delays the create); a start, by a
pending `docker start` client naming the container, started within the window before it.
Either side may arrive first: a client also claims a container that came before it and
that no client claimed.  A client waits for its container `match_window_s` from its start,
or, seeded, from the snapshot (its container, found running, is told after it).  The
client that stays attached to a container's stdio (run without -d, start with -a or -i)
is the container's client.  So a `docker run -i` client that ran before `watch` started
and is killed during the session still leaves its container charged to its host.

A container is leaked when it runs, its client exited at least `grace_s` ago (its die
event may arrive after the client's exit), it was not started detached (the client's -d,
or the engine saying no client attached) and no compose project owns it.  It is charged
like an orphan: to the group of the client, or of the highest exited ancestor of the
client whose spawner lives (`sh -c 'docker run ...'` killed with its client).  A
container whose client exited before the session began is never charged: nothing shows
who asked for it.

Two engines are followed: the Docker engine (`local_engine`) and Podman (events of engine
PODMAN_ENGINE).  A client asks only for containers of its own engine: a podman client for
Podman's, a docker client of the followed engine for Docker's; one whose -H, --context,
DOCKER_HOST or DOCKER_CONTEXT names another engine (`docker -H ssh://other run`) is never
matched.  The engine
says nothing of which client asked for a container, so a link is ambiguous when another
client could have made it: several clients waited for containers of the one image at
once (rivals), or a client found several of them unclaimed, or its engine cannot be told
(a named context, an environment that could not be read).  Such a container is still
listed, marked `ambiguous`, and `reap` leaves it; unless every rival has exited too and
is charged to the same group (then whichever of them made it, it leaked there).

What must outlive a restart of `watch` (an upgrade, a crash) is the link of a running
container to its client and to the group it is charged to (`links`): a new `watch`
cannot learn it again, its client is gone.  `restore` takes such links back, each
already checked against the engine (the container runs) and against the lineage (the
spawner charged is the very process, by pid and start, so a reused pid is never charged;
a client still alive is the snapshot's to link again).

Pure: argv is read through the injected `client_of`.  Every table is bounded.
"""

from __future__ import annotations

import posixpath
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from spawnwatch.bounded import BoundedMap, Memo, weigh_words
from spawnwatch.clock import same_start, start_tick, tick_start
from spawnwatch.detect.groups import GroupBook, GroupKey, charged_child
from spawnwatch.events import ContainerEvent
from spawnwatch.lineage import Key, Process
from spawnwatch.signature import DEFAULT_ENGINE, PODMAN_ENGINE, ContainerClient

ClientOf = Callable[[Sequence[str], "Sequence[str] | None"], "ContainerClient | None"]

MAX_PENDING_CLIENTS = 1024  # clients waiting for their container's event
# What a command line asks a container engine for, kept per (argv, environ) as its
# signature is (lineage.py): every exec is asked, and a storm execs the same few.
CLIENT_ARGVS_KEPT = 1024
CLIENT_ARGVS_WEIGHT = 1 << 20
MAX_CONTAINERS = 4096  # containers known from the engine's events
CLOCK_SKEW_S = 1.0  # engine events are dated by the wall clock, process events by the boot clock
DEFAULT_IMAGE_PREFIXES = ("docker.io/library/", "docker.io/", "index.docker.io/library/", "index.docker.io/")
MAX_RIVALS = MAX_PENDING_CLIENTS  # clients kept per set of rivals; beyond, its containers stay ambiguous


@dataclass(eq=False)
class _Rivals:
    """Clients that could each have asked for the same containers: sets merged as they meet
    (`merged_into`), the merged set read through `root()`."""

    clients: set[Process] = field(default_factory=set)
    overflowed: bool = False
    merged_into: _Rivals | None = None

    def root(self) -> _Rivals:
        rivals = self
        while rivals.merged_into is not None:
            rivals = rivals.merged_into
        if rivals is not self:
            self.merged_into = rivals
        return rivals

    def add(self, client: Process) -> None:
        if len(self.clients) < MAX_RIVALS:
            self.clients.add(client)
        elif client not in self.clients:
            self.overflowed = True


def _merged(*sets: _Rivals | None) -> _Rivals:
    """One set holding the clients of `sets` (None ones left out)."""
    roots = list(dict.fromkeys(s.root() for s in sets if s is not None))
    if not roots:
        return _Rivals()
    merged, others = roots[0], roots[1:]
    for other in others:
        for client in other.clients:
            merged.add(client)
        merged.overflowed |= other.overflowed
        other.merged_into, other.clients = merged, set()
    return merged


@dataclass(eq=False)
class Container:
    id: str
    name: str
    image: str
    created_at: float
    compose_project: str = ""
    labels: frozenset[str] = frozenset()  # NAME=value; none when the engine did not tell them
    engine: str = ""  # as ContainerEvent.engine
    running: bool = False
    started_at: float | None = None
    detached: bool = False  # the engine said no client attached at its start
    client: Process | None = None  # the client attached to its stdio
    claimed: bool = False  # a client asked for it (attached or not)
    start_claimed: bool = False  # a `docker start` client asked for its last start
    charge: GroupKey | None = None  # where its leak is charged, once found
    rivals: _Rivals | None = None  # the clients that could have asked for it, when not only its own
    engine_unknown: bool = False  # its client's engine could not be told
    ambiguous: bool = False  # another client may have asked for it (as of the last `leaked`)
    judged_ambiguous: bool = False  # so the `watch` before a restart judged it (its rivals are not known now)
    memory_bytes: int | None = None
    memory_at: float | None = None


@dataclass(eq=False)
class _Pending:
    proc: Process
    call: ContainerClient
    at: float  # when it asked: its start (its exec follows its fork within milliseconds)
    until: float  # when it stops waiting for its container
    engine: str  # of the containers it may ask for, as ContainerEvent.engine
    unmatched: set[str] = field(default_factory=set)  # start: the names it still waits for
    engine_unknown: bool = False
    rivals: _Rivals | None = None  # other clients it waited beside for the same containers


@dataclass(frozen=True, slots=True)
class Link:
    """A running container, the client attached to it, and the group its leak is charged
    to (its client exited) or would be (its client runs): what a restart must not forget.
    Times are seconds since boot (valid within one boot)."""

    container_id: str
    name: str
    image: str
    created_at: float
    started_at: float | None
    client: Key  # (pid, start in ticks)
    client_start: float
    client_exited_at: float | None  # None: it ran when the link was taken
    charge: GroupKey
    ambiguous: bool  # another client may have asked for it: `reap` leaves it, after a restart too

    def as_record(self) -> dict[str, object]:
        return {"container": {"id": self.container_id, "name": self.name, "image": self.image,
                              "created_at": self.created_at, "started_at": self.started_at,
                              "ambiguous": self.ambiguous},
                "client": {"pid": self.client[0], "start": self.client_start, "exited_at": self.client_exited_at},
                "charge": {"cgroup_id": self.charge.cgroup_id, "spawner_pid": self.charge.spawner[0],
                           "spawner_start_ticks": self.charge.spawner[1], "signature": self.charge.signature}}

    @classmethod
    def from_record(cls, record: dict) -> "Link":
        """KeyError, TypeError or ValueError when `record` is not one."""
        container, client, charge = record["container"], record["client"], record["charge"]
        started_at, exited_at = container["started_at"], client["exited_at"]
        client_start = float(client["start"])
        return cls(
            container_id=_text(container["id"]), name=_text(container["name"]), image=_text(container["image"]),
            created_at=float(container["created_at"]), started_at=None if started_at is None else float(started_at),
            client=(int(client["pid"]), start_tick(client_start)), client_start=client_start,
            client_exited_at=None if exited_at is None else float(exited_at),
            charge=GroupKey(int(charge["cgroup_id"]), (int(charge["spawner_pid"]), int(charge["spawner_start_ticks"])),
                            _text(charge["signature"])),
            ambiguous=_flag(container["ambiguous"]))


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"not true or false: {value!r:.80}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r:.80}")
    return value


def same_image(asked: str, reported: str) -> bool:
    """`busybox` asked, `busybox:latest` or `docker.io/library/busybox` reported (and the like)."""
    return asked == reported or _normal_image(asked) == _normal_image(reported)


def _normal_image(image: str) -> str:
    for prefix in DEFAULT_IMAGE_PREFIXES:
        if image.startswith(prefix):
            image = image[len(prefix):]
            break
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last or "@" in last else f"{image}:latest"


def same_engine(endpoint: str, other: str) -> bool:
    """Do the two engine addresses name one engine (`unix:///var/run/docker.sock` is
    `unix:///run/docker.sock`)?  Told by the words alone: two words for one engine read
    as two engines, which leaves a container unmatched, never wrongly charged."""
    return _normal_endpoint(endpoint) == _normal_endpoint(other)


def _normal_endpoint(endpoint: str) -> str:
    endpoint = endpoint.removeprefix("http+")
    if not endpoint.startswith("unix://"):
        return endpoint
    path = posixpath.normpath(endpoint[len("unix://"):])
    return "unix://" + (path[len("/var"):] if path.startswith("/var/run/") else path)


def _names(container: Container, name: str) -> bool:
    """Does `name` (a name, or an id or its prefix, as `docker start` takes them) name the container?"""
    return name == container.name or (len(name) >= 4 and container.id.startswith(name))


class ContainerBook:
    """A lineage listener for the clients (it hears a client's exec, `changed`, and
    `dropped`; nothing else: `joined` is called for every fork); `seeded` takes the
    processes a snapshot or a resync added, `apply` the engine's events."""

    def __init__(self, client_of: ClientOf | None, match_window_s: float, local_engine: str = DEFAULT_ENGINE) -> None:
        asked = client_of or (lambda argv, environ: None)
        self._client_of: Memo[tuple[Sequence[str], Sequence[str] | None], ContainerClient | None] = Memo(
            lambda key: asked(*key), CLIENT_ARGVS_KEPT, CLIENT_ARGVS_WEIGHT, _client_key_weight)
        self._window = match_window_s
        self._local_engine = local_engine
        self._pending: BoundedMap[Process, _Pending] = BoundedMap(MAX_PENDING_CLIENTS)  # in the order they asked
        self.containers: OrderedDict[str, Container] = OrderedDict()  # in creation order
        self._counts: Counter[str] = Counter()

    @property
    def counts(self) -> Counter[str]:
        """The book's bookkeeping; `container_clients_dropped` are the waiting clients let go
        past MAX_PENDING_CLIENTS (the oldest first)."""
        return self._counts + Counter(container_clients_dropped=self._pending.evicted)

    @property
    def client_argvs_evicted(self) -> int:
        """Command lines whose container client (or none) was let go past the limits."""
        return self._client_of.evicted

    # -- lineage.Listener ----------------------------------------------------------------

    def changed(self, proc: Process, old_signature: str) -> None:
        if proc.execed and proc.alive:
            self._asked(proc, proc.start + self._window)

    def dropped(self, proc: Process) -> None:
        self._pending.pop(proc, None)

    # -- the pipeline --------------------------------------------------------------------

    def seeded(self, processes: Iterable[Process], now: float) -> None:
        """Processes /proc showed at `now` (the session's snapshot, or a resync) that were not
        in the table, in start order.  A client among them asked at its start, before the
        session; its container is told after the snapshot, as found running: it waits for
        it `match_window_s` from now."""
        for proc in processes:
            if proc.alive:
                self._asked(proc, now + self._window)

    def _asked(self, proc: Process, until: float) -> None:
        call = self._client_of((proc.argv, proc.environ))
        if call is None:
            return
        if call.engine == PODMAN_ENGINE:
            engine = PODMAN_ENGINE
        elif call.engine is None or same_engine(call.engine, self._local_engine):
            engine = ""
        else:
            self._counts["container_clients_of_other_engines"] += 1
            return
        pending = _Pending(proc, call, proc.start, until, engine, set(call.names) if call.action == "start" else set(),
                           engine_unknown=call.engine is None)
        # The engine's event may have come first: a container (or, for `docker start`, its
        # start) that no client claimed yet.
        if call.action != "start":
            found = [c for c in self.containers.values() if not c.claimed and self._fits(pending, c)]
            if len(found) > 1:  # which of them it made, nothing tells
                pending.rivals = _merged(*(c.rivals for c in found))
                for container in found:
                    container.rivals = pending.rivals
            if found:
                self._claim(pending, found[0])
                return
        else:
            for container in self.containers.values():
                if container.running:
                    self._started_for(pending, container)
            if not pending.unmatched:
                return
        self._pending.put(proc, pending)

    # -- the engine's events -------------------------------------------------------------

    def apply(self, event: ContainerEvent) -> None:
        container = self.containers.get(event.id)
        if event.action == "destroy":
            self.containers.pop(event.id, None)
            return
        if container is None:
            if event.action not in ("create", "start"):
                return  # it was there before us: nothing asked for it that we saw
            container = self._add(event)
        if event.action == "start":
            container.running, container.started_at, container.detached = True, event.ts, event.detached
            container.start_claimed = False  # started again: a `docker start` client may claim it
            self._claim_by_start(container)
        elif event.action == "die":
            container.running = False

    def _add(self, event: ContainerEvent) -> Container:
        container = Container(id=event.id, name=event.name, image=event.image, created_at=event.ts,
                              compose_project=event.compose_project, labels=frozenset(event.labels),
                              engine=event.engine)
        self.containers[event.id] = container
        fitting = [p for p in self._pending.values() if p.call.action != "start" and self._fits(p, container)]
        if len(fitting) > 1:  # which of them made it, nothing tells
            rivals = _merged(*(p.rivals for p in fitting))
            for pending in fitting:
                rivals.add(pending.proc)
                pending.rivals = rivals
        if fitting:
            self._claim(fitting[0], container)
        if len(self.containers) > MAX_CONTAINERS:
            # The oldest that no longer runs goes first, else the oldest.
            victim = next((c for c in self.containers.values() if not c.running), next(iter(self.containers.values())))
            del self.containers[victim.id]
            self._counts["containers_dropped"] += 1
        return container

    def _fits(self, pending: _Pending, container: Container) -> bool:
        if pending.engine != container.engine:
            return False
        if not -CLOCK_SKEW_S <= container.created_at - pending.at <= self._window:
            return False
        if pending.call.labels and container.labels and not pending.call.labels <= container.labels:
            return False  # it would carry every label the client gave
        if pending.call.names:
            return container.name in pending.call.names
        return same_image(pending.call.image, container.image)

    def _claim(self, pending: _Pending, container: Container) -> None:
        self._pending.pop(pending.proc, None)
        container.claimed = True
        self._link(pending, container)

    @staticmethod
    def _link(pending: _Pending, container: Container) -> None:
        if pending.rivals is not None or container.rivals is not None:
            container.rivals = pending.rivals = _merged(pending.rivals, container.rivals)
            container.rivals.add(pending.proc)
        if pending.call.attached:
            container.client = pending.proc
            container.engine_unknown = pending.engine_unknown

    def _claim_by_start(self, container: Container) -> None:
        for pending in list(self._pending.values()):
            if pending.call.action == "start" and self._started_for(pending, container):
                return

    def _started_for(self, pending: _Pending, container: Container) -> bool:
        """Claim a container for the `docker start` client that named it, when it started
        within the window after the client: True when claimed."""
        if (container.start_claimed or pending.engine != container.engine
                or not -CLOCK_SKEW_S <= container.started_at - pending.at <= self._window):
            return False
        name = next((n for n in pending.unmatched if _names(container, n)), None)
        if name is None:
            return False
        pending.unmatched.discard(name)
        if not pending.unmatched:
            self._pending.pop(pending.proc, None)
        container.claimed = container.start_claimed = True
        self._link(pending, container)
        return True

    # -- evaluation ----------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Forget clients whose container never came within the window."""
        while self._pending:
            pending = next(iter(self._pending.values()))
            if now <= pending.until:
                break
            del self._pending[pending.proc]
            self._counts["container_clients_unmatched"] += 1

    def leaked(self, now: float, grace_s: float, book: GroupBook) -> dict[GroupKey, list[Container]]:
        """Running containers whose attached client is gone, per group they are charged to
        (only groups whose spawner still lives), oldest first."""
        leaked: dict[GroupKey, list[Container]] = {}
        rivalries: dict[int, _Rivalry] = {}  # per set of rivals, judged once
        for container in self.containers.values():
            client = container.client
            if (not container.running or container.detached or container.compose_project or client is None
                    or client.exited_at is None or now - client.exited_at < grace_s):
                continue
            if container.charge is None:
                container.charge = charge_of(client)
            group = book.groups.get(container.charge) if container.charge is not None else None
            if group is not None and group.spawner.alive:
                container.ambiguous = self._ambiguous(container, rivalries)
                leaked.setdefault(group.key, []).append(container)
        for containers in leaked.values():
            containers.sort(key=lambda c: (c.started_at or c.created_at, c.id))
        return leaked

    def links(self) -> list[Link]:
        """The running containers with an attached client whose charge is known, oldest first."""
        links = []
        rivalries: dict[int, _Rivalry] = {}
        for container in self.containers.values():
            client = container.client
            if not container.running or container.detached or container.compose_project or client is None:
                continue
            charge = container.charge or charge_of(client)
            if charge is not None:
                links.append(Link(container.id, container.name, container.image, container.created_at,
                                  container.started_at, client.key, client.start, client.exited_at, charge,
                                  self._ambiguous(container, rivalries)))
        return links

    def restore(self, links: Iterable[Link], now: float, process_of: Callable[[int], "Process | None"],
                book: GroupBook) -> int:
        """Take back the links a former `watch` kept, their containers known to run now;
        `process_of` gives the lineage's process holding a pid.  A link whose spawner is not
        that very process any more (pid and start), or whose client still runs (the snapshot
        links it again), is dropped.  How many were taken back."""

        def live(key: Key) -> Process | None:
            # Not proc.key == key: a start the last `watch` had from a fork event (nanoseconds)
            # and this one from /proc (ticks) can round to neighbouring ticks.
            proc = process_of(key[0])
            return proc if proc is not None and proc.alive and same_start(proc.start, tick_start(key[1])) else None

        restored = 0
        for link in links:
            spawner = live(link.charge.spawner)
            if spawner is None:
                self._counts["container_links_stale"] += 1
                continue
            if live(link.client) is not None or link.container_id in self.containers:
                continue
            charge = link.charge._replace(spawner=spawner.key)  # as this `watch` keys its groups
            exited_at = now if link.client_exited_at is None else link.client_exited_at  # gone while none watched
            # The client as far as it matters now: who spawned it, and when it ended.
            client = Process(pid=link.client[0], start=link.client_start, ppid=spawner.pid, comm="", argv=(),
                             signature=charge.signature, cgroup_id=charge.cgroup_id, spawner=spawner,
                             exited_at=exited_at, reaped_at=exited_at)
            self.containers[link.container_id] = Container(
                id=link.container_id, name=link.name, image=link.image, created_at=link.created_at, running=True,
                started_at=link.started_at, client=client, claimed=True, charge=charge,
                judged_ambiguous=link.ambiguous)
            book.restored(charge, spawner, now)
            restored += 1
            if len(self.containers) > MAX_CONTAINERS:
                del self.containers[next(iter(self.containers))]
                self._counts["containers_dropped"] += 1
        return restored

    @staticmethod
    def _ambiguous(container: Container, rivalries: dict[int, _Rivalry]) -> bool:
        """Could another client than its own (exited) have asked for the container?  Only one
        that started before it was created; and not when all those exited and are charged
        where it is: whichever of them made it, it leaked there."""
        if container.engine_unknown or container.judged_ambiguous:
            return True
        if container.rivals is None:
            return False
        rivals = container.rivals.root()
        rivalry = rivalries.get(id(rivals))
        if rivalry is None:
            rivalry = rivalries[id(rivals)] = _Rivalry(rivals)
        made_by = container.created_at + CLOCK_SKEW_S  # its maker started before
        return (rivals.overflowed or rivalry.first_live <= made_by
                or any(start <= made_by for charge, start in rivalry.first_exited.items() if charge != container.charge))


class _Rivalry:
    """A set of rivals as an evaluation sees it: when the first of those still running
    started, and per group the exited ones are charged to, when the first of them started."""

    def __init__(self, rivals: _Rivals) -> None:
        self.first_live = min((r.start for r in rivals.clients if r.alive), default=float("inf"))
        self.first_exited: dict[GroupKey | None, float] = {}
        for rival in rivals.clients:
            if not rival.alive:
                charge = charge_of(rival)
                self.first_exited[charge] = min(self.first_exited.get(charge, rival.start), rival.start)


def charge_of(client: Process) -> GroupKey | None:
    """The group an exited client's containers are charged to: the client's, or that of
    its highest exited ancestor whose spawner lives."""
    spawner = client.spawner
    leaker = client if spawner is not None and spawner.alive else charged_child(client)
    if leaker is None or leaker.spawner is None:
        return None
    return GroupKey(leaker.cgroup_id, leaker.spawner.key, leaker.signature)


def _client_key_weight(key: tuple[Sequence[str], Sequence[str] | None]) -> int:
    argv, environ = key
    return weigh_words(argv) + weigh_words(environ or ())
