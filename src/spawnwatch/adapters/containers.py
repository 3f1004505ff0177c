"""Which container a process runs in: cgroup -> container id -> name, image, compose service.

The kernel side sends each event's cgroup v2 id (the inode of the cgroup directory).
A container runtime puts every container in a cgroup whose path names the container
id (`/docker/<id>`, `docker-<id>.scope`, `cri-containerd-<id>.scope`, ...), so:

  cgroup id --(/proc/<pid>/cgroup, or a walk of the cgroup2 tree)--> cgroup path
            --(parse_cgroup_path)--> container id
            --(Docker engine, when one answers)--> name, image, compose project/service

Without a Docker engine everything still works: containers are named by their short id.
With one, a background thread follows the engine's event stream, so a container
started later is known before its first process is seen and a removed one is
forgotten.  Every table here is bounded.

The pure layers get a plain callable, `ContainerResolver.__call__(cgroup_id, pid)`,
returning the alert contract's `{"id", "name", "image"}` or None (not in a container).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator

from spawnwatch.adapters.procfs import cgroup2_mount

log = logging.getLogger(__name__)

SHORT_ID = 12

_HEX64 = r"[0-9a-f]{64}"
# One cgroup path segment that names a container on its own, by runtime.
_SCOPE = re.compile(
    rf"^(?P<prefix>docker|cri-containerd|crio|libpod|nerdctl)-(?P<id>{_HEX64})(?:\.scope)?$"
)
_BARE = re.compile(rf"^(?P<id>{_HEX64})$")
_POD = re.compile(r"^(?:kubepods-(?:[a-z]+-)?)?pod(?P<uid>[0-9a-f_-]{36})(?:\.slice)?$")
_PREFIX_RUNTIME = {
    "docker": "docker",
    "cri-containerd": "containerd",
    "nerdctl": "containerd",
    "crio": "cri-o",
    "libpod": "podman",
}
# A bare 64-hex segment: the runtime is told by the segments above it.
_PARENT_RUNTIME = {"docker": "docker", "libpod_parent": "podman", "actions_job": "docker"}


@dataclass(frozen=True, slots=True)
class CgroupContainer:
    """A container as a cgroup path reveals it."""

    id: str
    runtime: str  # docker, containerd, cri-o, podman, or "kubernetes" when only the pod tells
    pod_uid: str | None = None


def parse_cgroup_path(path: str) -> CgroupContainer | None:
    """The innermost container named by a cgroup path, or None for a host cgroup.

    >>> parse_cgroup_path("/system.slice/docker-" + "a" * 64 + ".scope").runtime
    'docker'
    """
    found: CgroupContainer | None = None
    pod_uid: str | None = None
    parent = ""
    for segment in path.split("/"):
        pod = _POD.match(segment)
        if pod:
            pod_uid = pod["uid"].replace("_", "-")
        scope = _SCOPE.match(segment)
        if scope:
            found = CgroupContainer(scope["id"], _PREFIX_RUNTIME[scope["prefix"]], pod_uid)
        elif _BARE.match(segment):
            if pod_uid is not None:
                runtime = "kubernetes"
            else:
                # containerd's own cgroupfs layout is /<namespace>/<id>
                runtime = _PARENT_RUNTIME.get(parent, "containerd")
            found = CgroupContainer(segment, runtime, pod_uid)
        if segment:
            parent = segment
    return found


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """Everything spawnwatch shows about a container; fields the engine did not give are None."""

    id: str
    name: str
    image: str | None = None
    runtime: str = "docker"
    compose_project: str | None = None
    compose_service: str | None = None
    restart_count: int | None = None
    memory_limit: int | None = None  # bytes; None: no limit (or unknown)
    pids_limit: int | None = None
    pid: int | None = None  # host pid of the container's first process, when running
    # False when only the cgroup path named it (no engine answered): an engine that
    # comes back later can still give its name and image.
    from_engine: bool = True

    def as_contract(self) -> dict[str, Any]:
        """The container object of alerts and events."""
        return {"id": self.id, "name": self.name, "image": self.image}


def info_from_inspect(inspect: dict[str, Any]) -> ContainerInfo:
    """ContainerInfo from `docker inspect` output (one container)."""
    config = inspect.get("Config") or {}
    host = inspect.get("HostConfig") or {}
    labels = config.get("Labels") or {}
    state = inspect.get("State") or {}
    return ContainerInfo(
        id=inspect["Id"],
        name=(inspect.get("Name") or inspect["Id"][:SHORT_ID]).lstrip("/"),
        image=config.get("Image") or inspect.get("Image"),
        compose_project=labels.get("com.docker.compose.project"),
        compose_service=labels.get("com.docker.compose.service"),
        restart_count=inspect.get("RestartCount"),
        memory_limit=host.get("Memory") or None,
        pids_limit=host.get("PidsLimit") or None,  # 0 and -1 both mean unlimited
        pid=state.get("Pid") or None,
    )


def info_from_cgroup(ref: CgroupContainer) -> ContainerInfo:
    """What is known without an engine: the id, and a name made from it."""
    return ContainerInfo(id=ref.id, name=ref.id[:SHORT_ID], runtime=ref.runtime, from_engine=False)


# --- /proc and the cgroup tree ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcCgroups:
    v2_path: str | None  # the "0::" line
    v1_paths: dict[str, str]  # controllers -> path


def read_proc_cgroups(pid: int | str, proc_root: str = "/proc") -> ProcCgroups | None:
    try:
        with open(f"{proc_root}/{pid}/cgroup") as f:
            text = f.read()
    except OSError:
        return None
    return parse_proc_cgroup(text)


def parse_proc_cgroup(text: str) -> ProcCgroups:
    """The lines of /proc/<pid>/cgroup, split into the v2 path and the v1 hierarchies."""
    v2: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        else:
            v1[controllers] = path
    return ProcCgroups(v2, v1)


def container_of_proc(cgroups: ProcCgroups) -> tuple[CgroupContainer | None, bool]:
    """The container in a process's cgroups, and whether its v2 path alone identifies it."""
    if cgroups.v2_path:
        ref = parse_cgroup_path(cgroups.v2_path)
        if ref:
            return ref, True
    for path in cgroups.v1_paths.values():
        ref = parse_cgroup_path(path)
        if ref:
            return ref, False
    return None, False


def walk_cgroup2(mount: str, limit: int) -> Iterator[tuple[int, str]]:
    """(inode, path) of the cgroup directories below `mount`, at most `limit` of them."""
    stack = [""]
    seen = 0
    while stack and seen < limit:
        rel = stack.pop()
        try:
            with os.scandir(mount + rel) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = f"{rel}/{entry.name}"
                        yield entry.inode(), child
                        stack.append(child)
                        seen += 1
        except OSError:
            continue


# --- the Docker engine ----------------------------------------------------------------------


class DockerEngine:
    """The Docker engine through the docker SDK, tolerant of there being none.

    Calls return None (or empty) when no engine answers; after a failure the engine is
    not asked again for `retry_after` seconds, so a host without Docker pays nothing.
    """

    def __init__(self, base_url: str | None = None, retry_after: float = 30.0, timeout: float = 5.0) -> None:
        self._base_url = base_url  # None: DOCKER_HOST, else the default socket
        self._retry_after = retry_after
        self._timeout = timeout
        self._client: Any = None
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _api(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            if time.monotonic() < self._down_until:
                return None
            try:
                import docker  # heavy (requests); only when a container is first seen

                self._client = docker.APIClient(**self._connection(), version="auto", timeout=self._timeout)
            except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
                self._mark_down(exc)
            return self._client

    def _connection(self) -> dict[str, Any]:
        import docker

        return {"base_url": self._base_url} if self._base_url else docker.utils.kwargs_from_env()

    def _mark_down(self, exc: BaseException) -> None:
        log.debug("no Docker engine: %s", exc)
        self._client = None
        self._down_until = time.monotonic() + self._retry_after

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        api = self._api()
        if api is None:
            return None
        import docker.errors

        try:
            return getattr(api, method)(*args, **kwargs)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:  # the engine answered: it is up
            log.debug("docker %s: %s", method, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, API errors
            with self._lock:
                self._mark_down(exc)
            return None

    @property
    def available(self) -> bool:
        return self._call("ping") is not None

    def inspect(self, container_id: str) -> ContainerInfo | None:
        data = self._call("inspect_container", container_id)
        return info_from_inspect(data) if data else None

    def containers(self, all_states: bool = False) -> list[ContainerInfo]:
        listed = self._call("containers", all=all_states) or []
        infos = (self.inspect(c["Id"]) for c in listed)
        return [i for i in infos if i is not None]

    def dangling_images(self) -> list[dict[str, Any]]:
        """Untagged images: [{"id", "size_bytes"}]."""
        images = self._call("images", filters={"dangling": True}) or []
        return [{"id": i["Id"], "size_bytes": i.get("Size", 0)} for i in images]

    def unused_volumes(self) -> list[dict[str, Any]]:
        """Volumes no container refers to: [{"name", "size_bytes"}] (size -1 when unknown)."""
        usage = self._call("df") or {}
        return [
            {"name": v["Name"], "size_bytes": (v.get("UsageData") or {}).get("Size", -1)}
            for v in usage.get("Volumes") or []
            if (v.get("UsageData") or {}).get("RefCount", 0) == 0
        ]

    def events(self) -> Any:
        """A blocking, closable stream of container events (decoded dicts), or None.

        Tried even while lookups are held off after a failure: it runs in the
        background, and it is how a restarted engine is noticed.  Opening it lifts
        the hold-off, so lookups reach the engine again at once."""
        import docker

        try:
            # A client of its own: the stream holds its connection for as long as it runs.
            client = docker.APIClient(**self._connection(), version="auto", timeout=None)
            stream = client.events(decode=True, filters={"type": "container"})
        except Exception as exc:  # noqa: BLE001 - no engine (yet, or any more)
            with self._lock:
                self._mark_down(exc)
            return None
        with self._lock:
            self._down_until = 0.0
        return stream


# --- the resolver -----------------------------------------------------------------------------


class _Lru(OrderedDict):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def get_fresh(self, key: Any, default: Any = None) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


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
    ) -> None:
        self._engine = engine if engine is not None else DockerEngine()
        self._mount = cgroup2_mount() if cgroup_mount is _UNKNOWN else cgroup_mount
        self._proc = proc_root
        self._rescan_interval = rescan_interval
        self._lock = threading.RLock()
        # cgroup id -> the container its path names, or None for a host cgroup
        self._by_cgroup = _Lru(cgroups_capacity)
        self._containers = _Lru(containers_capacity)  # container id -> ContainerInfo
        # Does a container's cgroup v2 path name it?  Yes with any current runtime; no with
        # old ones on hybrid hosts, where containers share the v2 cgroup of the daemon and
        # so a cgroup id must never be taken for a container.  None: not seen yet.
        self._v2_identifies: bool | None = True if self._pure_v2() else None
        self._last_walk = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream: Any = None
        self.following = threading.Event()  # set once the event stream is open and caught up

    def _pure_v2(self) -> bool:
        own = read_proc_cgroups("self")
        return own is not None and own.v2_path is not None and not own.v1_paths

    # --- the lookup ---

    def __call__(self, cgroup_id: int, pid: int | None = None) -> dict[str, Any] | None:
        info = self.info(cgroup_id, pid)
        return info.as_contract() if info else None

    def info(self, cgroup_id: int, pid: int | None = None) -> ContainerInfo | None:
        return self.lookup(cgroup_id, pid)[1]

    def lookup(self, cgroup_id: int, pid: int | None = None) -> tuple[bool, ContainerInfo | None]:
        """(settled, container): settled is False when neither /proc nor the cgroup
        tree could tell yet (the pid is gone, the tree walk is rate-limited), or when
        only the cgroup path named the container (no engine answered: it may be
        restarting), so a caller that memoizes answers knows to ask again."""
        with self._lock:
            ref = self._by_cgroup.get_fresh(cgroup_id, _UNKNOWN) if cgroup_id else _UNKNOWN
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
            known = self._containers.get_fresh(container_id)
        return known or self._engine.inspect(container_id)

    def known(self) -> list[ContainerInfo]:
        """The containers it knows now: from lookups and the event stream."""
        with self._lock:
            return list(self._containers.values())

    def cache_sizes(self) -> dict[str, int]:
        with self._lock:
            return {"cgroups": len(self._by_cgroup), "containers": len(self._containers)}

    def _from_pid(self, cgroup_id: int, pid: int) -> CgroupContainer | None | object:
        cgroups = read_proc_cgroups(pid, self._proc)
        if cgroups is None:
            return _UNKNOWN
        if cgroup_id and self._inode(cgroups.v2_path) != cgroup_id:
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

    def _inode(self, v2_path: str | None) -> int | None:
        if self._mount is None or v2_path is None:
            return None
        try:
            return os.stat(self._mount + v2_path).st_ino
        except OSError:
            return None

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
        for inode, path in walk_cgroup2(self._mount, limit=self._by_cgroup.capacity):
            ref = parse_cgroup_path(path)
            if ref is None:
                continue
            with self._lock:
                self._by_cgroup.put(inode, ref)
            if inode == cgroup_id:
                found = ref
        return found

    def _describe(self, ref: CgroupContainer) -> ContainerInfo:
        with self._lock:
            known = self._containers.get_fresh(ref.id)
        if known:
            return known
        # Docker also runs containers under custom cgroup parents: always ask it.
        info = self._engine.inspect(ref.id)
        if info is None:
            info = info_from_cgroup(ref)
        with self._lock:
            self._containers.put(ref.id, info)
        return info

    # --- following the engine ---

    def __enter__(self) -> "ContainerResolver":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Follow the Docker event stream in a daemon thread (no-op without an engine)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._follow, name="spawnwatch-docker-events", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:  # noqa: BLE001 - closing a dead socket
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # How long the follower waits between attempts to reach the engine: short, so a
    # restarted engine names new containers within seconds; a refused connect to a
    # unix socket costs microseconds.
    RECONNECT_MIN_S = 0.5
    RECONNECT_MAX_S = 5.0

    def _follow(self) -> None:
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
                except Exception as exc:  # noqa: BLE001 - the engine went away; reconnect
                    log.debug("docker event stream ended: %s", exc)
                self.following.clear()
                self._stream = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.RECONNECT_MAX_S)

    def _on_event(self, event: dict[str, Any]) -> None:
        action = event.get("Action") or event.get("status") or ""
        container_id = event.get("id") or (event.get("Actor") or {}).get("ID")
        if not container_id:
            return
        if action in ("start", "restart") or action.startswith("rename"):
            info = self._engine.inspect(container_id)
            if info is not None:
                self._remember(info)
        elif action == "destroy":
            self.forget(container_id)

    def _remember(self, info: ContainerInfo) -> None:
        """Cache a running container and index its cgroup, so its processes resolve by cgroup id."""
        with self._lock:
            self._containers.put(info.id, info)
        if info.pid:
            cgroups = read_proc_cgroups(info.pid, self._proc)
            if cgroups is not None:
                ref, by_v2 = container_of_proc(cgroups)
                if ref is not None and ref.id == info.id:
                    inode = self._inode(cgroups.v2_path)
                    with self._lock:
                        self._learn_runtime_layout(by_v2)
                        if by_v2 and inode:
                            self._by_cgroup.put(inode, ref)

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._containers.pop(container_id, None)
            for key in [k for k, v in self._by_cgroup.items() if v is not None and v.id == container_id]:
                del self._by_cgroup[key]
