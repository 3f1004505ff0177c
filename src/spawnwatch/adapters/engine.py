"""The Docker engine (and Podman's Docker-compatible API) through the docker SDK: what it
says about a container, its disk leftovers, and its event stream; tolerant of there being
no engine at all."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from spawnwatch.events import ContainerEvent
from spawnwatch.signature import DEFAULT_ENGINE, PODMAN_ENGINE
from spawnwatch.text import printable

log = logging.getLogger(__name__)

SHORT_ID = 12


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """Everything spawnwatch shows about a container; fields the engine did not give are None."""

    id: str
    name: str
    image: str | None = None
    runtime: str = "docker"  # docker, podman, containerd, cri-o; "kubernetes" when only the pod's cgroup tells
    # A pod's container (containerd's CRI plugin, CRI-O): `name` is then its Kubernetes
    # container name, unique within the pod only; these say whose it is.
    pod: str | None = None
    namespace: str | None = None  # the pod's Kubernetes namespace
    pod_uid: str | None = None
    compose_project: str | None = None
    compose_service: str | None = None
    restart_count: int | None = None
    memory_limit: int | None = None  # bytes; None: no limit (or unknown)
    pids_limit: int | None = None
    pid: int | None = None  # host pid of the container's first process, when running
    running: bool | None = None
    created: float | None = None  # wall-clock time the engine created it
    started: float | None = None  # wall-clock time of its last start, when running
    auto_remove: bool = False  # `docker run --rm`: the engine removes it once it stops
    attached: bool = True  # a client attached to its stdio (False: `docker run -d`)
    # False when only the cgroup path named it (neither the engine nor the runtime's state
    # answered): one that answers later can still give its name and image.
    from_engine: bool = True
    labels: tuple[str, ...] = ()  # NAME=value, as container_labels keeps them

    def as_contract(self) -> dict[str, Any]:
        """The container object of alerts and events: a pod's container adds its pod,
        namespace and pod uid (`name` being its Kubernetes container name)."""
        contract: dict[str, Any] = {"id": self.id, "name": self.name, "image": self.image, "runtime": self.runtime}
        if self.pod is not None:
            contract.update(pod=self.pod, namespace=self.namespace, pod_uid=self.pod_uid)
        return contract


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
        running=state.get("Running"),
        created=wall_time(inspect.get("Created")),
        started=wall_time(state.get("StartedAt")) if state.get("Running") else None,
        auto_remove=bool(host.get("AutoRemove")),
        attached=any(config.get(key) for key in ("AttachStdin", "AttachStdout", "AttachStderr")),
        labels=container_labels(labels),
    )


MAX_LABELS = 64  # a container with more is taken as telling none
MAX_LABEL_CHARS = 1024
EVENT_ATTRIBUTES = frozenset({"image", "name"})  # what a create or start event says besides the labels


def container_labels(labels: dict[str, Any]) -> tuple[str, ...]:
    """A container's labels as NAME=value, sorted; none when there are more than MAX_LABELS
    or one is longer than MAX_LABEL_CHARS (any user may label a container: bounded)."""
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        return ()
    pairs = [f"{name}={value}" for name, value in labels.items()]
    return tuple(sorted(pairs)) if all(len(pair) <= MAX_LABEL_CHARS for pair in pairs) else ()


LIFECYCLE = ("create", "start", "die", "destroy")
COMPOSE_PROJECT = "com.docker.compose.project"


def container_event(event: dict[str, Any], boot_time: float, info: ContainerInfo | None = None) -> ContainerEvent | None:
    """A lifecycle event of the engine's stream as spawnwatch's event, dated in seconds since
    boot (`boot_time`: the wall-clock time of boot); `info`, inspected at a start, tells
    whether a client attached.  None for other actions and malformed events.  Of the
    labels only compose's project is kept."""
    action = event.get("Action") or event.get("status") or ""
    actor = event.get("Actor") or {}
    container_id = actor.get("ID") or event.get("id")
    if action not in LIFECYCLE or not isinstance(container_id, str) or not container_id:
        return None
    nanoseconds = event.get("timeNano")
    seconds = nanoseconds / 1e9 if isinstance(nanoseconds, int) else event.get("time")
    if not isinstance(seconds, (int, float)):
        return None
    attributes = actor.get("Attributes") or {}
    exit_code = str(attributes.get("exitCode", ""))
    return ContainerEvent(
        ts=max(float(seconds) - boot_time, 0.0),
        action=action,
        id=container_id,
        name=str(attributes.get("name", "")),
        image=str(attributes.get("image", "")),
        compose_project=str(attributes.get(COMPOSE_PROJECT, "")),
        exit_code=int(exit_code) if exit_code.isdigit() else 0,
        detached=action == "start" and info is not None and not info.attached,
        labels=container_labels({k: v for k, v in attributes.items() if k not in EVENT_ATTRIBUTES})
        if action in ("create", "start") else (),
    )


def found_running(info: ContainerInfo, boot_time: float) -> tuple[ContainerEvent, ...]:
    """A container running when the session began, as the events the engine sent before
    the session could hear them: its create and its start, dated by inspect's Created and
    State.StartedAt in seconds since boot (`boot_time`: the wall-clock time of boot).
    Nothing for one that does not run, or whose dates the engine did not give."""
    if not info.running or info.created is None or info.started is None:
        return ()
    fields = dict(id=info.id, name=info.name, image=info.image or "", compose_project=info.compose_project or "",
                  labels=info.labels)
    return (ContainerEvent(ts=max(info.created - boot_time, 0.0), action="create", **fields),
            ContainerEvent(ts=max(info.started - boot_time, 0.0), action="start", detached=not info.attached, **fields))


def wall_time(rfc3339: str | None) -> float | None:
    """Docker's `2026-11-29T23:20:29.123456789Z` as a unix time; None when missing or odd."""
    if not rfc3339:
        return None
    # Python < 3.11 parses neither `Z` nor fractions of other than 3 or 6 digits (Go drops trailing zeros).
    fixed = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], rfc3339).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(fixed).timestamp()
    except ValueError:
        return None


REASON_WIDTH = 300


def _reason(exc: BaseException) -> str:
    """An engine's error for a log line: its answer may carry what a local user wrote."""
    return printable(str(exc), REASON_WIDTH)


def followed_address() -> str:
    """The address of the engine DockerEngine() follows: DOCKER_HOST's, else docker's
    default socket.  Clients of any other engine ask it for nothing (detect/containers.py)."""
    return os.environ.get("DOCKER_HOST") or DEFAULT_ENGINE


PODMAN_SOCKET = "unix:///run/podman/podman.sock"  # rootful `podman system service`'s


def podman_address() -> str:
    """Where Podman serves its Docker-compatible API: CONTAINER_HOST's (podman's own
    variable for it), else rootful Podman's socket."""
    return os.environ.get("CONTAINER_HOST") or PODMAN_SOCKET


class EngineError(Exception):
    """The engine could not do what it was asked; the message says why."""


class DockerEngine:
    """The Docker engine through the docker SDK, tolerant of there being none.

    Calls return None (or empty) when no engine answers; after a failure the engine is
    not asked again for `retry_after` seconds, so a host without Docker pays nothing.
    """

    def __init__(self, base_url: str | None = None, retry_after: float = 30.0, timeout: float = 5.0,
                 name: str = "Docker engine") -> None:
        self._base_url = base_url  # None: DOCKER_HOST, else the default socket
        self.name = name  # what its errors call it
        self._retry_after = retry_after
        self._timeout = timeout
        self._client: Any = None
        self._down_until = 0.0
        self._down_because = "not asked yet"
        self._lock = threading.Lock()
        self._said: set[str] = set()  # what was logged at warning level: said once, not on every call

    def _api(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            if time.monotonic() < self._down_until:
                return None
            try:
                self._client = self._connect()
            except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
                self._mark_down(exc)
            return self._client

    def _connect(self) -> Any:
        import docker  # heavy (requests); only when a container is first seen

        return docker.APIClient(**self._connection(), version="auto", timeout=self._timeout)

    def _connection(self) -> dict[str, Any]:
        import docker

        return {"base_url": self._base_url} if self._base_url else docker.utils.kwargs_from_env()

    def _mark_down(self, exc: BaseException) -> None:
        if self._client is not None:  # it answered until now: an outage, said each time it begins
            log.warning("the %s stopped answering: %s (asked again in %g s)",
                        self.name, _reason(exc), self._retry_after)
        elif "no engine" not in self._said:  # a host without Docker: normal, said once
            self._said.add("no engine")
            log.info("no %s: %s (containers show by cgroup id)", self.name, _reason(exc))
        else:
            log.debug("no %s: %s", self.name, _reason(exc))
        self._client = None
        self._down_until = time.monotonic() + self._retry_after
        self._down_because = _reason(exc)

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
            self._say_once(method, f"the {self.name} refused {method}: {_reason(exc)}")
            return None
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, API errors
            with self._lock:
                self._mark_down(exc)
            return None

    def _say_once(self, topic: str, message: str) -> None:
        """A warning the first time for each topic (the API's method names: a bounded set), then debug."""
        with self._lock:
            first = topic not in self._said
            self._said.add(topic)
        log.log(logging.WARNING if first else logging.DEBUG, "%s", message)

    def _definite(self, request: Callable[[Any], Any]) -> tuple[bool, Any]:
        """The engine's answer to a `request` (made on the SDK's client) whose outcome decides
        what is done: (False, None) when it says there is no such container, else (True, its
        answer); EngineError when it refused or did not answer (never read as "gone")."""
        api = self._api()
        if api is None:
            raise EngineError(f"no {self.name} answers: {self._down_because}")
        import docker.errors

        try:
            return True, request(api)
        except docker.errors.NotFound:
            return False, None
        except docker.errors.APIError as exc:
            raise EngineError(str(exc.explanation or exc)) from exc
        except Exception as exc:  # noqa: BLE001 - connection refused, timeouts
            with self._lock:
                self._mark_down(exc)
            raise EngineError(str(exc)) from exc

    def _act(self, request: Callable[[Any], Any]) -> bool:
        """Have the engine do something: True when done, False when the container is gone."""
        return self._definite(request)[0]

    def kill(self, container_id: str) -> bool:
        """SIGKILL the container's processes; False when it is gone."""
        return self._act(lambda api: api.kill(container_id))

    def remove(self, container_id: str) -> bool:
        """Remove the container (forced: a kill may not have finished stopping it); False when gone."""
        return self._act(lambda api: api.remove_container(container_id, force=True))

    @property
    def available(self) -> bool:
        return self._call("ping") is not None

    def inspect(self, container_id: str) -> ContainerInfo | None:
        data = self._call("inspect_container", container_id)
        return info_from_inspect(data) if data else None

    def lookup(self, container_id: str) -> ContainerInfo | None:
        """The container as the engine says now, for acting on it: None only when the
        engine says there is no such container; EngineError when none answers or it fails."""
        found, data = self._definite(lambda api: api.inspect_container(container_id))
        return info_from_inspect(data) if found else None

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


class PodmanEngine(DockerEngine):
    """Podman's API as `podman system service` serves it: Docker's, but for the kill, and
    asked only once it says it is rootful Podman's.

    Docker's kill of SIGKILL answers once the container stopped, and so does Podman's
    Docker-compatible one; but when a `--rm` container's cleanup removes it before that
    wait looks, Podman answers 500 "no such container" for a kill it delivered (Podman
    4.3, one kill in 15 on a loaded machine), and reap would call the container it ended
    one that was already gone.  Podman's own endpoint answers once the signal is sent:
    204, else 404 when there is no such container."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, name=f"Podman API (podman system service --time=0) at {base_url}")

    def _connect(self) -> Any:
        """The client, once the API is rootful Podman's: only rootful Podman's containers are
        charged (its events file), and any other engine would answer "no such container" for
        one that runs, which reap would take for gone."""
        client = super()._connect()
        try:
            components = client.version().get("Components") or []
            engines = [printable(str(c.get("Name")), REASON_WIDTH) for c in components[:NAMED_COMPONENTS]
                       if isinstance(c, dict)]
            if PODMAN_COMPONENT not in engines:
                raise EngineError(f"it is not Podman's ({', '.join(engines) or 'it names no engine'}); "
                                  "set CONTAINER_HOST to rootful Podman's socket")
            if ROOTLESS in (client.info().get("SecurityOptions") or []):
                raise EngineError("it is rootless Podman's, which does not see rootful Podman's containers; "
                                  "set CONTAINER_HOST to rootful Podman's socket")
        except BaseException:
            client.close()
            raise
        return client

    def kill(self, container_id: str) -> bool:
        return self._act(lambda api: _libpod_kill(api, container_id))


PODMAN_COMPONENT = "Podman Engine"  # in `version`'s Components, as Docker's says "Engine"
NAMED_COMPONENTS = 8  # looked at and named: the engine (first) and what runs beside it
ROOTLESS = "name=rootless"  # in `info`'s SecurityOptions (Docker's and Podman's alike)


def _libpod_kill(api: Any, container_id: str) -> None:
    # The SDK's own request helpers, as its kill uses them, on Podman's path (served under any API version).
    response = api._post(api._url("/libpod/containers/{0}/kill", container_id), params={"signal": "KILL"})
    api._raise_for_status(response)


class Engines:
    """The engine to ask about a container of each runtime `reap` can end: Docker's, and
    Podman's through the API that `podman system service` serves (PodmanEngine; Podman has
    no daemon of its own; its events come from its events file, adapters/podman_events.py)."""

    def __init__(self, docker: DockerEngine | None = None) -> None:
        self._docker = docker
        self._podman: PodmanEngine | None = None

    def of(self, runtime: str) -> DockerEngine:
        if runtime == PODMAN_ENGINE:
            if self._podman is None:
                self._podman = PodmanEngine(podman_address())
            return self._podman
        if self._docker is None:
            self._docker = DockerEngine()
        return self._docker
