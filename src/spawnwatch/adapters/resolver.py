"""Which container a process runs in, on any runtime: cgroup id -> container id -> name,
image, and for a pod's container its pod and namespace; the program's one cache of
cgroup -> container.

  cgroup id --(/proc/<pid>/cgroup, or a walk of the cgroup2 tree)--> cgroup path
            --(parse_cgroup_path)--> container id and runtime
            --(Docker engine, when one answers)--> name, image, compose project/service
            --(else the runtime's state on disk: runtimes.find)--> name, image, pod, namespace

Without an engine or state that names it, a container is named by its short id, and
asked about again later.  With a Docker engine, a background thread follows its event
stream, so a container started later is known before its first process is seen and a
removed one is forgotten.  Every table here is bounded.

The pure layers get a plain callable, `ContainerResolver.__call__(cgroup_id, pid)`,
returning the alert contract's `{"id", "name", "image", "runtime"}` (with "pod",
"namespace", "pod_uid" for a pod's container) or None (not in a container).
Once told the session's boot time (`queue_lifecycle`), the follower also queues the
containers' create/start/die/destroy as ContainerEvents, which the live loop drains
(`lifecycle()`) and feeds to the pipeline; the containers already running then come
first, as their create and start dated by the engine (`found_running`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Any

from spawnwatch.adapters.cgroups import (
    CgroupContainer,
    cgroup2_mount,
    container_of_proc,
    inode,
    parse_cgroup_path,
    read_proc_cgroups,
    walk_cgroup2,
)
from spawnwatch.adapters.engine import SHORT_ID, ContainerInfo, DockerEngine, container_event, found_running
from spawnwatch.adapters.memory import cgroup_memory
from spawnwatch.adapters.runtimes import RuntimeNames, containerd, find
from spawnwatch.bounded import RecentMap
from spawnwatch.events import ContainerEvent
from spawnwatch.supervise import DOCKER_EVENTS, Supervised

log = logging.getLogger(__name__)


def info_from_cgroup(ref: CgroupContainer) -> ContainerInfo:
    """What is known without an engine: the id, and a name made from it."""
    return ContainerInfo(id=ref.id, name=ref.id[:SHORT_ID], runtime=ref.runtime, pod_uid=ref.pod_uid,
                         from_engine=False)


def info_from_state(names: RuntimeNames) -> ContainerInfo:
    """What a runtime's state on disk says of a container (runtimes.find)."""
    return ContainerInfo(id=names.id, name=names.name or names.id[:SHORT_ID], image=names.image,
                         runtime=names.runtime, pod=names.pod, namespace=names.namespace,
                         pod_uid=names.pod_uid)


# --- the resolver -----------------------------------------------------------------------------


_UNKNOWN = object()


class ContainerResolver:
    """cgroup id (and pid) -> the container object of alerts, cached and kept current.

    `resolver(cgroup_id, pid)` is what the pure layers call.  Use as a context manager
    (or call `start()` / `close()`) to follow the Docker event stream in a background
    thread; without it, containers are still resolved lazily on first sight.
    """

    def __init__(
        self,
        engine: DockerEngine | None = None,
        cgroup_mount: str | None | object = _UNKNOWN,
        proc_root: str = "/proc",
        cgroups_capacity: int = 8192,
        containers_capacity: int = 1024,
        rescan_interval: float = 1.0,
        lifecycle_capacity: int = 4096,
        host_root: str = "/",
        containerd_state: str = containerd.STATE,
    ) -> None:
        self._engine = engine if engine is not None else DockerEngine()
        self._host_root = host_root  # where the runtimes' state is: / on the host, /host in a pod
        self._containerd_state = containerd_state
        self._mount = cgroup2_mount() if cgroup_mount is _UNKNOWN else cgroup_mount
        self._proc = proc_root
        self._rescan_interval = rescan_interval
        self._lock = threading.RLock()
        # cgroup id -> the container its path names, or None for a host cgroup
        self._by_cgroup = RecentMap(cgroups_capacity)
        self._containers = RecentMap(containers_capacity)  # container id -> ContainerInfo
        self._asked_engine = RecentMap(containers_capacity)  # container id -> when the engine was last asked
        self._contracts = RecentMap(cgroups_capacity)  # cgroup id -> (its container's contract, ask again at)
        # Does a container's cgroup v2 path name it?  Yes with any current runtime; no with
        # old ones on hybrid hosts, where containers share the v2 cgroup of the daemon and
        # so a cgroup id must never be taken for a container.  None: not seen yet.
        self._v2_identifies: bool | None = True if self._pure_v2() else None
        self._last_walk = float("-inf")
        self._stop = threading.Event()
        self._follower: Supervised | None = None
        self._stream: Any = None
        self.following = threading.Event()  # set once the event stream is open and caught up
        self._boot_time: float | None = None  # set by queue_lifecycle: lifecycle events are queued from then on
        self._lifecycle: deque[ContainerEvent] = deque()
        self._lifecycle_capacity = lifecycle_capacity
        self.counts: Counter[str] = Counter()  # container_events_dropped: the consumer fell behind

    def _pure_v2(self) -> bool:
        own = read_proc_cgroups("self")
        return own is not None and own.v2_path is not None and not own.v1_paths

    # --- the lookup ---

    # An unsettled answer (the pid gone, the tree walk rate-limited, no engine yet) is asked
    # again this soon; a settled one is kept for the cgroup's lifetime.
    RETRY_UNSETTLED_AFTER = 0.1

    def __call__(self, cgroup_id: int, pid: int | None = None) -> dict[str, Any] | None:
        """The container object of alerts and events for a cgroup, memoized per cgroup id:
        `trace` asks for every event, nearly all from a handful of cgroups."""
        if not cgroup_id:
            info = self.info(cgroup_id, pid)
            return info.as_contract() if info else None
        now = time.monotonic()
        with self._lock:
            memo = self._contracts.recent(cgroup_id)
        if memo is not None and now < memo[1]:
            return memo[0]
        settled, info = self.lookup(cgroup_id, pid)
        contract = info.as_contract() if info else None
        with self._lock:
            if self._v2_identifies is not False:  # else a cgroup id is no container's own
                self._contracts.put(cgroup_id, (contract, float("inf") if settled else now + self.RETRY_UNSETTLED_AFTER))
        return contract

    def info(self, cgroup_id: int, pid: int | None = None) -> ContainerInfo | None:
        return self.lookup(cgroup_id, pid)[1]

    def lookup(self, cgroup_id: int, pid: int | None = None) -> tuple[bool, ContainerInfo | None]:
        """(settled, container): settled is False when neither /proc nor the cgroup
        tree could tell yet (the pid is gone, the tree walk is rate-limited), or when
        only the cgroup path named the container (no engine answered: it may be
        restarting), so a caller that memoizes answers knows to ask again."""
        with self._lock:
            ref = self._by_cgroup.recent(cgroup_id, _UNKNOWN) if cgroup_id else _UNKNOWN
        if ref is _UNKNOWN and pid:
            ref = self._from_pid(cgroup_id, pid)
        if ref is _UNKNOWN and cgroup_id:
            ref = self._from_tree(cgroup_id)
        if ref is _UNKNOWN:
            return False, None
        if ref is None:
            return True, None
        info = self._describe(ref)
        return info.from_engine, info

    def container(self, container_id: str) -> ContainerInfo | None:
        """A container by (full) id, from the cache or the engine."""
        with self._lock:
            known = self._containers.recent(container_id)
        return known or self._engine.inspect(container_id)

    def known(self) -> list[ContainerInfo]:
        """The containers it knows now: from lookups and the event stream."""
        with self._lock:
            return list(self._containers.values())

    def evicted_by_table(self) -> dict[str, int]:
        """Entries the caches let go past their capacities, the least recently used first."""
        with self._lock:
            return {"container_cgroups": self._by_cgroup.evicted, "containers": self._containers.evicted,
                    "engine_asks": self._asked_engine.evicted, "container_contracts": self._contracts.evicted}

    def memory_of(self, container_id: str) -> int | None:
        """Memory of a running container (its cgroup's, as `docker stats` counts it), None when unknown."""
        info = self.container(container_id)
        measured = cgroup_memory(info.pid) if info is not None and info.pid else None
        return measured.used if measured is not None else None

    def queue_lifecycle(self, boot_time: float) -> None:
        """Queue the containers' lifecycle events from now on, dated with the session's
        `boot_time` (the wall-clock time of boot), after the create and start of every
        container running now (`found_running`): their events came before the session, and
        the clients that asked for them may be in its snapshot."""
        self._boot_time = boot_time
        running = sorted(self._engine.containers(), key=lambda info: (info.created or 0.0, info.id))
        found = [event for info in running for event in found_running(info, boot_time)]
        with self._lock:
            # Ahead of what the stream queued while they were listed: a die heard meanwhile
            # must come after the start that says the container runs.
            self._lifecycle.extendleft(reversed(found))
            self._trim_lifecycle()

    def lifecycle(self) -> list[ContainerEvent]:
        """The lifecycle events queued since the last call, oldest first."""
        with self._lock:
            events = list(self._lifecycle)
            self._lifecycle.clear()
        return events

    def cache_sizes(self) -> dict[str, int]:
        with self._lock:
            return {"cgroups": len(self._by_cgroup), "containers": len(self._containers), "contracts": len(self._contracts)}

    def _from_pid(self, cgroup_id: int, pid: int) -> CgroupContainer | None | object:
        cgroups = read_proc_cgroups(pid, self._proc)
        if cgroups is None:
            return _UNKNOWN
        if cgroup_id and inode(self._mount, cgroups.v2_path) != cgroup_id:
            # The pid was reused, or the process moved, since the event: its /proc
            # says nothing about this cgroup.
            return _UNKNOWN
        ref, by_v2 = container_of_proc(cgroups)
        with self._lock:
            if ref is not None:
                self._learn_runtime_layout(by_v2)
            if cgroup_id and (by_v2 or (ref is None and self._v2_identifies is not False)):
                self._by_cgroup.put(cgroup_id, ref)
        return ref

    def _learn_runtime_layout(self, by_v2: bool) -> None:
        if self._v2_identifies is None or self._v2_identifies != by_v2:
            self._v2_identifies = by_v2
            if not by_v2:
                for key in [k for k, v in self._by_cgroup.items() if v is None]:
                    del self._by_cgroup[key]
                self._contracts.clear()

    def _from_tree(self, cgroup_id: int) -> CgroupContainer | None | object:
        """Find a cgroup id nobody's /proc told us about by walking the cgroup2 tree
        (rate-limited: a walk costs a directory read per cgroup)."""
        if self._mount is None or self._v2_identifies is False:
            return _UNKNOWN
        now = time.monotonic()
        with self._lock:
            if now - self._last_walk < self._rescan_interval:
                return _UNKNOWN
            self._last_walk = now
        found: CgroupContainer | None | object = _UNKNOWN
        for cgroup_id_of_path, path in walk_cgroup2(self._mount, limit=self._by_cgroup.limit):
            ref = parse_cgroup_path(path)
            if ref is None:
                continue
            with self._lock:
                self._by_cgroup.put(cgroup_id_of_path, ref)
            if cgroup_id_of_path == cgroup_id:
                found = ref
        return found

    # How often the engine is asked again about a container only its cgroup path named: it
    # may have been down, restarting, or too slow to answer (an inspect times out in 5 s),
    # and a start event it missed is never sent again.
    ASK_ENGINE_AGAIN_AFTER = 5.0

    def _describe(self, ref: CgroupContainer) -> ContainerInfo:
        now = time.monotonic()
        with self._lock:
            known = self._containers.recent(ref.id)
            asked = self._asked_engine.recent(ref.id, float("-inf"))
        if known and (known.from_engine or now - asked < self.ASK_ENGINE_AGAIN_AFTER):
            return known
        info = self._ask_engine(ref) or self._ask_state(ref) or known or info_from_cgroup(ref)
        with self._lock:
            self._asked_engine.put(ref.id, now)
            self._containers.put(ref.id, info)
        return info

    def _ask_engine(self, ref: CgroupContainer) -> ContainerInfo | None:
        # Docker also runs containers under custom cgroup parents (`/<parent>/<id>`, read
        # as containerd's own layout) and a node's pods under cri-dockerd: ask it of every
        # container but those Podman's or CRI-O's scopes name, and a user's own cgroups.
        if ref.runtime in ("podman", "cri-o") or (ref.owner_uid is not None and ref.runtime != "docker"):
            return None
        return self._engine.inspect(ref.id)

    def _ask_state(self, ref: CgroupContainer) -> ContainerInfo | None:
        names = find(ref, self._host_root, self._containerd_state)
        return info_from_state(names) if names is not None else None

    # --- following the engine ---

    def __enter__(self) -> "ContainerResolver":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Follow the Docker event stream in a supervised daemon thread (no-op without an engine)."""
        if self._follower is None:
            self._stop.clear()
            self._follower = Supervised(DOCKER_EVENTS, self._follow, self._stop)
            self._follower.start()

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            _close_quietly(stream)
        if self._follower is not None:
            self._follower.join(timeout=5)
            self._follower = None

    # How long the follower waits between attempts to reach the engine: short, so a
    # restarted engine names new containers within seconds; a refused connect to a
    # unix socket costs microseconds.
    RECONNECT_MIN_S = 0.5
    RECONNECT_MAX_S = 5.0

    def _follow(self) -> None:
        from urllib3.exceptions import HTTPError  # docker's own dependency, loaded with it

        backoff = self.RECONNECT_MIN_S
        while not self._stop.is_set():
            stream = self._engine.events()
            if stream is not None:
                self._stream = stream
                if self._stop.is_set():  # close() ran before the stream was there to close
                    stream.close()
                    break
                backoff = self.RECONNECT_MIN_S
                # Containers started before (or while reconnecting) send no event.
                for info in self._engine.containers():
                    self._remember(info)
                self.following.set()
                try:
                    for event in stream:
                        self._on_event(event)
                except (OSError, HTTPError) as exc:  # the engine went away: reconnect
                    log.debug("docker event stream ended: %s", exc)
                finally:  # any other failure is the supervisor's, which starts this again
                    self.following.clear()
                    self._stream = None
                    _close_quietly(stream)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.RECONNECT_MAX_S)

    def _on_event(self, event: dict[str, Any]) -> None:
        action = event.get("Action") or event.get("status") or ""
        container_id = event.get("id") or (event.get("Actor") or {}).get("ID")
        if not container_id:
            return
        info = None
        if action in ("start", "restart") or action.startswith("rename"):
            info = self._engine.inspect(container_id)
            if info is not None:
                self._remember(info)
        elif action == "destroy":
            self.forget(container_id)
        if self._boot_time is not None:
            self._queue(container_event(event, self._boot_time, info))

    def _queue(self, event: ContainerEvent | None) -> None:
        if event is None:
            return
        with self._lock:
            self._lifecycle.append(event)
            self._trim_lifecycle()

    def _trim_lifecycle(self) -> None:
        while len(self._lifecycle) > self._lifecycle_capacity:
            self._lifecycle.popleft()
            self.counts["container_events_dropped"] += 1

    def _remember(self, info: ContainerInfo) -> None:
        """Cache a running container and index its cgroup, so its processes resolve by cgroup id."""
        with self._lock:
            self._containers.put(info.id, info)
            self._drop_contracts(info.id)  # renamed, or restarted with another image
        if info.pid:
            cgroups = read_proc_cgroups(info.pid, self._proc)
            if cgroups is not None:
                ref, by_v2 = container_of_proc(cgroups)
                if ref is not None and ref.id == info.id:
                    cgroup_id = inode(self._mount, cgroups.v2_path)
                    with self._lock:
                        self._learn_runtime_layout(by_v2)
                        if by_v2 and cgroup_id:
                            self._by_cgroup.put(cgroup_id, ref)

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._containers.pop(container_id, None)
            for key in [k for k, v in self._by_cgroup.items() if v is not None and v.id == container_id]:
                del self._by_cgroup[key]
            self._drop_contracts(container_id)

    def _drop_contracts(self, container_id: str) -> None:
        for key in [k for k, (c, _) in self._contracts.items() if c is not None and c["id"] == container_id]:
            del self._contracts[key]


def _close_quietly(stream: Any) -> None:
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - closing a dead socket
        pass
