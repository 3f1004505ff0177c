"""Container attribution: cgroup paths of every runtime, the resolver's caching rules on a
fake /proc and cgroup tree, and a real Docker engine (marker `docker`)."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import pytest

from conftest import wait_for

from spawnwatch.adapters.cgroups import (
    CgroupContainer,
    cgroup2_mount,
    container_of_proc,
    inode,
    parse_cgroup_path,
    parse_proc_cgroup,
    read_proc_cgroups,
)
from spawnwatch.adapters.engine import ContainerInfo, DockerEngine, found_running, info_from_inspect
from spawnwatch.adapters.resolver import ContainerResolver
from spawnwatch.events import ContainerEvent

ID = "3f4a" * 16
OTHER = "b7c1" * 16
POD = "0c9d3a5e-8f1b-4c2e-9a7d-1e2f3a4b5c6d"
NO_ENGINE = "unix:///nonexistent/spawnwatch-test.sock"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/docker/{ID}", CgroupContainer(ID, "docker")),
        (f"/system.slice/docker-{ID}.scope", CgroupContainer(ID, "docker")),
        # docker in docker: the innermost container is the one the process runs in
        (f"/docker/{OTHER}/docker/{ID}", CgroupContainer(ID, "docker")),
        (f"/actions_job/{ID}", CgroupContainer(ID, "docker")),
        (f"/default/{ID}", CgroupContainer(ID, "containerd")),
        (f"/system.slice/nerdctl-{ID}.scope", CgroupContainer(ID, "containerd")),
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD.replace('-', '_')}.slice"
            f"/cri-containerd-{ID}.scope",
            CgroupContainer(ID, "containerd", POD),
        ),
        (f"/kubepods/besteffort/pod{POD}/{ID}", CgroupContainer(ID, "kubernetes", POD)),
        (f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{ID}.scope", CgroupContainer(ID, "cri-o", POD)),
        (f"/machine.slice/libpod-{ID}.scope/container", CgroupContainer(ID, "podman")),
        (f"/libpod_parent/libpod-{ID}", CgroupContainer(ID, "podman")),
        (f"/libpod_parent/{ID}", CgroupContainer(ID, "podman")),
        # host cgroups, and things that only look alike
        ("/", None),
        ("", None),
        ("/user.slice/user-1000.slice/session-2.scope", None),
        ("/system.slice/docker.service", None),
        (f"/machine.slice/crio-conmon-{ID}.scope", None),  # the monitor, outside the container
        (f"/docker/{ID[:12]}", None),
        (f"/docker/{ID.upper()}", None),
    ],
)
def test_cgroup_paths_of_every_runtime(path: str, expected: CgroupContainer | None) -> None:
    assert parse_cgroup_path(path) == expected


HYBRID = f"""\
9:name=systemd:/docker/{ID}
4:memory:/docker/{ID}
1:cpu:/docker/{ID}
0::/docker/{ID}
"""
# Older runtimes on hybrid hosts leave the v2 hierarchy alone: the container shares
# the daemon's v2 cgroup, and only the v1 lines name it.
V1_ONLY = f"""\
4:memory:/docker/{ID}
1:cpu,cpuacct:/docker/{ID}
0::/system.slice/containerd.service
"""


def test_proc_cgroup_lines() -> None:
    cgroups = parse_proc_cgroup(HYBRID)
    assert cgroups.v2_path == f"/docker/{ID}"
    assert cgroups.v1_paths["memory"] == f"/docker/{ID}"
    assert container_of_proc(cgroups) == (CgroupContainer(ID, "docker"), True)
    assert container_of_proc(parse_proc_cgroup(V1_ONLY)) == (CgroupContainer(ID, "docker"), False)
    assert container_of_proc(parse_proc_cgroup("0::/user.slice\n")) == (None, False)


class FakeHost:
    """A /proc and a cgroup2 tree in a temporary directory: cgroup ids are real inodes."""

    def __init__(self, root: Path) -> None:
        self.proc = root / "proc"
        self.mount = root / "cgroup2"
        self.proc.mkdir()
        self.mount.mkdir()

    def cgroup(self, path: str) -> int:
        directory = self.mount / path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        return directory.stat().st_ino

    def process(self, pid: int, cgroup_text: str) -> None:
        (self.proc / str(pid)).mkdir(exist_ok=True)
        (self.proc / str(pid) / "cgroup").write_text(cgroup_text)

    def resolver(self, **kwargs) -> ContainerResolver:
        return ContainerResolver(
            engine=DockerEngine(base_url=NO_ENGINE), cgroup_mount=str(self.mount), proc_root=str(self.proc), **kwargs
        )


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path)


def test_without_an_engine_containers_show_by_short_id(host: FakeHost) -> None:
    container_cgroup = host.cgroup(f"/docker/{ID}")
    host.cgroup("/user.slice")
    host.process(100, f"0::/docker/{ID}\n")
    host.process(200, "0::/user.slice\n")
    resolve = host.resolver()
    expected = {"id": ID, "name": ID[:12], "image": None, "runtime": "docker"}
    assert resolve(container_cgroup, 100) == expected
    assert resolve(host.cgroup("/user.slice"), 200) is None
    # the process is gone: the cached cgroup id still answers
    (host.proc / "100" / "cgroup").unlink()
    assert resolve(container_cgroup, 100) == expected
    # no pid at all, fresh resolver: found by walking the cgroup tree
    assert host.resolver()(container_cgroup) == expected


def test_a_container_named_without_the_engine_is_not_a_settled_answer(host: FakeHost) -> None:
    """An engine that is restarting may name it soon: a memoizing caller must ask again.
    A host cgroup is settled: no engine will ever make it a container."""
    container_cgroup = host.cgroup(f"/docker/{ID}")
    host.process(100, f"0::/docker/{ID}\n")
    host.process(200, "0::/user.slice\n")
    resolver = host.resolver()
    settled, info = resolver.lookup(container_cgroup, 100)
    assert (settled, info.name, info.from_engine) == (False, ID[:12], False)
    assert resolver.lookup(host.cgroup("/user.slice"), 200) == (True, None)


def test_answers_are_memoized_per_cgroup_once_settled(host: FakeHost, monkeypatch) -> None:
    """`trace` asks for every event: a settled answer is never looked up again, an unsettled
    one (no engine to name the container yet) is, once RETRY_UNSETTLED_AFTER has passed."""
    container_cgroup = host.cgroup(f"/docker/{ID}")
    host_cgroup = host.cgroup("/user.slice")
    host.process(100, f"0::/docker/{ID}\n")
    host.process(200, "0::/user.slice\n")
    resolver = host.resolver()
    asked = []
    lookup = resolver.lookup
    monkeypatch.setattr(resolver, "lookup", lambda cgroup_id, pid=None: asked.append(cgroup_id) or lookup(cgroup_id, pid))
    resolver.RETRY_UNSETTLED_AFTER = 0.0
    for _ in range(3):
        assert resolver(host_cgroup, 200) is None
        assert resolver(container_cgroup, 100)["id"] == ID
    assert asked.count(host_cgroup) == 1 and asked.count(container_cgroup) == 3
    resolver.RETRY_UNSETTLED_AFTER = 3600.0
    resolver(container_cgroup, 100)
    resolver(container_cgroup, 100)
    assert asked.count(container_cgroup) == 4
    resolver.forget(ID)  # the container is gone: its memo too
    resolver(container_cgroup, 100)
    assert asked.count(container_cgroup) == 5


def test_a_container_the_engine_could_not_name_is_asked_about_again(host: FakeHost) -> None:
    """An inspect that failed (engine down, restarting, or timing out) is tried again,
    at most every ASK_ENGINE_AGAIN_AFTER: the start event it missed never comes back."""

    class SlowEngine:
        asked = 0

        def inspect(self, container_id: str):
            self.asked += 1
            return ContainerInfo(id=container_id, name="metamcp", image="mcp:1") if self.asked > 1 else None

    container_cgroup = host.cgroup(f"/docker/{ID}")
    host.process(100, f"0::/docker/{ID}\n")
    engine = SlowEngine()
    resolver = ContainerResolver(engine=engine, cgroup_mount=str(host.mount), proc_root=str(host.proc))
    assert resolver.info(container_cgroup, 100).name == ID[:12]
    assert resolver.info(container_cgroup, 100).name == ID[:12] and engine.asked == 1  # not yet again
    resolver.ASK_ENGINE_AGAIN_AFTER = 0.0
    assert resolver.lookup(container_cgroup, 100) == (True, ContainerInfo(id=ID, name="metamcp", image="mcp:1"))
    assert resolver.info(container_cgroup, 100).name == "metamcp" and engine.asked == 2  # settled: kept


def test_a_reused_pid_does_not_move_a_cgroup_into_another_container(host: FakeHost) -> None:
    container_cgroup = host.cgroup(f"/docker/{ID}")
    host.cgroup(f"/docker/{OTHER}")
    # pid 100 now belongs to another container than the one the event came from
    host.process(100, f"0::/docker/{OTHER}\n")
    assert host.resolver()(container_cgroup, 100)["id"] == ID


def test_a_shared_v2_cgroup_is_never_taken_for_a_container(host: FakeHost) -> None:
    shared = host.cgroup("/system.slice/containerd.service")
    host.process(100, V1_ONLY)
    host.process(200, "4:memory:/system.slice/containerd.service\n0::/system.slice/containerd.service\n")
    resolve = host.resolver()
    assert resolve(shared, 100)["id"] == ID
    assert resolve(shared, 200) is None
    assert resolve(shared, 100)["id"] == ID


def test_the_cgroup_cache_is_bounded(host: FakeHost) -> None:
    resolve = host.resolver(cgroups_capacity=8)
    for pid in range(1, 50):
        cgroup = host.cgroup(f"/user.slice/session-{pid}.scope")
        host.process(pid, f"0::/user.slice/session-{pid}.scope\n")
        assert resolve(cgroup, pid) is None
    assert resolve.cache_sizes()["cgroups"] <= 8
    assert resolve.evicted_by_table()["container_cgroups"] == 49 - 8  # each one let go is counted


def inspected(container_id: str, name: str, created: str, started: str, running: bool = True,
              attached: bool = True, labels: dict | None = None) -> dict:
    """`docker inspect` output of one container (the keys spawnwatch reads)."""
    return {"Id": container_id, "Name": f"/{name}", "Created": created,
            "Config": {"Image": "mcp/github:1.2", "Labels": labels or {}, "AttachStdin": attached},
            "State": {"Running": running, "StartedAt": started, "Pid": 0}, "HostConfig": {}}


BOOT_TIME = 1_764_000_000.0  # 2025-11-24T16:00:00Z


def test_a_container_running_before_the_session_is_its_create_and_start_dated_since_boot() -> None:
    info = info_from_inspect(inspected(ID, "brave_ada", "2025-11-24T16:10:00.5Z", "2025-11-24T16:10:01.25Z",
                                       labels={"com.docker.compose.project": "mcp"}))
    fields = dict(id=ID, name="brave_ada", image="mcp/github:1.2", compose_project="mcp",
                  labels=("com.docker.compose.project=mcp",))
    assert found_running(info, BOOT_TIME) == (ContainerEvent(600.5, "create", **fields),
                                             ContainerEvent(601.25, "start", **fields))
    detached = info_from_inspect(inspected(ID, "d", "2025-11-24T16:10:00Z", "2025-11-24T16:10:00Z", attached=False))
    assert [e.detached for e in found_running(detached, BOOT_TIME)] == [False, True]
    stopped = info_from_inspect(inspected(ID, "s", "2025-11-24T16:10:00Z", "0001-01-01T00:00:00Z", running=False))
    assert found_running(stopped, BOOT_TIME) == ()


class ListingEngine:
    """An engine with one running container, whose event stream says, while the session
    lists the running containers, that this very container just died."""

    def __init__(self) -> None:
        self.info = info_from_inspect(inspected(ID, "brave_ada", "2025-11-24T16:10:00Z", "2025-11-24T16:10:01Z"))
        self.stream: queue.Queue = queue.Queue()
        self.listings = 0
        self.heard = threading.Event()

    def events(self):
        def stream():
            while (event := self.stream.get()) is not None:
                yield event
                self.heard.set()  # asked for the next one: this one is queued
        return stream()

    def containers(self):
        self.listings += 1
        if self.listings == 2:  # the session's listing (the first is the follower's own)
            self.stream.put({"Action": "die", "Actor": {"ID": ID, "Attributes": {"name": "brave_ada"}},
                             "timeNano": int((BOOT_TIME + 700) * 1e9)})
            assert self.heard.wait(10), "the follower never took the die event"
        return [self.info]

    def inspect(self, container_id: str):
        return self.info


def test_running_containers_are_queued_ahead_of_what_the_stream_heard_while_they_were_listed(host) -> None:
    engine = ListingEngine()
    resolver = ContainerResolver(engine=engine, cgroup_mount=str(host.mount), proc_root=str(host.proc))
    with resolver:
        assert resolver.following.wait(10)
        resolver.queue_lifecycle(BOOT_TIME)
        engine.stream.put(None)
    assert [(e.action, e.ts) for e in resolver.lifecycle()] == [("create", 600.0), ("start", 601.0), ("die", 700.0)]


# --- a real engine ------------------------------------------------------------------------

COMPOSE_LABELS = (
    "--label", "com.docker.compose.project=mcpdemo",
    "--label", "com.docker.compose.service=metamcp",
)


def container_pids(container_id: str) -> list[int]:
    """Host pids of every process in a container, from its cgroup."""
    pids = map(int, filter(str.isdigit, os.listdir("/proc")))
    cgroups = {pid: read_proc_cgroups(pid) for pid in pids}
    return [pid for pid, of_pid in cgroups.items() if of_pid is not None and container_id in of_pid.display_path]


def cgroup_id_of(pid: int, mount: str | None) -> int:
    """The cgroup v2 id of `pid` (the inode of its cgroup directory), as bpf_get_current_cgroup_id()."""
    cgroups = read_proc_cgroups(pid)
    return (inode(mount, cgroups.v2_path) if cgroups else None) or 0



@pytest.mark.docker
def test_a_running_containers_processes_resolve_by_cgroup_id_and_by_proc(docker_env) -> None:  # noqa: F811
    container_id = docker_env.run("sh", "-c", "sleep 300 & sleep 300 & wait", options=COMPOSE_LABELS)
    pids = wait_for(lambda: len(container_pids(container_id)) >= 3 and container_pids(container_id), "3 processes")
    mount = cgroup2_mount()
    name = docker_env.cli("inspect", "-f", "{{.Name}}", container_id).lstrip("/")
    expected = {"id": container_id, "name": name, "image": docker_env.image, "runtime": "docker"}
    for pid in pids:
        cgroup_id = cgroup_id_of(pid, mount)
        assert cgroup_id not in (0, cgroup_id_of(os.getpid(), mount))
        assert ContainerResolver()(cgroup_id) == expected  # via the cgroup tree
        assert ContainerResolver()(0, pid) == expected  # via /proc/<pid>/cgroup
    info = ContainerResolver().info(0, pids[0])
    assert (info.compose_project, info.compose_service) == ("mcpdemo", "metamcp")
    assert ContainerResolver()(cgroup_id_of(os.getpid(), mount), os.getpid()) is None
    assert ContainerResolver(engine=DockerEngine(base_url=NO_ENGINE))(0, pids[0]) == {
        "id": container_id,
        "name": container_id[:12],
        "image": None,
        "runtime": "docker",
    }


@pytest.mark.docker
def test_the_event_stream_announces_new_containers_and_forgets_removed_ones(docker_env) -> None:  # noqa: F811
    with ContainerResolver() as resolver:
        assert resolver.following.wait(30), "never connected to the Docker event stream"
        container_id = docker_env.run("sleep", "300")
        # known without a single lookup: only the event stream can have told it
        wait_for(lambda: any(c.id == container_id for c in resolver.known()), "the start event")
        cgroup_id = cgroup_id_of(docker_env.pid(container_id), cgroup2_mount())
        assert resolver(cgroup_id)["id"] == container_id
        docker_env.remove(container_id)
        wait_for(lambda: all(c.id != container_id for c in resolver.known()), "the destroy event")
        assert resolver(cgroup_id) is None
    assert not resolver.following.is_set()
